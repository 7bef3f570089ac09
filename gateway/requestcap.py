"""The per-worker cap on requests in progress: granian has no cap on connections (its ``backpressure``
setting did not limit them when measured, docs/slow-clients.md), so past ``max_in_progress`` one more
request is answered 503 with ``Retry-After`` and ``Connection: close`` at once, before anything is read."""

from __future__ import annotations

from litestar.types import HTTPScope, Receive, Send

from gateway.errors import ApiError, ErrorKind, send_error
from gateway.layers import HttpApp


class RequestCap:
    def __init__(self, app: HttpApp, *, max_in_progress: int) -> None:
        self._app = app
        self._max = max_in_progress
        self._in_progress = 0

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        if self._in_progress >= self._max:
            busy = ApiError(
                ErrorKind.OVERLOADED,
                "the gateway has too many requests in progress; retry shortly",
                headers={"Retry-After": "1", "Connection": "close"},
            )
            await send_error(send, busy)
            return
        self._in_progress += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._in_progress -= 1
