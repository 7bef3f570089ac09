"""Wire types. Requests decode strictly (no type coercion); unknown fields are ignored so that newer SDKs
and other frameworks' clients keep working (README "API" lists the ones we know of and what we do with them).
Optional fields accept ``null`` as "not given", as Cohere does."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Document = str | dict[str, Any]


class V1RerankRequest(msgspec.Struct, kw_only=True):
    """Cohere v1 (`/v1/rerank`)."""

    query: str
    documents: list[Document]
    model: str | None = None
    top_n: int | None = None
    rank_fields: list[str] | None = None
    return_documents: bool | None = None
    max_chunks_per_doc: int | None = None
    score_threshold: float | None = None  # Dify's: results scoring below it are left out
    instruction: str | None = None  # extension: overrides the deployment's default instruction
    cache: bool | None = None  # extension: false skips the score cache for this request


class JinaRerankRequest(V1RerankRequest, kw_only=True):
    """`/rerank`, as Jina's API and vLLM's own route take it: v1's fields, documents returned unless
    ``return_documents`` is false, and vLLM's ``max_tokens_per_doc`` (truncate instead of chunking)."""

    max_tokens_per_doc: int | None = None


class RelevantSpans(msgspec.Struct):
    mode: Literal["enabled", "disabled"]
    threshold: float | None = None
    max_spans: int | None = None


class V2RerankRequest(msgspec.Struct, kw_only=True):
    """Cohere v2 (`/v2/rerank`)."""

    model: str
    query: str
    documents: list[str]
    top_n: int | None = None
    max_tokens_per_doc: int | None = None
    priority: int | None = None  # accepted for compatibility; one shared queue serves all requests
    relevant_spans: RelevantSpans | None = None
    score_threshold: float | None = None
    instruction: str | None = None
    cache: bool | None = None


class ApiVersion(msgspec.Struct):
    version: str


class BilledUnits(msgspec.Struct):
    search_units: int


class Tokens(msgspec.Struct):
    input_tokens: int  # the prompts' tokens, as vLLM counts them (README "API")


class Meta(msgspec.Struct):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: Tokens


class Result(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # never null: absent unless asked for


class RerankResponse(msgspec.Struct):
    id: str
    results: list[Result]
    meta: Meta


class Usage(msgspec.Struct):
    """vLLM's and Jina's usage block: a reranker has no output, so both counts are the input tokens."""

    prompt_tokens: int
    total_tokens: int


class JinaRerankResponse(msgspec.Struct):
    """`/rerank`: Cohere's shape plus what Jina/vLLM-style readers look for (``model``, ``usage``)."""

    id: str
    model: str
    results: list[Result]
    usage: Usage
    meta: Meta


class ModelCard(msgspec.Struct):
    id: str
    object: str = "model"
    owned_by: str = "product-rerank"
    root: str | None = None


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"
