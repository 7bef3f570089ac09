"""Requests in progress, so that shutdown closes the upstream and Redis clients only after the last one.

granian runs the lifespan shutdown once it stops accepting connections; a handler it already started may
still be waiting on vLLM, and closing the clients under it would turn a drained request into a 500.
"""

from __future__ import annotations

import asyncio

from litestar.types import HTTPScope, Receive, Send

from gateway.layers import HttpApp


class InFlight:
    """Counts HTTP requests from their first byte to their last, through the ASGI app it wraps."""

    def __init__(self) -> None:
        self._count = 0
        self._idle: asyncio.Event | None = None  # made in the serving loop, on first use

    def _event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if self._count == 0:
                self._idle.set()
        return self._idle

    @property
    def count(self) -> int:
        return self._count

    def layer(self, app: HttpApp) -> HttpApp:
        async def counted(scope: HTTPScope, receive: Receive, send: Send) -> None:
            self._count += 1
            self._event().clear()
            try:
                await app(scope, receive, send)
            finally:
                self._count -= 1
                if self._count == 0:
                    self._event().set()

        return counted

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is in progress; False if some still are after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._event().wait()
        except TimeoutError:
            return False
        return True
