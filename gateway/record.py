"""The per-request record: one per HTTP request, in a context variable, written by the modules on the request
path (keys, limits, shedding, cache, upstream) and read once at the end for the log line and the metrics.

gateway/requestlog.py opens and closes it around each request; everything else only calls
``current_record()``, which is None outside a request (a unit test, the lifespan).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, fields

from litestar.types import HTTPScope

from gateway.observe.trace import TraceContext, parse_traceparent

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# What the log line names a request whose path matched no route (a bounded label for metrics, too).
UNMATCHED = "unmatched"


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    trace_id: str | None = None  # from the caller's W3C traceparent, if it sent a valid one
    route: str = UNMATCHED
    key_id: str | None = None
    model: str | None = None  # the model entry that answered (its name, whichever alias was asked for)
    status: int = 0
    duration_ms: float = 0.0
    upstream_ms: float = 0.0
    documents: int | None = None
    top_n: int | None = None
    chunks: int | None = None
    search_units: int | None = None
    input_tokens: int | None = None  # meta.tokens.input_tokens of the answer
    tokens_by_model: dict[str, int] | None = None  # the same, per model that scored (a cascade has two)
    limit: str | None = None  # the rate-limit decision: admitted, limited:<kind>, fail_open, unlimited
    priority: int | None = None  # Cohere v2's priority, when the request gave one
    queue_ms: float | None = None  # time waiting for capacity to vLLM (gateway/shedding.py)
    shed: str | None = None  # refused for overload: queue_full, queue_timeout, evicted
    refunded: bool | None = None  # the admission's charge was given back (vLLM failed, the load was shed)
    # Pairs (chunks) by where their score came from: a cache tier, another request's call, our own vLLM call.
    cache_hits: int | None = None
    cache_shared: int | None = None
    cache_misses: int | None = None
    upstream_error: str | None = None  # why the vLLM call failed: a kind of rerank_upstream_failures_total
    upstream_model: str | None = None  # whose vLLM that was
    error: str | None = None  # the ErrorKind of the answer (gateway/errors.py)
    # Not logged: headers every response to this request carries (the rate-limit state), and the trace
    # context to forward to vLLM.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    trace: TraceContext | None = None


LOGGED = tuple(f.name for f in fields(RequestRecord) if f.name not in {"response_headers", "trace"})
_record: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)


def current_record() -> RequestRecord | None:
    return _record.get()


def request_id() -> str:
    """The current request's id; a fresh one outside a request."""
    record = _record.get()
    return record.request_id if record else new_request_id()


def new_request_id() -> str:
    """128 random bits as 32 hex digits, like uuid4().hex without building a UUID object."""
    return os.urandom(16).hex()


def begin(scope: HTTPScope) -> tuple[RequestRecord, Token[RequestRecord | None]]:
    """The record of a request starting now, made current: the caller's X-Request-ID when it is safe to log
    and echo (else a fresh one), and its trace context. ``end`` takes the token back."""
    request_id = traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and request_id is None:
            candidate = value.decode("latin-1")
            request_id = candidate if _REQUEST_ID_RE.fullmatch(candidate) else ""
        elif name == b"traceparent" and traceparent is None:
            traceparent = value.decode("latin-1")
        elif name == b"tracestate" and tracestate is None:
            tracestate = value.decode("latin-1")
    record = RequestRecord(request_id=request_id or new_request_id(), method=scope["method"])
    if traceparent is not None:
        record.trace = parse_traceparent(traceparent, tracestate)
        record.trace_id = record.trace.trace_id if record.trace else None
    return record, _record.set(record)


def end(token: Token[RequestRecord | None]) -> None:
    _record.reset(token)
