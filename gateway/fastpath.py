"""The rerank routes straight from ASGI, in front of Litestar, and the body reader both paths use.

A 5-document rerank through Litestar's per-request machinery (router, middleware stack, signature model,
Request and Response objects) spent about 40% of the gateway's CPU outside our code (a py-spy profile under
wrk, docs/benchmarks.md). The rerank routes are exact paths taking one method and a JSON body, so this layer
matches them first and calls the same functions the Litestar handlers call (gateway/routes.py); everything
else (other methods and paths, 404 and 405 answers, the route table itself) stays Litestar's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import cast

from litestar.types import HTTPRequestEvent, HTTPScope, Receive, Send

from gateway.errors import ApiError, ErrorKind, render, send_json
from gateway.layers import HttpApp

ReadBody = Callable[[], Awaitable[bytes]]
# (authorization header, content-type header, body reader) -> the 200 answer's JSON
Route = Callable[[str, str, ReadBody], Awaitable[bytes]]


class FastRoutes:
    def __init__(self, app: HttpApp, *, routes: Mapping[str, Route], max_body: int) -> None:
        self._app = app
        self._routes = routes
        self._max_body = max_body

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"])
        if route is None or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        scope["path_template"] = scope["path"]  # what the log line names the route, as Litestar would
        headers: dict[str, str] | None = None
        try:
            status, body = 200, await route(*route_arguments(scope["headers"], receive, self._max_body))
        except Exception as exc:  # every failure becomes an answer from the error table
            status, headers, body = render(exc)
        await send_json(send, status, body, headers)


def route_arguments(
    headers: Iterable[tuple[bytes, bytes]], receive: Receive, max_body: int
) -> tuple[str, str, ReadBody]:
    """What a rerank route needs of a request: its two headers, and a reader of the body that stops at
    ``max_body`` (413) and turns a hang-up into a 499."""
    authorization = content_type = ""
    declared: int | None = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():
            declared = int(value)

    async def read_body() -> bytes:
        if declared is not None and declared > max_body:
            raise ApiError(ErrorKind.PAYLOAD_TOO_LARGE, "request body is too large")
        chunks: list[bytes] = []
        size = 0
        while True:
            received = await receive()
            if received["type"] == "http.disconnect":
                raise ApiError(ErrorKind.CLIENT_CLOSED, "client closed the request")
            message = cast("HTTPRequestEvent", received)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise ApiError(ErrorKind.PAYLOAD_TOO_LARGE, "request body is too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    return authorization, content_type, read_body
