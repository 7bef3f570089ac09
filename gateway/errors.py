"""Errors on the wire, in one place: every failure the API reports (the kind), what the kind means (its HTTP
status, whether the caller's charge is given back), the Cohere-shaped body, how Litestar's own exceptions map
onto kinds, and the one raw ASGI writer every layer in front of Litestar answers with.

The table below also drives the OpenAPI document's error responses (gateway/apidoc/document.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap, Send

from gateway.record import current_record, request_id

JSON = b"application/json"
_log = structlog.get_logger("gateway")


class ErrorKind(Enum):
    """The value names the kind in the log line (``error``) and in tests."""

    INVALID_REQUEST = "invalid_request"
    NO_API_KEY = "no_api_key"
    INVALID_API_KEY = "invalid_api_key"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URI_TOO_LONG = "uri_too_long"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    CLIENT_CLOSED = "client_closed"
    INTERNAL = "internal"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    OVERLOADED = "overloaded"

    @property
    def status(self) -> int:
        return MEANING[self].status

    @property
    def refunds(self) -> bool:
        return MEANING[self].refunds


@dataclass(frozen=True, slots=True)
class Meaning:
    status: int
    # The model server failed, or the load was shed: not the caller's doing, so the admission's charge
    # (the request and its search units) is given back (gateway/limits.py, rerank_quota_refunds_total).
    refunds: bool = False


# Cohere's SDK picks its typed exception (BadRequestError, UnauthorizedError, ...) from the status alone.
MEANING: dict[ErrorKind, Meaning] = {
    ErrorKind.INVALID_REQUEST: Meaning(400),
    ErrorKind.NO_API_KEY: Meaning(401),
    ErrorKind.INVALID_API_KEY: Meaning(401),
    ErrorKind.NOT_FOUND: Meaning(404),
    ErrorKind.METHOD_NOT_ALLOWED: Meaning(405),
    ErrorKind.REQUEST_TIMEOUT: Meaning(408),  # the body did not arrive in time (gateway/bodydeadline.py)
    ErrorKind.PAYLOAD_TOO_LARGE: Meaning(413),
    ErrorKind.URI_TOO_LONG: Meaning(414),
    ErrorKind.HEADERS_TOO_LARGE: Meaning(431),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: Meaning(415),
    ErrorKind.RATE_LIMITED: Meaning(429),
    ErrorKind.CLIENT_CLOSED: Meaning(499),  # nginx's code: the client went away before we could answer
    ErrorKind.INTERNAL: Meaning(500),
    ErrorKind.UPSTREAM_ERROR: Meaning(502, refunds=True),
    ErrorKind.UPSTREAM_UNAVAILABLE: Meaning(503, refunds=True),
    ErrorKind.UPSTREAM_TIMEOUT: Meaning(504, refunds=True),
    ErrorKind.OVERLOADED: Meaning(503, refunds=True),  # shed before reaching vLLM (gateway/shedding.py)
}


class ApiError(Exception):
    """Raised anywhere in the gateway; ``render`` turns it into the answer."""

    def __init__(self, kind: ErrorKind, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    return ApiError(ErrorKind.INVALID_REQUEST, message)


class ErrorBody(msgspec.Struct):
    """Cohere's error shape. ``id`` is the request id, so a user can quote it to us."""

    id: str
    message: str


class Answer(NamedTuple):
    """An error's answer: status, extra headers, the JSON body."""

    status: int
    headers: dict[str, str]
    body: bytes


def answer_for(kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> Answer:
    """The Cohere-shaped answer; the request's record learns its kind (the log line's ``error``)."""
    record = current_record()
    if record is not None:
        record.error = kind.value
    return Answer(
        kind.status, headers or {}, msgspec.json.encode(ErrorBody(id=request_id(), message=message))
    )


def render(exc: Exception) -> Answer:
    """Our errors as the table says, anything else as a logged 500: for every layer and Litestar alike."""
    if isinstance(exc, ApiError):
        return answer_for(exc.kind, exc.message, exc.headers)
    _log.error("unhandled_error", request_id=request_id(), exc_info=exc)
    return answer_for(ErrorKind.INTERNAL, "internal error; quote this id when reporting it")


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """A whole JSON answer straight over ASGI: the fast path's 200s and every error a layer answers."""
    raw = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: Exception) -> None:
    status, headers, body = render(exc)
    await send_json(send, status, body, headers)


# Litestar's own exceptions, for what it answers before a handler runs: no route, wrong method, a body over
# request_max_body_size. Any other 4xx it raises is an invalid request; a 5xx is a 500.
def _litestar_answer(request: Request[Any, Any, Any], exc: HTTPException) -> Answer:
    status = exc.status_code
    if status == ErrorKind.NOT_FOUND.status:
        return answer_for(ErrorKind.NOT_FOUND, f"no route for {request.method} {request.url.path}")
    if status == ErrorKind.METHOD_NOT_ALLOWED.status:
        allow = exc.headers.get("allow", "") if exc.headers else ""
        return answer_for(
            ErrorKind.METHOD_NOT_ALLOWED, f"method {request.method} not allowed", {"Allow": allow}
        )
    if status == ErrorKind.PAYLOAD_TOO_LARGE.status:
        return answer_for(ErrorKind.PAYLOAD_TOO_LARGE, "request body is too large")
    if status < 500:
        return answer_for(ErrorKind.INVALID_REQUEST, str(exc.detail))
    return render(exc)


def _as_response(answer: Answer) -> Response[bytes]:
    return Response(answer.body, status_code=answer.status, media_type=JSON.decode(), headers=answer.headers)


def _on_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _as_response(render(exc))


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _as_response(_litestar_answer(request, exc))


def exception_handlers() -> ExceptionHandlersMap:
    """Litestar's: the same answers whichever layer or handler raised."""
    return {ApiError: _on_error, HTTPException: _on_http_exception, Exception: _on_error}
