"""The one error table: every failure the API reports, its HTTP status and its Cohere-shaped body."""

from __future__ import annotations

from enum import Enum

import msgspec


class ErrorKind(Enum):
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
        return STATUS[self]


# Cohere's SDK picks its typed exception (BadRequestError, UnauthorizedError, ...) from the status alone.
STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.NO_API_KEY: 401,
    ErrorKind.INVALID_API_KEY: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.REQUEST_TIMEOUT: 408,  # the body did not arrive in time (gateway/slowclients.py)
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.URI_TOO_LONG: 414,
    ErrorKind.HEADERS_TOO_LARGE: 431,
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.CLIENT_CLOSED: 499,  # nginx's code: the client went away before we could answer
    ErrorKind.INTERNAL: 500,
    ErrorKind.UPSTREAM_ERROR: 502,
    ErrorKind.UPSTREAM_UNAVAILABLE: 503,
    ErrorKind.UPSTREAM_TIMEOUT: 504,
    ErrorKind.OVERLOADED: 503,  # shed before reaching vLLM (gateway/shedding.py), with Retry-After
}


class ApiError(Exception):
    """Raised anywhere in the gateway; the app's exception handler renders it."""

    def __init__(self, kind: ErrorKind, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers or {}


class ErrorBody(msgspec.Struct):
    """Cohere's error shape. ``id`` is the request id, so a user can quote it to us."""

    id: str
    message: str


def invalid(message: str) -> ApiError:
    return ApiError(ErrorKind.INVALID_REQUEST, message)
