"""A deadline for the request body: what a slow client may hold of a worker, beyond what granian bounds.

granian (hyper) bounds the request line and headers (``header_read_timeout``, which also closes idle
keep-alive and silent connections; gateway/__main__.py) but has no deadline for the body (and no cap on
connections: gateway/requestcap.py; docs/slow-clients.md). So every ``receive()`` until the body is complete
is bounded by one deadline from the request's start; past it the answer is 408 with ``Connection: close``
and the server closes the connection (a client sending one byte of a 1,000-byte body no longer holds a
connection and a handler for ever). One sweeper per worker cancels the reads past their deadline, rather
than a timer per read: on every request's path, a timer cost more than the rest of this guard, and a body
deadline needs no better than half a second.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from litestar.types import HTTPScope, Receive, ReceiveMessage, Send

from gateway.errors import ApiError, ErrorKind
from gateway.layers import HttpApp

SWEEP_S = 0.5  # how often reads past their deadline are looked for (at most a quarter of the deadline)


class BodyDeadline:
    def __init__(self, app: HttpApp, *, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s
        self._reading: dict[asyncio.Task[Any], float] = {}  # tasks waiting for body bytes: their deadline
        self._overdue: set[asyncio.Task[Any]] = set()  # of those, the ones the sweeper cancelled
        self._sweeper: asyncio.Task[None] | None = None

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        await self._app(scope, self._bounded(receive), send)

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
                    headers={"Connection": "close"},
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
