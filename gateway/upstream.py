"""The vLLM client: one long-lived httpx pool, explicit timeouts, vLLM failures mapped to the error table."""

from __future__ import annotations

import time

import anyio
import httpx
import msgspec

from gateway.errors import ApiError, ErrorKind
from gateway.requestlog import current_record
from gateway.settings import Settings


class _ScoreItem(msgspec.Struct):
    index: int
    score: float


class _ScoreResponse(msgspec.Struct):
    data: list[_ScoreItem]


class _VllmErrorDetail(msgspec.Struct):
    message: str


class _VllmError(msgspec.Struct):
    error: _VllmErrorDetail


_score_decoder = msgspec.json.Decoder(_ScoreResponse)
_error_decoder = msgspec.json.Decoder(_VllmError)


class Upstream:
    """Scores (query, document) pairs with vLLM's ``/score`` route."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._model = settings.served_model_name
        self._ready_timeout = settings.ready_timeout_s
        self._deadline = settings.upstream_timeout_s
        self._client = httpx.AsyncClient(
            base_url=settings.upstream_url,
            transport=transport,
            timeout=httpx.Timeout(
                settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s, pool=5.0
            ),
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_connections,
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def score(self, query: str, documents: list[str], instruction: str) -> list[float]:
        body = msgspec.json.encode(
            {"model": self._model, "queries": query, "documents": documents, "instruction": instruction}
        )
        started = time.perf_counter()
        try:
            # httpx times each phase (pool, connect, write, read) on its own; this bounds the whole call,
            # which is what the client waits for and what a rate-limit slot's expiry assumes.
            with anyio.fail_after(self._deadline):
                response = await self._client.post(
                    "/score", content=body, headers={"content-type": "application/json"}
                )
        except httpx.PoolTimeout:
            raise _unavailable("the model server is at capacity; retry shortly", retry_after=1) from None
        except (httpx.TimeoutException, TimeoutError):
            raise ApiError(ErrorKind.UPSTREAM_TIMEOUT, "the model server did not answer in time") from None
        except httpx.TransportError:
            raise _unavailable("the model server is unavailable; retry shortly", retry_after=5) from None
        finally:
            record = current_record()
            if record is not None:
                record.upstream_ms += (time.perf_counter() - started) * 1000
        return self._scores(response, len(documents))

    @staticmethod
    def _scores(response: httpx.Response, expected: int) -> list[float]:
        if response.status_code != 200:
            raise _mapped_error(response)
        try:
            items = _score_decoder.decode(response.content).data
        except msgspec.DecodeError:
            raise ApiError(ErrorKind.UPSTREAM_ERROR, "the model server sent an unreadable answer") from None
        scores: list[float | None] = [None] * expected
        for item in items:
            if 0 <= item.index < expected:
                scores[item.index] = item.score
        complete = [score for score in scores if score is not None]
        if len(items) != expected or len(complete) != expected:
            raise ApiError(ErrorKind.UPSTREAM_ERROR, "the model server returned an incomplete answer")
        return complete

    async def ready(self) -> bool:
        try:
            response = await self._client.get("/health", timeout=self._ready_timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def _unavailable(message: str, *, retry_after: int) -> ApiError:
    return ApiError(ErrorKind.UPSTREAM_UNAVAILABLE, message, headers={"Retry-After": str(retry_after)})


def _mapped_error(response: httpx.Response) -> ApiError:
    """vLLM's ``{"error": {"message": ...}}`` becomes ours. Its 4xx are about the input; 5xx are its fault."""
    try:
        message = _error_decoder.decode(response.content).error.message
    except msgspec.DecodeError:
        message = f"status {response.status_code}"
    if response.status_code in (400, 422):
        return ApiError(ErrorKind.INVALID_REQUEST, f"the model rejected the input: {message}")
    if response.status_code == 503:
        return _unavailable("the model server is not ready; retry shortly", retry_after=5)
    return ApiError(ErrorKind.UPSTREAM_ERROR, f"the model server failed ({response.status_code})")
