"""The rerank routes straight from ASGI, in front of Litestar.

A 5-document rerank through Litestar's per-request machinery (router, middleware stack, signature model,
Request and Response objects) spent about 40% of the gateway's CPU outside our code (a py-spy profile under
wrk, docs/benchmarks.md). The rerank routes are exact paths taking one method and a JSON body, so this layer
matches them first and calls the same functions the Litestar handlers call; everything else (other methods
and paths, 404 and 405 answers, the route table itself) stays Litestar's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)

from gateway.errors import ApiError, ErrorKind

ReadBody = Callable[[], Awaitable[bytes]]
# (authorization header, content-type header, body reader) -> the 200 answer's JSON
Route = Callable[[str, str, ReadBody], Awaitable[bytes]]
# The error table's answer for an exception: status, headers, JSON body
Render = Callable[[Exception], tuple[int, dict[str, str], bytes]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[str, Route], *, max_body: int, render: Render) -> None:
        self._app = app
        self._routes = routes
        self._max_body = max_body
        self._render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == ScopeType.HTTP else None
        if route is None or cast("HTTPScope", scope)["method"] != "POST":
            await self._app(scope, receive, send)
            return
        scope["path_template"] = scope["path"]  # what the log line names the route, as Litestar would
        authorization = content_type = ""
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared = int(value)

        async def read_body() -> bytes:
            if declared is not None and declared > self._max_body:
                raise ApiError(ErrorKind.PAYLOAD_TOO_LARGE, "request body is too large")
            return await self._read(receive)

        headers: dict[str, str] = {}
        try:
            status, body = 200, await route(authorization, content_type, read_body)
        except Exception as exc:  # every failure becomes an answer from the error table
            status, headers, body = self._render(exc)
        raw_headers = [
            *_JSON_HEADERS,
            (b"content-length", str(len(body)).encode()),
            *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
        ]
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": raw_headers,
        }
        await send(start)
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
        await send(end)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            received = await receive()
            if received["type"] == "http.disconnect":
                raise ApiError(ErrorKind.CLIENT_CLOSED, "client closed the request")
            message = cast("HTTPRequestEvent", received)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise ApiError(ErrorKind.PAYLOAD_TOO_LARGE, "request body is too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
