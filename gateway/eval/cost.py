"""What each endpoint's answers cost: the prompt tokens each model scored for them, over the run and per
search, and an estimate of the GPU work they stand for.

Tokens are what the answers' ``meta.tokens`` say (this gateway names the model of each in ``by_model``; it
counts a score-cache hit like a scored prompt, so they are the work a search asks for, some of which a cache
may spare the GPU). GPU work is an estimate, and only that: a forward pass costs about twice the model's
parameters in FLOPs per token (attention adds little at a product's few hundred tokens), so a model's work
is its tokens times its parameter count, and a cascade's the sum over its two models. Weighted, because raw
tokens mislead: a cascade scores more tokens than its large model alone (every candidate by the small model,
the best K again by the large one) for a fraction of the work. Parameter counts come from
``--model-params`` or the model's name ("qwen3-reranker-0.6b", "Qwen3-Reranker-4B"); an endpoint with a
model of unknown size, or tokens no model is named for, gets no estimate rather than a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gateway.eval.runner import Collected

# A size in a model's name, as a separate part of it: "-0.6b", "-4B", "_8b-instruct"; not "qwen3" or "m3".
SIZE_RE = re.compile(r"(?:^|[-_/])(\d+(?:\.\d+)?)b(?=$|[-_/.:])", re.IGNORECASE)


def params_from_name(model: str) -> float | None:
    """Billions of parameters the name states; None when it states none, or two different ones."""
    sizes = {float(size) for size in SIZE_RE.findall(model)}
    return sizes.pop() if len(sizes) == 1 else None


@dataclass(frozen=True, slots=True)
class ModelTokens:
    model: str  # as the answers name it (the served name, not an alias)
    tokens: int  # over the answers that reported tokens
    per_search: float
    params_b: float | None  # billions of parameters: --model-params, else the name; None: unknown


@dataclass(frozen=True, slots=True)
class Cost:
    """One endpoint's tokens over a run; ``share`` is relative to the most expensive endpoint's work."""

    run: str
    answers: int
    reported: int  # answers whose meta.tokens was known: the totals are theirs
    stored_before_tokens: int  # answers from store lines older than token counts (unknown tokens)
    input_tokens: int
    models: tuple[ModelTokens, ...]  # in the order the answers name them: a cascade's first model first
    unattributed: int  # tokens no model is named for (an endpoint reporting input_tokens alone)
    # per_search times params_b, summed (billion-parameter tokens); None: unknown
    work_per_search: float | None
    share: float | None = None

    @property
    def per_search(self) -> float | None:
        return self.input_tokens / self.reported if self.reported else None

    def unknown_sizes(self) -> list[str]:
        return [m.model for m in self.models if m.params_b is None]

    def as_json(self) -> dict[str, object]:
        return {
            "answers": self.answers,
            "reported": self.reported,
            "stored_before_tokens": self.stored_before_tokens,
            "input_tokens": self.input_tokens,
            "per_search": self.per_search,
            "by_model": {
                m.model: {"tokens": m.tokens, "per_search": m.per_search, "params_b": m.params_b}
                for m in self.models
            },
            "unattributed": self.unattributed,
            "estimated_work_per_search": self.work_per_search,
            "share_of_most": self.share,
        }


def tally(collected: Sequence[Collected], params: Mapping[str, float]) -> list[Cost]:
    """Each endpoint's cost, its share against the most expensive of them (whose share is 1)."""
    costs = [_cost(c, params) for c in collected]
    most = max((c.work_per_search for c in costs if c.work_per_search), default=None)
    if most is None:
        return costs
    return [c if c.work_per_search is None else replace(c, share=c.work_per_search / most) for c in costs]


def most_expensive(costs: Sequence[Cost]) -> Cost | None:
    """The endpoint the shares are relative to; None when no endpoint's work could be estimated."""
    return max((c for c in costs if c.work_per_search), key=lambda c: c.work_per_search or 0.0, default=None)


def _cost(collected: Collected, params: Mapping[str, float]) -> Cost:
    reported = [r.tokens for r in collected.answers.values() if r.tokens is not None]
    by_model: dict[str, int] = {}
    for tokens in reported:
        for model, n in tokens.by_model.items():
            by_model[model] = by_model.get(model, 0) + n
    searches = max(1, len(reported))
    models = tuple(
        ModelTokens(model, n, n / searches, params[model] if model in params else params_from_name(model))
        for model, n in by_model.items()
    )
    unattributed = sum(tokens.unattributed for tokens in reported)
    estimable = bool(models) and not unattributed and all(m.params_b is not None for m in models)
    work = sum(m.per_search * (m.params_b or 0.0) for m in models) if estimable else None
    return Cost(
        run=collected.endpoint.name,
        answers=len(collected.answers),
        reported=len(reported),
        stored_before_tokens=collected.stored_before_tokens,
        input_tokens=sum(tokens.input_tokens for tokens in reported),
        models=models,
        unattributed=unattributed,
        work_per_search=work,
    )
