"""Wire types. Requests decode strictly (no type coercion); unknown fields are ignored so that newer SDKs
keep working. Optional fields accept ``null`` as "not given", as Cohere does."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Document = str | dict[str, Any]


class FusionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Extension: blend the model's score with numeric document fields (gateway/fusion.py). Unknown
    fields are refused here, so a misspelt option is a 400 rather than a silently plain ranking."""

    fields: dict[str, float]  # field -> weight in [0, 1]; the weights add up to at most 1
    normalize: Literal["minmax", "none"] = "minmax"
    missing: float | None = None  # value for a document without the field (or null); unset: 400


class V1RerankRequest(msgspec.Struct, kw_only=True):
    """Cohere v1 (`/v1/rerank`, also served at `/rerank`)."""

    query: str
    documents: list[Document]
    model: str | None = None
    top_n: int | None = None
    rank_fields: list[str] | None = None
    return_documents: bool | None = None
    max_chunks_per_doc: int | None = None
    instruction: str | None = None  # extension: overrides the deployment's default instruction
    cache: bool | None = None  # extension: false skips the score cache for this request
    fusion: FusionRequest | None = None  # extension: order by a blend with numeric document fields


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
    instruction: str | None = None
    cache: bool | None = None
    fusion: FusionRequest | None = None  # refused: v2 documents are strings, with no fields to blend


class ApiVersion(msgspec.Struct):
    version: str


class BilledUnits(msgspec.Struct):
    search_units: int


class Meta(msgspec.Struct):
    api_version: ApiVersion
    billed_units: BilledUnits


class Result(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # never null: absent unless asked for
    fused_score: float | msgspec.UnsetType = msgspec.UNSET  # extension: present when fusion ordered it


class RerankResponse(msgspec.Struct):
    id: str
    results: list[Result]
    meta: Meta


class ModelCard(msgspec.Struct):
    id: str
    object: str = "model"
    owned_by: str = "product-rerank"
    root: str | None = None


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"
