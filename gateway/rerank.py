"""Request semantics shared by the rerank routes: validate, render, fit, score (one model, or a cascade's
two), order."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from gateway.errors import ApiError, invalid
from gateway.fusion import FusionPlan, order_of
from gateway.keys import ApiKey
from gateway.limits import KeyLimits, Limiter
from gateway.models import Cascade, Model, Models, Scorer
from gateway.record import current_record
from gateway.settings import Settings
from gateway.upstream import Scores

DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere's billing unit: one query against up to 100 documents (chunks)
# Object documents are echoed back (return_documents) and rendered as JSON (rank_fields): a bounded depth
# keeps both well inside the interpreter's recursion limit, whatever the stack already holds.
MAX_DOCUMENT_DEPTH = 32
KEYS_REMEMBERED = 10_000  # resolved limits kept per key object


@dataclass(frozen=True, slots=True)
class Ranking:
    order: list[int]  # document indices, best first, top_n and score_threshold applied
    scores: list[float]  # per original document (a cascade's: the second model's for the ones it scored)
    search_units: int
    input_tokens: int  # every prompt scored for the request (all chunks, all documents), as vLLM counts
    tokens_by_model: dict[str, int]  # input_tokens by the model that scored them
    fused: list[float] | None = None  # per original document, when fusion ordered them (gateway/fusion.py)
    scored_by: list[str] | None = None  # a cascade's: per original document, the model whose score it has


@dataclass(frozen=True, slots=True)
class _Fitted:
    """A request's query and instruction as one model reads them, and the room left for a document."""

    scorer: Scorer
    query: str
    instruction: str
    room: int


@dataclass(frozen=True, slots=True)
class _Stage:
    """One model's scores for some of a request's documents: per document, its best chunk's."""

    scores: list[float]
    tokens: int


class Reranker:
    def __init__(self, settings: Settings, models: Models, limiter: Limiter) -> None:
        self._settings = settings
        self._models = models
        self._limiter = limiter
        # Resolved limits per key object (holding the key, so its id cannot be reused by another).
        self._limits: dict[int, tuple[ApiKey, KeyLimits]] = {}
        # Tokenizing long documents is CPU work: at most this many requests do it at once, so a burst of
        # huge requests queues here instead of starving the event loop and every other request.
        self._tokenizer_threads = anyio.CapacityLimiter(settings.tokenizer_threads)

    def check_common(self, model: str | None, query: str, documents: int, top_n: int | None) -> Model:
        """The checks every rerank route makes before looking at documents one by one; the model named."""
        found = self._models.resolve(model)
        record = current_record()
        if record is not None:
            record.model = found.name
        self.check_query(query)
        self.check_documents(documents)
        self.check_positive("top_n", top_n)
        return found

    def cascade_k(self, model: Model, requested: int | None) -> int | None:
        """The request's ``cascade_top_k``, checked: for a cascade only, within its bounds (None: the
        cascade's own ``top_k``, which ``rank`` applies)."""
        if not isinstance(model, Cascade):
            if requested is not None:
                raise invalid(f"cascade_top_k applies to a cascade; model '{model.name}' is not one")
            return None
        if requested is not None and not 1 <= requested <= model.max_top_k:
            raise invalid(f"cascade_top_k must be between 1 and {model.max_top_k} for '{model.name}'")
        return requested

    def instruction(self, requested: str | None) -> str:
        if requested is None:
            return self._settings.default_instruction
        if not requested.strip():
            raise invalid("instruction must not be empty when given")
        limit = self._settings.max_instruction_chars
        if len(requested) > limit:
            raise invalid(f"instruction is {len(requested)} characters; the limit is {limit}")
        return requested

    def check_query(self, query: str) -> None:
        if not query.strip():
            raise invalid("query must not be empty")
        if len(query) > self._settings.max_query_chars:
            raise invalid(f"query is {len(query)} characters; the limit is {self._settings.max_query_chars}")

    def check_documents(self, count: int) -> None:
        if count == 0:
            raise invalid("documents must not be empty")
        if count > self._settings.max_documents:
            raise invalid(f"too many documents: {count}; the limit is {self._settings.max_documents}")

    @staticmethod
    def check_positive(name: str, value: int | None) -> None:
        if value is not None and value < 1:
            raise invalid(f"{name} must be at least 1")

    def chunks_per_doc(self, requested: int | None) -> int:
        self.check_positive("max_chunks_per_doc", requested)
        ceiling = self._settings.max_chunks_per_doc
        if requested is not None and requested > ceiling:
            raise invalid(f"max_chunks_per_doc may be at most {ceiling}")
        return requested or ceiling

    def render_v1(
        self, documents: Sequence[str | dict[str, Any]], rank_fields: list[str] | None
    ) -> list[str]:
        """Cohere v1 documents as model text: strings as they are; objects by ``rank_fields`` or ``text``."""
        if rank_fields is not None and not rank_fields:
            raise invalid("rank_fields must not be empty when given")
        texts: list[str] = []
        for i, doc in enumerate(documents):
            if isinstance(doc, str):
                texts.append(doc)
                continue
            if _deeper_than(doc, MAX_DOCUMENT_DEPTH):
                raise invalid(
                    f"documents[{i}] nests objects and arrays deeper than {MAX_DOCUMENT_DEPTH} levels"
                )
            if rank_fields:
                missing = [field for field in rank_fields if field not in doc]
                if missing:
                    raise invalid(f"documents[{i}] has no field '{missing[0]}' named in rank_fields")
                texts.append("\n".join(f"{field}: {_field_text(doc[field])}" for field in rank_fields))
            elif isinstance(doc.get("text"), str):
                texts.append(doc["text"])
            else:
                raise invalid(f"documents[{i}] has no 'text' string; add one or name fields in rank_fields")
        return texts

    def _check_lengths(self, texts: list[str]) -> None:
        limit = self._settings.max_document_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise invalid(f"documents[{i}] is {len(text)} characters; the limit is {limit}")

    def _fit(self, scorer: Scorer, query: str, instruction: str) -> _Fitted:
        """The query and instruction as ``scorer`` reads them: control-token strings broken up
        (gateway/neutralise.py), so budgets, chunks and cache keys all see that text; checked against its
        budget. Lengths are checked on what the client sent."""
        neutral = scorer.neutraliser
        query, instruction = neutral(query), neutral(instruction)
        query_tokens = scorer.budget.query_tokens(query)
        if query_tokens > self._settings.max_query_tokens:
            raise invalid(f"query is {query_tokens} tokens; the limit is {self._settings.max_query_tokens}")
        room = scorer.budget.document_budget(instruction, query, query_tokens=query_tokens)
        if room < 1:
            raise invalid("the instruction and query leave no room for documents in the model's context")
        return _Fitted(scorer, query, instruction, room)

    async def _pieces(
        self, fitted: _Fitted, texts: list[str], chunk_tokens: int, max_chunks: int
    ) -> list[list[str]]:
        """Each document as the model reads it, in chunks that fit (one, truncated, for ``max_chunks=1``)."""
        neutral, budget = fitted.scorer.neutraliser, fitted.scorer.budget
        texts = [neutral(text) for text in texts]
        size = min(chunk_tokens, fitted.room)
        if budget.fits(texts, chunk_tokens=size):  # the usual case: short products, nothing to cut
            return [[text] for text in texts]
        return await anyio.to_thread.run_sync(
            lambda: budget.split(texts, chunk_tokens=size, max_chunks=max_chunks),
            limiter=self._tokenizer_threads,
        )

    async def rank(
        self,
        *,
        key: ApiKey,
        model: Model,
        query: str,
        texts: list[str],
        instruction: str,
        top_n: int | None,
        chunk_tokens: int,
        max_chunks: int,
        use_cache: bool | None = None,
        score_threshold: float | None = None,
        fusion: FusionPlan | None = None,
        priority: int = 0,
        cascade_k: int | None = None,
    ) -> Ranking:
        """Score every document (best chunk wins) and order them; ``max_chunks=1`` truncates instead. A
        cascade scores them all with its first model and the best ``cascade_k`` (default: its ``top_k``)
        again with its second.

        Every request is billed and rate-limited in full, cached pairs included: ``billed_units`` and
        ``input_tokens`` depend on the request alone, so they are predictable and tell no one what the cache
        holds (README). A cascade is one request: billed once, by its documents, like any model.
        """
        self._check_lengths(texts)
        scorers: tuple[Scorer, ...]
        if isinstance(model, Scorer):
            cascade, k, scorers = None, len(texts), (model,)
        else:
            cascade, k = model, cascade_k or model.top_k
            # K of N or more: the first stage would pass every document on, so the second scores them alone
            scorers = (model.second,) if k >= len(texts) else (model.first, model.second)
        fitted = [self._fit(scorer, query, instruction) for scorer in scorers]  # every 400 before admission
        limits = self._key_limits(key)
        self._limiter.precheck(key.key_id, limits)  # a key out of requests costs us no tokenizing
        pieces = await self._pieces(fitted[0], texts, chunk_tokens, max_chunks)
        chunks = sum(len(doc_pieces) for doc_pieces in pieces)
        search_units = max(1, math.ceil(chunks / DOCUMENTS_PER_SEARCH_UNIT))
        record = current_record()
        if record is not None:
            record.documents, record.top_n = len(texts), top_n
            record.chunks, record.search_units = chunks, search_units
        use = key.cache and use_cache is not False
        admission = await self._limiter.admit(key.key_id, limits, search_units)
        tokens: dict[str, int] = {}
        try:
            first = await self._stage(fitted[0], pieces, key.key_id, use, priority)
            scores = first.scores
            tokens[scorers[0].name] = first.tokens
            if record is not None:  # each stage's tokens as it finishes: a failed second stage's first counts
                record.tokens_by_model = tokens
            fused = fusion.blend(scores) if fusion is not None else None
            order = order_of(scores, fused)
            scored_by = None if cascade is None else [scorers[0].name] * len(texts)
            if cascade is not None and len(scorers) == 2:
                top = order[:k]
                second = await self._stage(
                    fitted[1],
                    await self._pieces(fitted[1], [texts[i] for i in top], chunk_tokens, max_chunks),
                    key.key_id,
                    use,
                    priority,
                )
                tokens[scorers[1].name] = second.tokens
                scores, fused, order, scored_by = _cascaded(
                    cascade,
                    top,
                    second.scores,
                    first=scores,
                    first_fused=fused,
                    first_order=order,
                    fusion=fusion,
                )
        except ApiError as exc:
            if exc.kind.refunds:
                await self._limiter.refund(admission)
            raise
        finally:
            await self._limiter.release(admission)
        total = sum(tokens.values())
        if record is not None:
            record.input_tokens = total
        order = _cut(order, scores, top_n, score_threshold)
        return Ranking(order, scores, search_units, total, tokens, fused, scored_by)

    def _key_limits(self, key: ApiKey) -> KeyLimits:
        known = self._limits.get(id(key))
        if known is not None and known[0] is key:  # the same key object: its limits cannot have changed
            return known[1]
        limits = key.effective_limits(self._settings.default_limits)
        if len(self._limits) >= KEYS_REMEMBERED:  # reloaded keys are new objects: forget the old ones
            self._limits.clear()
        self._limits[id(key)] = (key, limits)
        return limits

    async def _stage(
        self, fitted: _Fitted, pieces: list[list[str]], key_id: str, use: bool, priority: int
    ) -> _Stage:
        """One model's scores for these documents' pieces: from its cache, or from its vLLM."""
        scorer, query, instruction = fitted.scorer, fitted.query, fitted.instruction
        flat = [piece for doc_pieces in pieces for piece in doc_pieces]
        edges = scorer.neutraliser.edges if scorer.neutraliser.has_edges else None  # never for Qwen3's
        if edges is not None:  # a template where a piece's edge could complete a token with the prompt
            flat, query, instruction = [edges(piece) for piece in flat], edges(query), edges(instruction)
        budget = scorer.budget
        scored = await scorer.cache.scores(
            key_id=key_id,
            instruction=instruction,
            query=query,
            texts=flat,
            fetch=lambda missing: self._vllm_scores(scorer, query, missing, instruction, priority),
            count=lambda missing: anyio.to_thread.run_sync(
                lambda: budget.prompt_tokens(instruction, query, missing), limiter=self._tokenizer_threads
            ),
            use=use,
        )
        record = current_record()
        if record is not None:  # a cascade's two stages add up
            record.cache_hits = (record.cache_hits or 0) + scored.hits
            record.cache_shared = (record.cache_shared or 0) + scored.shared
            record.cache_misses = (record.cache_misses or 0) + scored.misses
        scores: list[float] = []
        position = 0
        for doc_pieces in pieces:
            scores.append(max(scored.scores[position : position + len(doc_pieces)]))
            position += len(doc_pieces)
        return _Stage(scores, scored.tokens)

    @staticmethod
    async def _vllm_scores(
        scorer: Scorer, query: str, texts: list[str], instruction: str, priority: int
    ) -> Scores:
        """vLLM's scores for the pairs the cache lacks, within the model's bound on pairs in flight."""
        if scorer.shedder is None:
            return await scorer.upstream.score(query, texts, instruction, priority)
        async with scorer.shedder.slot(len(texts), priority):
            return await scorer.upstream.score(query, texts, instruction, priority)


def _cascaded(
    cascade: Cascade,
    top: list[int],
    second: list[float],
    *,
    first: list[float],
    first_fused: list[float] | None,
    first_order: list[int],
    fusion: FusionPlan | None,
) -> tuple[list[float], list[float] | None, list[int], list[str]]:
    """A cascade's answer: the ``top`` documents in the second model's order (as it would answer for them
    alone), then the rest in the first model's; each with the score (and blend) of the model that placed
    it."""
    fused_top = fusion.only(top).blend(second) if fusion is not None else None
    scores, fused = list(first), None if first_fused is None else list(first_fused)
    scored_by = [cascade.first.name] * len(first)
    for position, i in enumerate(top):
        scores[i], scored_by[i] = second[position], cascade.second.name
        if fused is not None and fused_top is not None:
            fused[i] = fused_top[position]
    order = [top[position] for position in order_of(second, fused_top)] + first_order[len(top) :]
    return scores, fused, order, scored_by


def _cut(
    order: list[int], scores: list[float], top_n: int | None, score_threshold: float | None
) -> list[int]:
    """``order`` cut to at most ``top_n``, without any whose score is below ``score_threshold`` (a
    cascade's results each by the score of the model that placed them)."""
    order = order[: top_n or len(order)]
    if score_threshold is None:
        return order
    return [i for i in order if scores[i] >= score_threshold]


def _deeper_than(value: object, limit: int) -> bool:
    """Whether JSON ``value`` nests dicts and lists more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _field_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
