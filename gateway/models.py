"""The models a deployment serves, by every name a request may use: each model with what the gateway keeps
per model (its vLLM, token budget, control-token neutraliser, score cache, shedding bound), and cascades
over two of them (gateway/rerank.py scores those). A single-model deployment is a fleet of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.cache import ScoreCache, SharedTier, model_identity
from gateway.errors import ApiError, ErrorKind
from gateway.neutralise import Neutraliser
from gateway.schemas import CascadeCard, ModelCard, ModelList
from gateway.settings import Settings
from gateway.shedding import Shedder
from gateway.tokens import PromptBudget
from gateway.upstream import Upstream
from model_setup.fleet import Fleet
from model_setup.serving import Precision


@dataclass(frozen=True, slots=True)
class Scorer:
    """One model behind one vLLM."""

    name: str
    precision: Precision
    upstream: Upstream
    budget: PromptBudget
    neutraliser: Neutraliser
    cache: ScoreCache
    shedder: Shedder | None
    own: bool  # this pod runs its vLLM (a remote model's runs in another pod)


@dataclass(frozen=True, slots=True)
class Cascade:
    """``first`` scores every candidate; the best ``top_k`` of its order go to ``second`` (README, docs)."""

    name: str
    first: Scorer
    second: Scorer
    top_k: int
    max_top_k: int


Model = Scorer | Cascade


class Models:
    def __init__(self, entries: Sequence[Model], names: Mapping[str, str], default: str) -> None:
        by_name = {entry.name: entry for entry in entries}
        self._by_name = {name: by_name[entry] for name, entry in names.items()}
        self._default = by_name[default]
        self.names = tuple(names)  # in the order given: build() puts the default's name first
        self.scorers = tuple(entry for entry in entries if isinstance(entry, Scorer))
        self._cards = ModelList(data=[_card(name, self._by_name[name]) for name in names])

    @property
    def default(self) -> Model:
        return self._default

    @property
    def cards(self) -> ModelList:
        return self._cards

    def resolve(self, requested: str | None) -> Model:
        """The model a request names (a name or an alias); the default when it names none."""
        if requested is None:
            return self._default
        found = self._by_name.get(requested)
        if found is None:
            raise ApiError(
                ErrorKind.NOT_FOUND, f"model '{requested}' not found; available: {', '.join(self.names)}"
            )
        return found

    async def aclose(self) -> None:
        """Their connections to vLLM; the caches' shared tier is one for all, the app closes it."""
        for scorer in self.scorers:
            await scorer.upstream.aclose()


def build(settings: Settings, served: Fleet, shared: SharedTier | None) -> Models:
    """Every model of ``served`` with its own parts; the cache's bytes and vLLM's pair bound are per model."""
    scorers: dict[str, Scorer] = {}
    count = len(served.members)
    own = {member.name for member in settings.own_vllms()}
    for member in served.members:
        precision = settings.precision(member)
        budget = PromptBudget.from_model_dir(
            member.model_dir, max_model_len=settings.max_model_len_of(member)
        )
        bound = (
            settings.max_pairs_in_flight if member.max_pairs_in_flight is None else member.max_pairs_in_flight
        )
        scorers[member.name] = Scorer(
            name=member.name,
            precision=precision,
            upstream=Upstream(settings, url=member.url, model=member.name),
            budget=budget,
            neutraliser=Neutraliser.for_prompt(budget.tokenizer),
            # The configured bytes are the deployment's: each model gets its share.
            cache=ScoreCache(
                identity=model_identity(member.model_dir, member.name, precision),
                max_bytes=settings.score_cache_max_bytes // count,
                scope=settings.score_cache_scope,
                shared=shared,
            ),
            shedder=_shedder(settings, bound),
            own=member.name in own,
        )
    entries: list[Model] = list(scorers.values())
    entries += [
        Cascade(
            cascade.name, scorers[cascade.first], scorers[cascade.second], cascade.top_k, cascade.max_top_k
        )
        for cascade in served.cascades
    ]
    # The deployment's aliases (Cohere's model names, by default) name its default model.
    names = {served.default: served.default}
    names |= dict.fromkeys(settings.model_aliases, served.default)
    names |= served.names()
    return Models(entries, names, served.default)


def _shedder(settings: Settings, max_pairs_in_flight: int) -> Shedder | None:
    """The bound on one model's pairs in flight to its vLLM: the gateway's total, shared by its workers."""
    if max_pairs_in_flight == 0:
        return None
    return Shedder(
        max_pairs=max(1, max_pairs_in_flight // settings.workers),
        max_queued=settings.queue_max_requests,
        wait_s=settings.queue_timeout_s,
    )


def _card(name: str, entry: Model) -> ModelCard:
    if isinstance(entry, Cascade):
        stages = CascadeCard(entry.first.name, entry.second.name, entry.top_k, entry.max_top_k)
        return ModelCard(id=name, root=entry.name, cascade=stages)
    return ModelCard(
        id=name,
        root=entry.name,
        dtype=entry.precision.dtype,
        quantization=entry.precision.quantization or None,
    )
