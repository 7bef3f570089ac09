"""Request semantics shared by the Cohere v1/v2 routes: validate, render, fit, score, order."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from gateway.cache import ScoreCache, Scored
from gateway.errors import ApiError, ErrorKind, invalid
from gateway.fusion import FusionPlan, order_of
from gateway.keys import ApiKey
from gateway.limits import KeyLimits, Limiter
from gateway.neutralise import Neutraliser
from gateway.record import current_record
from gateway.settings import Settings
from gateway.shedding import Shedder
from gateway.tokens import PromptBudget
from gateway.upstream import Scores, Upstream

DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere's billing unit: one query against up to 100 documents (chunks)
# Object documents are echoed back (return_documents) and rendered as JSON (rank_fields): a bounded depth
# keeps both well inside the interpreter's recursion limit, whatever the stack already holds.
MAX_DOCUMENT_DEPTH = 32
KEYS_REMEMBERED = 10_000  # resolved limits kept per key object


@dataclass(frozen=True, slots=True)
class Ranking:
    order: list[int]  # document indices, best first, top_n and score_threshold applied
    scores: list[float]  # per original document
    search_units: int
    input_tokens: int  # every prompt scored for the request (all chunks, all documents), as vLLM counts
    fused: list[float] | None = None  # per original document, when fusion ordered them (gateway/fusion.py)


class Reranker:
    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        budget: PromptBudget,
        limiter: Limiter,
        cache: ScoreCache,
        *,
        neutraliser: Neutraliser,
        shedder: Shedder | None = None,
    ) -> None:
        self._shedder = shedder
        self._settings = settings
        self._neutral = neutraliser
        self._upstream = upstream
        self._budget = budget
        self._limiter = limiter
        self._cache = cache
        # Resolved limits per key object (holding the key, so its id cannot be reused by another).
        self._limits: dict[int, tuple[ApiKey, KeyLimits]] = {}
        # Tokenizing long documents is CPU work: at most this many requests do it at once, so a burst of
        # huge requests queues here instead of starving the event loop and every other request.
        self._tokenizer_threads = anyio.CapacityLimiter(settings.tokenizer_threads)

    def check_common(self, model: str | None, query: str, documents: int, top_n: int | None) -> None:
        """The checks every rerank route makes before looking at documents one by one."""
        self.check_model(model)
        self.check_query(query)
        self.check_documents(documents)
        self.check_positive("top_n", top_n)

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self._settings.model_names:
            available = ", ".join(self._settings.model_names)
            raise ApiError(ErrorKind.NOT_FOUND, f"model '{model}' not found; available: {available}")

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

    def _model_text(self, query: str, instruction: str, texts: list[str]) -> tuple[str, str, list[str]]:
        """The text the model reads: control-token strings in it are broken up (gateway/neutralise.py), so
        budgets, chunks and cache keys all see that text. Lengths are checked on what the client sent."""
        limit = self._settings.max_document_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise invalid(f"documents[{i}] is {len(text)} characters; the limit is {limit}")
        neutral = self._neutral
        return neutral(query), neutral(instruction), [neutral(text) for text in texts]

    async def rank(
        self,
        *,
        key: ApiKey,
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
    ) -> Ranking:
        """Score every document (best chunk wins) and order them; ``max_chunks=1`` truncates instead.

        Every request is billed and rate-limited in full, cached pairs included: ``billed_units`` and
        ``input_tokens`` depend on the request alone, so they are predictable and tell no one what the cache
        holds (README).
        """
        query, instruction, texts = self._model_text(query, instruction, texts)
        neutral = self._neutral
        edges = neutral.edges if neutral.has_edges else None  # never for Qwen3's template
        query_tokens = self._budget.query_tokens(query)
        if query_tokens > self._settings.max_query_tokens:
            raise invalid(f"query is {query_tokens} tokens; the limit is {self._settings.max_query_tokens}")
        room = self._budget.document_budget(instruction, query, query_tokens=query_tokens)
        if room < 1:
            raise invalid("the instruction and query leave no room for documents in the model's context")
        limits = self._key_limits(key)
        self._limiter.precheck(key.key_id, limits)  # a key out of requests costs us no tokenizing
        size = min(chunk_tokens, room)
        if self._budget.fits(texts, chunk_tokens=size):  # the usual case: short products, nothing to cut
            pieces = [[text] for text in texts]
        else:
            pieces = await anyio.to_thread.run_sync(
                lambda: self._budget.split(texts, chunk_tokens=size, max_chunks=max_chunks),
                limiter=self._tokenizer_threads,
            )
        flat = [piece for doc_pieces in pieces for piece in doc_pieces]
        if edges is not None:  # a template where a piece's edge could complete a token with the prompt
            flat, query, instruction = [edges(piece) for piece in flat], edges(query), edges(instruction)
        search_units = max(1, math.ceil(len(flat) / DOCUMENTS_PER_SEARCH_UNIT))
        record = current_record()
        if record is not None:
            record.documents, record.top_n = len(texts), top_n
            record.chunks, record.search_units = len(flat), search_units

        scored = await self._scored(
            key=key,
            limits=limits,
            search_units=search_units,
            instruction=instruction,
            query=query,
            texts=flat,
            use_cache=use_cache,
            priority=priority,
        )
        if record is not None:
            record.cache_hits, record.cache_shared = scored.hits, scored.shared
            record.cache_misses, record.input_tokens = scored.misses, scored.tokens
        chunk_scores = scored.scores
        scores: list[float] = []
        position = 0
        for doc_pieces in pieces:
            scores.append(max(chunk_scores[position : position + len(doc_pieces)]))
            position += len(doc_pieces)
        fused = fusion.blend(scores) if fusion is not None else None
        order = _order(scores, fused, top_n, score_threshold)
        return Ranking(order, scores, search_units, scored.tokens, fused)

    def _key_limits(self, key: ApiKey) -> KeyLimits:
        known = self._limits.get(id(key))
        if known is not None and known[0] is key:  # the same key object: its limits cannot have changed
            return known[1]
        limits = key.effective_limits(self._settings.default_limits)
        if len(self._limits) >= KEYS_REMEMBERED:  # reloaded keys are new objects: forget the old ones
            self._limits.clear()
        self._limits[id(key)] = (key, limits)
        return limits

    async def _scored(
        self,
        *,
        key: ApiKey,
        limits: KeyLimits,
        search_units: int,
        instruction: str,
        query: str,
        texts: list[str],
        use_cache: bool | None,
        priority: int,
    ) -> Scored:
        """Admission, then scores from the cache or vLLM. Admission comes after tokenizing because search
        units need the exact chunk count; a failure of vLLM's (5xx) gives the charge back."""
        admission = await self._limiter.admit(key.key_id, limits, search_units)
        try:
            return await self._cache.scores(
                key_id=key.key_id,
                instruction=instruction,
                query=query,
                texts=texts,
                fetch=lambda missing: self._vllm_scores(query, missing, instruction, priority),
                count=lambda missing: anyio.to_thread.run_sync(
                    lambda: self._budget.prompt_tokens(instruction, query, missing),
                    limiter=self._tokenizer_threads,
                ),
                use=key.cache and use_cache is not False,
            )
        except ApiError as exc:
            if exc.kind.refunds:
                await self._limiter.refund(admission)
            raise
        finally:
            await self._limiter.release(admission)

    async def _vllm_scores(self, query: str, texts: list[str], instruction: str, priority: int) -> Scores:
        """vLLM's scores for the pairs the cache lacks, within the bound on pairs in flight (shedding.py)."""
        if self._shedder is None:
            return await self._upstream.score(query, texts, instruction, priority)
        async with self._shedder.slot(len(texts), priority):
            return await self._upstream.score(query, texts, instruction, priority)


def _order(
    scores: list[float], fused: list[float] | None, top_n: int | None, score_threshold: float | None
) -> list[int]:
    """Indices best first (by the fusion blend when there is one, else the score; ties by position), at
    most ``top_n``, none whose model score is below ``score_threshold``."""
    order = order_of(scores, fused)[: top_n or len(scores)]
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
