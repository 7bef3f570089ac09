"""One canonical JSON log line per request, and the request id that ties a response to it.

A pure ASGI wrapper (not BaseHTTPMiddleware) so that it sees every response, 404s included, and so that
the per-request record it puts in a context variable is visible to handlers and the upstream client.
Never logged: query text, document text, instructions, API keys or the Authorization header.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, fields

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from gateway.observe.trace import TraceContext, parse_traceparent

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_HEADER = "x-request-id"
# What the log line names a request whose path matched no route (a bounded label for metrics, too).
UNMATCHED = "unmatched"


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    trace_id: str | None = None  # from the caller's W3C traceparent, if it sent a valid one
    route: str = UNMATCHED
    key_id: str | None = None
    status: int = 0
    duration_ms: float = 0.0
    upstream_ms: float = 0.0
    documents: int | None = None
    top_n: int | None = None
    chunks: int | None = None
    search_units: int | None = None
    input_tokens: int | None = None  # meta.tokens.input_tokens of the answer
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
    error: str | None = None
    # Not logged: headers every response to this request carries (the rate-limit state), and the trace
    # context to forward to vLLM.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    trace: TraceContext | None = None


_LOGGED = tuple(f.name for f in fields(RequestRecord) if f.name not in {"response_headers", "trace"})
_record: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)


def current_record() -> RequestRecord | None:
    return _record.get()


def _new_record(scope: HTTPScope) -> RequestRecord:
    """The record of a request starting now: the caller's X-Request-ID when it is safe to log and echo (else a
    fresh one), and its trace context."""
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
    return record


def new_request_id() -> str:
    """128 random bits as 32 hex digits, like uuid4().hex without building a UUID object."""
    return os.urandom(16).hex()


def server_timing(record: RequestRecord, elapsed_ms: float, *, with_cache: bool) -> bytes:
    """``Server-Timing`` so far: the gateway's own time, vLLM's, and where pair scores came from."""
    upstream = record.upstream_ms
    timing = f"gateway;dur={max(elapsed_ms - upstream, 0.0):.3f}"
    if upstream > 0:
        timing += f", upstream;dur={upstream:.3f}"
    if with_cache and record.cache_misses is not None:
        timing += f", cache-hit;desc={record.cache_hits or 0}"
        timing += f", cache-coalesced;desc={record.cache_shared or 0}, cache-miss;desc={record.cache_misses}"
    return timing.encode()


class RequestLog:
    """Wraps the app: a record per request, shared with handlers through a context variable; at the end its
    log line and (``observe``) its metrics. Every answer carries X-Request-ID and Server-Timing.

    ``cache_timing`` says whether Server-Timing may count score-cache hits: only when the cache is per key,
    so that a caller learns nothing about what other keys asked.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger: structlog.typing.FilteringBoundLogger,
        observe: Callable[[RequestRecord], None] | None = None,
        cache_timing: bool = False,
    ) -> None:
        self._app = app
        self._logger = logger
        self._observe = observe
        self._cache_timing = cache_timing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        record = _new_record(scope)
        token = _record.set(record)
        echoed = (REQUEST_ID_HEADER.encode(), record.request_id.encode())
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.lower().encode(), value.encode())
                    for name, value in record.response_headers
                    if name.lower().encode() not in present  # an error response may carry them already
                ]
                elapsed_ms = (time.perf_counter() - started) * 1000
                timing = (b"server-timing", server_timing(record, elapsed_ms, with_cache=self._cache_timing))
                message["headers"] = [*message.get("headers", []), *extra, echoed, timing]
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            try:
                record.duration_ms = (time.perf_counter() - started) * 1000
                record.route = scope.get("path_template") or UNMATCHED
                if record.status == 0:  # the app raised before answering; the server will send a 500
                    record.status = 500
                line = {name: value for name in _LOGGED if (value := getattr(record, name)) is not None}
                line["duration_ms"] = round(record.duration_ms, 2)
                line["upstream_ms"] = round(record.upstream_ms, 2)
                if record.queue_ms is not None:
                    line["queue_ms"] = round(record.queue_ms, 2)
                # Synchronous on purpose: one short write, no executor hop, not lost to a cancelled task.
                level = logging.WARNING if record.status >= 500 else logging.INFO
                self._logger.log(level, "request", **line)
                if self._observe is not None:
                    self._observe(record)
            finally:
                _record.reset(token)


_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # Tracebacks as plain text, for stdlib records too: never a rich traceback that prints local
    # variables (an ASGI scope holds the Authorization header).
    structlog.processors.format_exc_info,
]


_STDLIB_EXTRAS = ("worker", "pid", "exit_code", "lived_s", "respawn_in_s", "crash_loop")


def _renderer(json: bool) -> structlog.typing.Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)


def stdlib_formatter(json: bool = True) -> logging.Formatter:
    """Renders stdlib records (granian, httpx, litestar) exactly like our own lines.

    Also named by the server's logging dictConfig (``"()": "gateway.requestlog.stdlib_formatter"``).
    """
    return structlog.stdlib.ProcessorFormatter(
        # Only the fields gateway.workers passes: other libraries' extras could carry anything.
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder(allow=_STDLIB_EXTRAS)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(json)],
    )


def server_log_config(*, level: str, json: bool) -> dict[str, object]:
    """dictConfig for the ASGI server's own loggers, so its start/stop lines share our format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "gateway.requestlog.stdlib_formatter", "json": json}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "_granian": {"handlers": ["stdout"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
            "gateway.workers": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        },
    }


def configure_logging(*, level: str, json: bool) -> None:
    """structlog for our lines; the stdlib root logger routed through the same renderer."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*_SHARED, _renderer(json)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(stdlib_formatter(json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # httpx logs every request URL at INFO; our canonical line already covers upstream calls.
    logging.getLogger("httpx").setLevel(logging.WARNING)
