"""The vLLM client: one long-lived connection pool, explicit timeouts, failures mapped to the error table.

The pool is our own small HTTP/1.1 client (gateway/http1.py), chosen by measurement against httpx and
aiohttp on the same stand-in (benchmarks/upstream_client.py, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec

from gateway.errors import ApiError, ErrorKind
from gateway.http1 import ConnectFailed, ConnectTimeout, Disconnected, Http1Pool, PoolTimeout, ProtocolError
from gateway.record import RequestRecord, current_record
from gateway.settings import Settings

POOL_WAIT_S = 5.0  # a request waits this long for a free connection before it is told to come back
# vLLM's uvicorn closes idle keep-alive connections after 5 s; reusing one at that moment races its close.
KEEPALIVE_S = 4.0


class _ScoreItem(msgspec.Struct):
    index: int
    score: float


class _Usage(msgspec.Struct):
    prompt_tokens: int


class _ScoreResponse(msgspec.Struct):
    data: list[_ScoreItem]
    usage: _Usage


@dataclass(frozen=True, slots=True)
class Scores:
    """vLLM's answer for a batch of pairs: a score per pair in the order sent, and the prompts' tokens."""

    scores: list[float]
    prompt_tokens: int


class _ScoreRequest(msgspec.Struct, omit_defaults=True):
    model: str
    queries: str
    documents: list[str]
    instruction: str
    # vLLM's priority scheduling (model_setup/serving.py turns it on); 0 is left out, so that a vLLM
    # scheduling first come, first served still takes the request.
    priority: int = 0


class _VllmErrorDetail(msgspec.Struct):
    message: str


class _VllmError(msgspec.Struct):
    error: _VllmErrorDetail


_score_decoder = msgspec.json.Decoder(_ScoreResponse)
_error_decoder = msgspec.json.Decoder(_VllmError)
_encoder = msgspec.json.Encoder()
JSON = "application/json"


class Upstream:
    """Scores (query, document) pairs with the ``/score`` route of the vLLM at ``url`` serving ``model``."""

    def __init__(self, settings: Settings, *, url: str, model: str) -> None:
        self.model = model
        self._ready_timeout = settings.ready_timeout_s
        self._deadline = settings.upstream_timeout_s
        self._pool = Http1Pool(
            url,
            max_connections=settings.upstream_max_connections,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            idle_s=KEEPALIVE_S,
            pool_timeout_s=POOL_WAIT_S,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def score(self, query: str, documents: list[str], instruction: str, priority: int = 0) -> Scores:
        body = _encoder.encode(_ScoreRequest(self.model, query, documents, instruction, priority))
        record = current_record()
        started = time.perf_counter()
        try:
            # One deadline for the whole call (pool wait, connect, send, wait, read): what the client waits
            # for and what a rate-limit slot's expiry assumes.
            async with asyncio.timeout(self._deadline):
                status, content = await self._pool.request(
                    "POST", "/score", body, JSON, _trace_headers(record)
                )
        except TRANSPORT_ERRORS as exc:
            raise self._failed(record, _raised(exc)) from None
        finally:
            if record is not None:
                record.upstream_ms += (time.perf_counter() - started) * 1000
        if status != 200:
            raise self._failed(record, _STATUS.get(status, _FAILED), status, _vllm_message(status, content))
        return self._scores(record, content, len(documents))

    async def ready(self) -> bool:
        try:
            async with asyncio.timeout(self._ready_timeout):
                status, _ = await self._pool.request("GET", "/health")
        except TRANSPORT_ERRORS:
            return False
        return status == 200

    def _failed(
        self, record: RequestRecord | None, failure: Failure, status: int = 0, message: str = ""
    ) -> ApiError:
        if record is not None:
            record.upstream_error, record.upstream_model = failure.label, self.model
        return failure.error(status, message)

    def _scores(self, record: RequestRecord | None, content: bytes, expected: int) -> Scores:
        try:
            answer = _score_decoder.decode(content)
        except msgspec.DecodeError:
            raise self._failed(record, _UNREADABLE) from None
        items = answer.data
        scores: list[float | None] = [None] * expected
        for item in items:
            if 0 <= item.index < expected:
                scores[item.index] = item.score
        complete = [score for score in scores if score is not None]
        if len(items) != expected or len(complete) != expected:
            raise self._failed(record, _INCOMPLETE)
        return Scores(complete, answer.usage.prompt_tokens)


@dataclass(frozen=True, slots=True)
class Failure:
    """How a failed call to vLLM is answered, and counted in rerank_upstream_failures_total{kind=label}."""

    label: str
    kind: ErrorKind
    message: str  # may name vLLM's {status} and its own {message}
    retry_after: int | None = None

    def error(self, status: int = 0, message: str = "") -> ApiError:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return ApiError(self.kind, self.message.format(status=status, message=message), headers=headers)


_BUSY = Failure(
    "pool_full", ErrorKind.UPSTREAM_UNAVAILABLE, "the model server is at capacity; retry shortly", 1
)
_LATE = Failure("timeout", ErrorKind.UPSTREAM_TIMEOUT, "the model server did not answer in time")
_DOWN = Failure(
    "unavailable", ErrorKind.UPSTREAM_UNAVAILABLE, "the model server is unavailable; retry shortly", 5
)
_NOT_READY = Failure(
    "unavailable", ErrorKind.UPSTREAM_UNAVAILABLE, "the model server is not ready; retry shortly", 5
)
_REJECTED = Failure("rejected", ErrorKind.INVALID_REQUEST, "the model rejected the input: {message}")
_FAILED = Failure("error", ErrorKind.UPSTREAM_ERROR, "the model server failed ({status})")
_UNREADABLE = Failure("bad_answer", ErrorKind.UPSTREAM_ERROR, "the model server sent an unreadable answer")
_INCOMPLETE = Failure(
    "bad_answer", ErrorKind.UPSTREAM_ERROR, "the model server returned an incomplete answer"
)

# The transport's exceptions, most specific first: a ConnectTimeout is a ConnectFailed, a TimeoutError (the
# call's deadline) an OSError.
_RAISED: tuple[tuple[type[Exception], Failure], ...] = (
    (PoolTimeout, _BUSY),
    (TimeoutError, _LATE),
    (ConnectTimeout, _LATE),
    (ConnectFailed, _DOWN),
    (Disconnected, _DOWN),
    (ProtocolError, _DOWN),
    (OSError, _DOWN),
)
TRANSPORT_ERRORS = tuple(raised for raised, _ in _RAISED)
# vLLM's error statuses: its 4xx are about the input, any other is its fault.
_STATUS: dict[int, Failure] = {400: _REJECTED, 422: _REJECTED, 503: _NOT_READY}
FAILURE_LABELS = tuple(dict.fromkeys(f.label for f in (_BUSY, _LATE, _DOWN, _REJECTED, _FAILED, _UNREADABLE)))


def _raised(exc: BaseException) -> Failure:
    return next(failure for raised, failure in _RAISED if isinstance(exc, raised))


def _trace_headers(record: RequestRecord | None) -> list[tuple[str, str]]:
    """The caller's W3C trace context, validated by the request log (no line breaks can reach the wire)."""
    if record is None or record.trace is None:
        return []
    headers = [("traceparent", record.trace.traceparent)]
    if record.trace.tracestate:
        headers.append(("tracestate", record.trace.tracestate))
    return headers


def _vllm_message(status: int, content: bytes) -> str:
    """vLLM's ``{"error": {"message": ...}}``, or its status when the body is not that."""
    try:
        return _error_decoder.decode(content).error.message
    except msgspec.DecodeError:
        return f"status {status}"
