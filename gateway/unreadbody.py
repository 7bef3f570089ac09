"""An answer given before the request body was read (a wrong key, an unknown path, a wrong content type)
must leave the connection usable or say it will not be.

granian, left alone, closes such a keep-alive connection after the answer without saying so, and a client
that reuses it (Python's http.client, raw sockets, many load tools) gets a broken pipe on its next request.
So, when the answer starts before the body has been received:

- the rest of the body is read and discarded first, while it fits the body limit (what a valid request
  could have sent; the body deadline of gateway/bodydeadline.py bounds the time), and the connection stays
  open for the next request;
- a body declared larger than the limit, or one that goes past it, or runs out of time, is not waited for:
  the answer says ``Connection: close`` and the server closes after it (RFC 9112, 9.6).
"""

from __future__ import annotations

from litestar.types import HTTPRequestEvent, HTTPScope, Message, Receive, ReceiveMessage, Send

from gateway.errors import ApiError
from gateway.layers import HttpApp

CLOSE = (b"connection", b"close")


class UnreadBody:
    def __init__(self, app: HttpApp, *, max_body: int) -> None:
        self._app = app
        self._max_body = max_body

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        declared = _declared_length(scope)
        if declared == 0:  # nothing to read: the common GET and the empty POST
            await self._app(scope, receive, send)
            return
        received = 0
        complete = False

        async def tracked() -> ReceiveMessage:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                request: HTTPRequestEvent = message
                received += len(request.get("body", b""))
                complete = not request.get("more_body", False)
            else:  # the client went away: nothing more will come
                complete = True
            return message

        async def discarded() -> bool:
            """The rest of the body read and dropped; False when it is not worth waiting for."""
            if declared is not None and declared > self._max_body:
                return False
            try:
                while not complete and received <= self._max_body:
                    await tracked()
            except ApiError:  # the body deadline passed (gateway/bodydeadline.py)
                return False
            return complete and received <= self._max_body

        async def answered(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete and not await discarded():
                message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            await send(message)

        await self._app(scope, tracked, answered)


def _declared_length(scope: HTTPScope) -> int | None:
    """Content-Length when given, None for a chunked (or otherwise unsized) body."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
        if name == b"transfer-encoding":
            return None
    return 0
