"""One canonical JSON log line per request, and the headers that tie an answer to it (X-Request-ID,
Server-Timing).

A pure ASGI layer (not BaseHTTPMiddleware), outermost but for the in-flight count, so that it sees every
answer, 404s included, and the record it opens (gateway/record.py) is current for everything inside it.
Never logged: query text, document text, instructions, API keys or the Authorization header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import structlog
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Send

from gateway import record as records
from gateway.record import LOGGED, UNMATCHED, RequestRecord

REQUEST_ID_HEADER = b"x-request-id"


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
    """A record per request; at the end its log line and (``observe``) its metrics. Every answer carries
    X-Request-ID and Server-Timing.

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

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        record, token = records.begin(scope)
        echoed = (REQUEST_ID_HEADER, record.request_id.encode())
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
                self._write(record, scope, started)
            finally:
                records.end(token)

    def _write(self, record: RequestRecord, scope: HTTPScope, started: float) -> None:
        record.duration_ms = (time.perf_counter() - started) * 1000
        record.route = scope.get("path_template") or UNMATCHED  # set by routing
        if record.status == 0:  # the app raised before answering; the server will send a 500
            record.status = 500
        line = {name: value for name in LOGGED if (value := getattr(record, name)) is not None}
        line["duration_ms"] = round(record.duration_ms, 2)
        line["upstream_ms"] = round(record.upstream_ms, 2)
        if record.queue_ms is not None:
            line["queue_ms"] = round(record.queue_ms, 2)
        # Synchronous on purpose: one short write, no executor hop, not lost to a cancelled task.
        level = logging.WARNING if record.status >= 500 else logging.INFO
        self._logger.log(level, "request", **line)
        if self._observe is not None:
            self._observe(record)
