"""The ASGI layers in front of Litestar: the shape they share, and how they are stacked.

``stack`` gives every layer HTTP scopes only and sends every other scope (websocket; Litestar answers
lifespan itself before its handler) straight to the app, so no layer repeats that test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

HttpApp = Callable[[HTTPScope, Receive, Send], Awaitable[None]]
Layer = Callable[[HttpApp], HttpApp]


def stack(app: ASGIApp, layers: Sequence[Layer]) -> ASGIApp:
    """``app`` behind ``layers``, outermost first: a request meets them in the order listed."""
    http: HttpApp = app
    for layer in reversed(layers):
        http = layer(http)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            await http(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch
