"""HTTP framing the server leaves to us: Host, the request target and head sizes, Content-Encoding.

granian (hyper) reads the request line and headers into a buffer of ``HEAD_BUFFER_BYTES``
(gateway/__main__.py) and answers a head larger than that itself: 431 with an empty body, then closes.
Everything inside that bound reaches this layer, which answers in the Cohere error shape:

- HTTP/1.1 without exactly one non-empty ``Host`` is a 400 (RFC 9112, 3.2); HTTP/1.0 may omit it;
- a request target (path and query) over ``MAX_TARGET_BYTES`` is a 414, a head (all header lines) over
  ``MAX_HEAD_BYTES`` a 431. The largest heads real clients send here are a few hundred bytes (the Cohere
  SDKs, LangChain through them) to a few KiB (a browser on /docs with cookies): docs/http.md;
- a body in ``Content-Encoding: gzip`` is decompressed as it arrives, bounded by the body limit after
  decompression (a gzip bomb is a 413, found after at most ``max_body`` + one chunk of output); any other
  coding is a 415 naming the two the gateway takes.
"""

from __future__ import annotations

import zlib

from litestar.types import HTTPRequestEvent, HTTPScope, Receive, ReceiveMessage, Send

from gateway.errors import ApiError, ErrorKind, invalid, send_error
from gateway.layers import HttpApp

HEAD_BUFFER_BYTES = 64 * 1024  # granian's read buffer: beyond it, granian's own empty-bodied 431
MAX_HEAD_BYTES = 16 * 1024  # header lines, summed as name + value + 4 (": " and CRLF)
MAX_TARGET_BYTES = 8 * 1024  # path and query string
IDENTITY = b"identity"
GZIP = b"gzip"


class Framing:
    def __init__(self, app: HttpApp, *, max_body: int) -> None:
        self._app = app
        self._max_body = max_body

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        try:
            coding = self._check(scope)
        except ApiError as error:
            await send_error(send, error)
            return
        if coding == GZIP:
            receive = _gunzip(receive, self._max_body)
        await self._app(scope, receive, send)

    @staticmethod
    def _check(scope: HTTPScope) -> bytes:
        """The body's content coding, once the request's framing is acceptable; raises the error otherwise."""
        hosts: list[bytes] = []
        head = 0
        codings: list[bytes] = []
        for name, value in scope["headers"]:
            head += len(name) + len(value) + 4
            if name == b"host":
                hosts.append(value)
            elif name == b"content-encoding":
                codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
        # granian puts in an empty Host when a request has none; for an http URI that is no authority either.
        if scope.get("http_version") == "1.1" and (len(hosts) != 1 or not hosts[0]):
            raise invalid("an HTTP/1.1 request needs exactly one Host header, not empty")
        target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if target > MAX_TARGET_BYTES:
            raise ApiError(ErrorKind.URI_TOO_LONG, f"the request target is over {MAX_TARGET_BYTES} bytes")
        if head > MAX_HEAD_BYTES:
            raise ApiError(ErrorKind.HEADERS_TOO_LARGE, f"the headers are over {MAX_HEAD_BYTES} bytes")
        codings = [c for c in codings if c != IDENTITY]
        if not codings:
            return IDENTITY
        if codings != [GZIP]:
            raise ApiError(
                ErrorKind.UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Encoding: send the body as is (identity) or in gzip",
            )
        return GZIP


def _gunzip(receive: Receive, max_body: int) -> Receive:
    """The body decompressed as it arrives; over ``max_body`` decompressed bytes is a 413."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
    size = 0

    async def decoded() -> ReceiveMessage:
        nonlocal size
        message = await receive()
        if message["type"] != "http.request":
            return message
        request: HTTPRequestEvent = message
        try:
            # One byte over the limit is enough to know: never inflate more than that.
            body = decompressor.decompress(request.get("body", b""), max_body - size + 1)
            if decompressor.unused_data:
                raise invalid("the gzip body goes on after its end of stream")
            if not request.get("more_body", False) and not decompressor.eof:
                raise invalid("the gzip body ends before its end of stream")
        except zlib.error:
            raise invalid("the body is not valid gzip") from None
        size += len(body)
        if size > max_body or decompressor.unconsumed_tail:
            raise ApiError(ErrorKind.PAYLOAD_TOO_LARGE, "request body is too large once decompressed")
        return {"type": "http.request", "body": body, "more_body": request.get("more_body", False)}

    return decoded
