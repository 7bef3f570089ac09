"""Wire types. Requests decode strictly (no type coercion); unknown fields are ignored so that newer SDKs
keep working. Optional fields accept ``null`` as "not given", as Cohere does.

The descriptions are the API reference: the OpenAPI document (gateway/apidoc) is generated from these types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Document = str | dict[str, Any]


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


Query = Annotated[str, _doc("The shopper's search query. Must not be blank.")]
Model = Annotated[
    str | None,
    _doc("The served model's name or an alias (GET /v1/models lists them); absent: the served model."),
]
TopN = Annotated[int | None, _doc("Return only the best N results (at least 1); absent: every document.")]
Instruction = Annotated[
    str | None,
    _doc(
        "Extension: the task instruction the model reads before query and document, replacing the "
        "deployment's default (written for product search). Must not be blank when given."
    ),
]
Cache = Annotated[bool | None, _doc("Extension: false skips the pair-score cache for this request.")]


class V1RerankRequest(msgspec.Struct, kw_only=True):
    """Cohere v1 (`/v1/rerank`, also served at `/rerank`)."""

    query: Query
    documents: Annotated[
        list[Document],
        _doc(
            "The products to rank: strings, or objects whose `text` field (or the fields named in "
            "`rank_fields`) the model reads. At least one; at most the deployment's limit (default 1000)."
        ),
    ]
    model: Model = None
    top_n: TopN = None
    rank_fields: Annotated[
        list[str] | None,
        _doc("Fields of object documents to rank on, rendered as `field: value` lines in this order."),
    ] = None
    return_documents: Annotated[
        bool | None, _doc("Also return each result's document, as sent (every field intact).")
    ] = None
    max_chunks_per_doc: Annotated[
        int | None,
        _doc("Long documents are split into chunks and score as their best chunk; at most this many (1-10)."),
    ] = None
    instruction: Instruction = None  # extension: overrides the deployment's default instruction
    cache: Cache = None  # extension: false skips the score cache for this request


class RelevantSpans(msgspec.Struct):
    mode: Literal["enabled", "disabled"]
    threshold: float | None = None
    max_spans: int | None = None


class V2RerankRequest(msgspec.Struct, kw_only=True):
    """Cohere v2 (`/v2/rerank`)."""

    model: Annotated[str, _doc("The served model's name or one of its aliases (GET /v1/models lists them).")]
    query: Query
    documents: Annotated[
        list[str], _doc("The products to rank, as text. At least one; at most the deployment's limit.")
    ]
    top_n: TopN = None
    max_tokens_per_doc: Annotated[
        int | None, _doc("Documents are truncated to this many tokens (default 4096, within the context).")
    ] = None
    priority: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None,
        _doc(
            "Lower is served sooner (0, the default, is the highest). Under overload requests wait for "
            "capacity in priority order, a request of better priority takes a worse one's place in a full "
            "queue, and vLLM schedules by it too."
        ),
    ] = None
    relevant_spans: Annotated[
        RelevantSpans | None, _doc("Only `disabled` is supported; `enabled` is a 400.")
    ] = None
    instruction: Instruction = None
    cache: Cache = None


class ApiVersion(msgspec.Struct):
    version: str


class BilledUnits(msgspec.Struct):
    search_units: Annotated[
        int, _doc("One per query against up to 100 documents (chunks), as Cohere bills; cache hits count.")
    ]


class Meta(msgspec.Struct):
    api_version: ApiVersion
    billed_units: BilledUnits


class Result(msgspec.Struct, omit_defaults=True):
    index: Annotated[int, _doc("Position of the document in the request's `documents`.")]
    relevance_score: Annotated[float, _doc("The model's relevance score, 0 to 1; higher is more relevant.")]
    document: Annotated[
        dict[str, Any] | msgspec.UnsetType,
        _doc('The document as sent (strings as `{"text": ...}`); only with `return_documents`.'),
    ] = msgspec.UNSET  # never null: absent unless asked for


class RerankResponse(msgspec.Struct):
    """Results best first; `id` is the request id (also in the X-Request-ID header and the gateway's log)."""

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
