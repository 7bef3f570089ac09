"""Wire types. Requests decode strictly (no type coercion); unknown fields are ignored so that newer SDKs
and other frameworks' clients keep working (README "API" lists the ones we know of and what we do with them).
Optional fields accept ``null`` as "not given", as Cohere does.

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
ScoreThreshold = Annotated[
    float | None, _doc("Leave out results whose `relevance_score` is below this (Dify sends it).")
]
Instruction = Annotated[
    str | None,
    _doc(
        "Extension: the task instruction the model reads before query and document, replacing the "
        "deployment's default (written for product search). Must not be blank when given."
    ),
]
Cache = Annotated[bool | None, _doc("Extension: false skips the pair-score cache for this request.")]
CascadeTopK = Annotated[
    int | None,
    _doc(
        "Extension, for a cascade model: how many of the first model's best candidates the second model "
        "re-scores (at least 1, at most the cascade's `max_top_k`); absent: the cascade's `top_k`."
    ),
]


class FusionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Extension: order by a blend of the model's score and numeric document fields (gateway/fusion.py):
    `(1 - sum of weights) * N(relevance_score) + sum(weight * N(field))`. Unknown fields here are a 400,
    so a misspelt option never ranks plainly in silence."""

    fields: Annotated[
        dict[str, float],
        _doc(
            "Numeric document field -> weight, each in [0, 1], adding up to at most 1 (the model's score "
            "gets the rest). Empty: no fusion (also turns an API key's default off)."
        ),
    ]
    normalize: Annotated[
        Literal["minmax", "none"],
        _doc("`minmax` scales every list to [0, 1] over the request's documents; `none` uses the values."),
    ] = "minmax"
    missing: Annotated[
        float | None,
        _doc("Value for a document without the field (or null); absent: such a document is a 400."),
    ] = None


Fusion = Annotated[
    FusionRequest | None,
    _doc(
        "Extension: blend the model's score with numeric fields of object documents (popularity, margin); "
        "results come in the blended order with the blend as `fused_score`."
    ),
]


class V1RerankRequest(msgspec.Struct, kw_only=True):
    """Cohere v1 (`/v1/rerank`)."""

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
    score_threshold: ScoreThreshold = None
    instruction: Instruction = None  # extension: overrides the deployment's default instruction
    cache: Cache = None  # extension: false skips the score cache for this request
    fusion: Fusion = None  # extension: order by a blend with numeric document fields
    cascade_top_k: CascadeTopK = None  # extension: a cascade's K for this request


class JinaRerankRequest(V1RerankRequest, kw_only=True):
    """`/rerank`, as Jina's API and vLLM's own route take it: v1's fields, documents returned unless
    `return_documents` is false, and vLLM's `max_tokens_per_doc` (truncate instead of chunking)."""

    max_tokens_per_doc: Annotated[
        int | None, _doc("Truncate each document to this many tokens instead of chunking it (vLLM's).")
    ] = None


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
    score_threshold: ScoreThreshold = None
    instruction: Instruction = None
    cache: Cache = None
    cascade_top_k: CascadeTopK = None
    fusion: Annotated[
        FusionRequest | None, _doc("Refused (a 400) unless `fields` is empty: v2 documents are strings.")
    ] = None


class ApiVersion(msgspec.Struct):
    version: str


class BilledUnits(msgspec.Struct):
    search_units: Annotated[
        int, _doc("One per query against up to 100 documents (chunks), as Cohere bills; cache hits count.")
    ]


class Tokens(msgspec.Struct):
    input_tokens: Annotated[
        int, _doc("Tokens of every prompt scored for this request, as vLLM counts them; cache hits count.")
    ]
    by_model: Annotated[
        dict[str, int],
        _doc(
            "Extension: `input_tokens` per model that scored, by model name: one entry, or a cascade's two "
            "(the first model's over every candidate, the second's over the ones it re-scored)."
        ),
    ]


class Meta(msgspec.Struct):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: Tokens


class Result(msgspec.Struct, omit_defaults=True):
    index: Annotated[int, _doc("Position of the document in the request's `documents`.")]
    relevance_score: Annotated[float, _doc("The model's relevance score, 0 to 1; higher is more relevant.")]
    document: Annotated[
        dict[str, Any] | msgspec.UnsetType,
        _doc('The document as sent (strings as `{"text": ...}`); only with `return_documents`.'),
    ] = msgspec.UNSET  # never null: absent unless asked for
    fused_score: Annotated[
        float | msgspec.UnsetType,
        _doc("Extension: the blend that ordered the results; only when the request asked for `fusion`."),
    ] = msgspec.UNSET
    model: Annotated[
        str | msgspec.UnsetType,
        _doc("Extension, from a cascade: the model whose score this is (the second model for its top K)."),
    ] = msgspec.UNSET


class RerankResponse(msgspec.Struct):
    """Results best first; `id` is the request id (also in the X-Request-ID header and the gateway's log)."""

    id: str
    results: list[Result]
    meta: Meta


class Usage(msgspec.Struct):
    """vLLM's and Jina's usage block: a reranker has no output, so both counts are the input tokens."""

    prompt_tokens: int
    total_tokens: int


class JinaRerankResponse(msgspec.Struct):
    """`/rerank`: Cohere's shape plus what Jina/vLLM-style readers look for (`model`, `usage`)."""

    id: str
    model: str
    results: list[Result]
    usage: Usage
    meta: Meta


class CascadeCard(msgspec.Struct):
    """A cascade's two stages: ``first`` scores every candidate, ``second`` the best ``top_k``."""

    first: str
    second: str
    top_k: int
    max_top_k: int


class ModelCard(msgspec.Struct):
    """One name requests may use; ``root`` is the model entry it names (aliases share their entry's root),
    served in vLLM's ``dtype`` and ``quantization`` (vLLM's online scheme, or the checkpoint's own; null for
    none), or a ``cascade`` of two models (null for a model)."""

    id: str
    object: str = "model"
    owned_by: str = "product-rerank"
    root: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    cascade: CascadeCard | None = None


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"
