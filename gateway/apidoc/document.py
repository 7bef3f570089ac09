"""OpenAPI 3.1 for every route, generated from the msgspec types the handlers decode and encode.

The handlers read their bodies with msgspec rather than through Litestar's signature model (the fast path,
gateway/fastpath.py), so Litestar's own generator would see no request types; msgspec's JSON Schema
(2020-12, OpenAPI 3.1's dialect) of the very same types is the source instead. Statuses come from the
error table, so a new error kind cannot go undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.errors import ErrorBody, ErrorKind
from gateway.schemas import (
    JinaRerankRequest,
    JinaRerankResponse,
    ModelList,
    RerankResponse,
    V1RerankRequest,
    V2RerankRequest,
)

REF = "#/components/schemas/{name}"

# Which errors each kind of route can answer with (the table's kinds, by route behaviour).
_KEYED = (ErrorKind.NO_API_KEY, ErrorKind.INVALID_API_KEY, ErrorKind.INTERNAL)
_RERANK = (
    *_KEYED,
    ErrorKind.INVALID_REQUEST,
    ErrorKind.NOT_FOUND,
    ErrorKind.PAYLOAD_TOO_LARGE,
    ErrorKind.URI_TOO_LONG,
    ErrorKind.HEADERS_TOO_LARGE,
    ErrorKind.REQUEST_TIMEOUT,
    ErrorKind.UNSUPPORTED_MEDIA_TYPE,
    ErrorKind.RATE_LIMITED,
    ErrorKind.CLIENT_CLOSED,
    ErrorKind.UPSTREAM_ERROR,
    ErrorKind.UPSTREAM_UNAVAILABLE,
    ErrorKind.UPSTREAM_TIMEOUT,
    ErrorKind.OVERLOADED,
)
_STATUS_TEXT = {
    400: "The request is invalid; the message says which field and why.",
    401: "No API key, or not a valid one (`Authorization: Bearer <key>`).",
    404: "The named model is not served here.",
    408: "The body did not arrive within the body deadline (15 s by default); the connection closes.",
    413: "The body is larger than the gateway accepts (16 MiB by default).",
    414: "The request target (path and query) is over 8 KiB.",
    415: "The body is not `application/json`, or its `Content-Encoding` is neither identity nor gzip.",
    429: "A rate limit of this key was reached; retry after `Retry-After` seconds.",
    431: "The request headers are over 16 KiB (over 64 KiB, the HTTP server answers 431 with no body).",
    499: "The client closed the connection before the answer (seen in logs, not by the client).",
    500: "An unexpected error; quote the `id` when reporting it.",
    502: "The model server failed or sent an unusable answer.",
    503: "The model server (or the rate-limit store) is unavailable, or the gateway is overloaded and shed "
    "the request (by `priority` when given); retry after `Retry-After`.",
    504: "The model server did not answer in time.",
}
_HEADERS: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request id (yours if you sent a safe one); also the body's `id` and in our logs.",
        "schema": {"type": "string"},
    },
    "Server-Timing": {
        "description": "Where the time went: `gateway` and `upstream` (vLLM) in ms; score-cache pairs "
        "(`cache-hit`, `cache-coalesced`, `cache-miss`) when the cache is per key.",
        "schema": {"type": "string"},
    },
}
_RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
_RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {"description": "The key's quotas (IETF draft-11).", "schema": {"type": "string"}},
    "RateLimit": {"description": "What is left now (IETF draft-11).", "schema": {"type": "string"}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _errors(kinds: tuple[ErrorKind, ...]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in sorted({kind.status for kind in kinds}):
        headers = dict(_HEADERS)
        if status in (429, 503):
            headers["Retry-After"] = _RETRY_AFTER
        if status == 429:
            headers.update(_RATE_LIMIT_HEADERS)
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "headers": headers,
            "content": _json(_ref("ErrorBody")),
        }
    return responses


_PRODUCTS = ["Lenovo ThinkPad X1 Carbon 14-inch laptop", "USB-C charger 65 W", "Laptop sleeve, 14 inch"]
_EXAMPLES = {
    "V1RerankRequest": {
        "query": "lightweight laptop for travel",
        "documents": [{"title": title, "text": title} for title in _PRODUCTS],
        "rank_fields": ["title"],
        "top_n": 2,
        "return_documents": True,
    },
    "V2RerankRequest": {"query": "lightweight laptop for travel", "documents": _PRODUCTS, "top_n": 2},
    "JinaRerankRequest": {"query": "lightweight laptop for travel", "documents": _PRODUCTS, "top_n": 2},
}


def _rerank(
    summary: str, description: str, request: str, model: str, response: str = "RerankResponse"
) -> dict[str, Any]:
    example = {**_EXAMPLES[request], "model": model}
    return {
        "post": {
            "summary": summary,
            "description": description,
            "operationId": summary.lower().replace(" ", "_").replace("(", "").replace(")", ""),
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request), "example": example}},
            },
            "responses": {
                "200": {
                    "description": "The documents' indices and scores, best first.",
                    "headers": {**_HEADERS, **_RATE_LIMIT_HEADERS},
                    "content": _json(_ref(response)),
                },
                **_errors(_RERANK),
            },
        }
    }


def _status(value: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"status": {"const": value}},
        "required": ["status"],
    }


@dataclass(frozen=True, slots=True)
class Limits:
    """What this deployment accepts (from its settings), written into the request schemas so that clients
    and fuzzers see the bounds the route functions enforce."""

    model_names: tuple[str, ...]
    max_documents: int
    max_query_chars: int
    max_instruction_chars: int
    max_chunks_per_doc: int


def _constrain(schema: dict[str, Any], **constraints: Any) -> None:
    """Add ``constraints`` to a property's schema, or to its non-null branch when it is optional."""
    branches = schema.get("anyOf", [schema])
    for branch in branches:
        if branch.get("type") != "null":
            branch.update(constraints)


def _limits(schemas: dict[str, Any], limits: Limits) -> None:
    not_blank = {"minLength": 1, "pattern": r"\S"}
    for request in ("V1RerankRequest", "JinaRerankRequest", "V2RerankRequest"):
        fields = schemas[request]["properties"]
        _constrain(fields["model"], enum=list(limits.model_names))
        _constrain(fields["query"], maxLength=limits.max_query_chars, **not_blank)
        _constrain(fields["instruction"], maxLength=limits.max_instruction_chars, **not_blank)
        _constrain(fields["documents"], minItems=1, maxItems=limits.max_documents)
        _constrain(fields["top_n"], minimum=1)
    for request in ("V1RerankRequest", "JinaRerankRequest"):
        fields = schemas[request]["properties"]
        _constrain(fields["max_chunks_per_doc"], minimum=1, maximum=limits.max_chunks_per_doc)
        _constrain(fields["rank_fields"], minItems=1)
    for request in ("JinaRerankRequest", "V2RerankRequest"):
        _constrain(schemas[request]["properties"]["max_tokens_per_doc"], minimum=1)
    weights = schemas["FusionRequest"]["properties"]["fields"]["additionalProperties"]
    weights.update(minimum=0, maximum=1)  # each in [0, 1], as gateway/fusion.py checks


def openapi(*, title: str, version: str, limits: Limits) -> dict[str, Any]:
    """The document for a deployment with these ``limits``."""
    _, schemas = msgspec.json.schema_components(
        [
            V1RerankRequest,
            JinaRerankRequest,
            V2RerankRequest,
            RerankResponse,
            JinaRerankResponse,
            ModelList,
            ErrorBody,
        ],
        ref_template=REF,
    )
    schemas["ErrorBody"]["description"] = "Cohere's error shape: `id` is the request id, `message` says why."
    _limits(schemas, limits)
    names = ", ".join(f"`{name}`" for name in limits.model_names)
    plain = {"200": {"description": "OK", "headers": _HEADERS}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Product-search reranking with Cohere's rerank API (v1 and v2), so the Cohere SDK "
            f"and the frameworks built on it work unchanged. Models: {names}.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: `rk_...`."}
            },
        },
        "paths": {
            "/v1/rerank": _rerank(
                "Rerank (Cohere v1)",
                "Documents as strings or objects (`rank_fields`), long ones chunked; Cohere's v1 contract.",
                "V1RerankRequest",
                limits.model_names[0],
            ),
            "/rerank": _rerank(
                "Rerank (Jina and vLLM style)",
                "The v1 contract at the path Jina- and vLLM-style clients call, answered with `model` and "
                "`usage` too, and documents unless `return_documents` is false.",
                "JinaRerankRequest",
                limits.model_names[0],
                "JinaRerankResponse",
            ),
            "/v2/rerank": _rerank(
                "Rerank (Cohere v2)",
                "Documents as strings, truncated to `max_tokens_per_doc`; Cohere's v2 contract.",
                "V2RerankRequest",
                limits.model_names[0],
            ),
            "/v1/models": {
                "get": {
                    "summary": "List models",
                    "operationId": "list_models",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {
                            "description": "The names requests may use.",
                            "headers": _HEADERS,
                            "content": _json(_ref("ModelList")),
                        },
                        **_errors(_KEYED),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "description": "The gateway process answers (says nothing about the model).",
                    "operationId": "health",
                    "responses": {"200": {**plain["200"], "content": _json(_status("ok"))}},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness",
                    "description": "The model server answers: send traffic.",
                    "operationId": "ready",
                    "responses": {
                        "200": {**plain["200"], "content": _json(_status("ready"))},
                        **_errors((ErrorKind.UPSTREAM_UNAVAILABLE,)),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": {**plain["200"], "content": _json({"type": "object"})}},
                }
            },
            "/docs": {
                "get": {
                    "summary": "This document as a page",
                    "operationId": "docs",
                    "responses": {
                        "200": {**plain["200"], "content": {"text/html": {"schema": {"type": "string"}}}}
                    },
                }
            },
        },
    }
