"""Slow clients: what one connection may hold of a worker, beyond what granian bounds itself.

granian (hyper) bounds the request line and headers (``header_read_timeout``, which also closes idle
keep-alive and silent connections; gateway/__main__.py) but has no deadline for the body and no cap on
connections (its ``backpressure`` setting did not limit them when measured, docs/slow-clients.md). So:

- every ``receive()`` until the body is complete is bounded by one deadline from the request's start; past
  it the answer is 408 with ``Connection: close`` and the server closes the connection (a client sending one
  byte of a 1,000-byte body no longer holds a connection and a handler for ever);
- at most ``max_in_progress`` requests are in progress in a worker; one more is answered 503 with
  ``Retry-After`` and ``Connection: close`` at once, before anything is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from gateway.errors import ApiError, ErrorKind

Render = Callable[[Exception], tuple[int, dict[str, str], bytes]]
CLOSE = {"Connection": "close"}


class SlowClients:
    def __init__(self, app: ASGIApp, *, body_timeout_s: float, max_in_progress: int, render: Render) -> None:
        self._app = app
        self._timeout_s = body_timeout_s
        self._max = max_in_progress
        self._render = render
        self._in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        if self._in_progress >= self._max:
            busy = ApiError(
                ErrorKind.OVERLOADED,
                "the gateway has too many requests in progress; retry shortly",
                headers={"Retry-After": "1", **CLOSE},
            )
            await self._answer(send, busy)
            return
        self._in_progress += 1
        try:
            await self._app(scope, self._bounded(receive), send)
        finally:
            self._in_progress -= 1

    def _bounded(self, receive: Receive) -> Receive:
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        complete = False

        async def bounded() -> ReceiveMessage:
            nonlocal complete
            if complete:  # after the body, receive() only reports a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    ErrorKind.REQUEST_TIMEOUT,
                    f"the request body did not arrive within {self._timeout_s:g} s",
                    headers=dict(CLOSE),
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return bounded

    async def _answer(self, send: Send, error: ApiError) -> None:
        status, headers, body = self._render(error)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body, "more_body": False})
