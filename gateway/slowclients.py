"""Slow clients: what one connection may hold of a worker, beyond what granian bounds itself.

granian (hyper) bounds the request line and headers (``header_read_timeout``, which also closes idle
keep-alive and silent connections; gateway/__main__.py) but has no deadline for the body and no cap on
connections (its ``backpressure`` setting did not limit them when measured, docs/slow-clients.md). So:

- every ``receive()`` until the body is complete is bounded by one deadline from the request's start; past
  it the answer is 408 with ``Connection: close`` and the server closes the connection (a client sending one
  byte of a 1,000-byte body no longer holds a connection and a handler for ever). One sweeper per worker
  cancels the reads past their deadline, rather than a timer per read: on every request's path, a timer
  cost more than the rest of this guard, and a body deadline needs no better than half a second;
- at most ``max_in_progress`` requests are in progress in a worker; one more is answered 503 with
  ``Retry-After`` and ``Connection: close`` at once, before anything is read.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from gateway.errors import ApiError, ErrorKind
from gateway.framing import Render, answer

CLOSE = {"Connection": "close"}
SWEEP_S = 0.5  # how often reads past their deadline are looked for (at most a quarter of the deadline)


class SlowClients:
    def __init__(self, app: ASGIApp, *, body_timeout_s: float, max_in_progress: int, render: Render) -> None:
        self._app = app
        self._timeout_s = body_timeout_s
        self._max = max_in_progress
        self._render = render
        self._in_progress = 0
        self._reading: dict[asyncio.Task[Any], float] = {}  # tasks waiting for body bytes: their deadline
        self._overdue: set[asyncio.Task[Any]] = set()  # of those, the ones the sweeper cancelled
        self._sweeper: asyncio.Task[None] | None = None

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
            await answer(send, self._render(busy))
            return
        self._in_progress += 1
        try:
            await self._app(scope, self._bounded(receive), send)
        finally:
            self._in_progress -= 1

    def _bounded(self, receive: Receive) -> Receive:
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        complete = False
        reading, overdue = self._reading, self._overdue

        async def bounded() -> ReceiveMessage:
            nonlocal complete
            if complete:  # after the body, receive() only reports a disconnect: no deadline
                return await receive()
            task = asyncio.current_task()
            assert task is not None  # ASGI apps run in tasks
            reading[task] = deadline
            if self._sweeper is None:  # in a context of its own, not this request's
                sweep = self._sweep(min(SWEEP_S, self._timeout_s / 4))
                self._sweeper = asyncio.create_task(sweep, context=contextvars.Context())
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task not in overdue:  # cancelled for another reason: not ours to answer
                    raise
                task.uncancel()
                raise ApiError(
                    ErrorKind.REQUEST_TIMEOUT,
                    f"the request body did not arrive within {self._timeout_s:g} s",
                    headers=dict(CLOSE),
                ) from None
            finally:
                del reading[task]
                overdue.discard(task)
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return bounded

    async def _sweep(self, every_s: float) -> None:
        """Cancel the body reads past their deadline (``bounded`` turns that into the 408); ends when no read
        is left, so an idle worker has no timer, and the next read starts it again."""
        loop = asyncio.get_running_loop()
        while self._reading:
            await asyncio.sleep(every_s)
            now = loop.time()
            for task, deadline in list(self._reading.items()):
                if deadline <= now and task not in self._overdue:
                    self._overdue.add(task)
                    task.cancel()
        self._sweeper = None
