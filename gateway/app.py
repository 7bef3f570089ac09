"""The app factory: settings in, Litestar app out. Nothing here runs at import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException, InternalServerException

from gateway import package_version
from gateway.apidoc.document import Limits, openapi
from gateway.apidoc.page import render as render_page
from gateway.cache import ScoreCache, SharedTier, model_identity
from gateway.drain import InFlight
from gateway.errors import ApiError, ErrorBody, ErrorKind, invalid
from gateway.fastpath import FastRoutes, ReadBody
from gateway.framing import Framing
from gateway.fusion import plan_for
from gateway.keys import ApiKey, KeyRing
from gateway.keyswatch import KeyWatch
from gateway.limits import Limiter, LimitStore, MemoryStore, RedisStore
from gateway.neutralise import Neutraliser
from gateway.observe.metrics import FLUSH_INTERVAL_S, Metrics
from gateway.requestlog import RequestLog, current_record, new_request_id
from gateway.rerank import Ranking, Reranker
from gateway.schemas import (
    ApiVersion,
    BilledUnits,
    Document,
    JinaRerankRequest,
    JinaRerankResponse,
    Meta,
    ModelCard,
    ModelList,
    RerankResponse,
    Result,
    Tokens,
    Usage,
    V1RerankRequest,
    V2RerankRequest,
)
from gateway.settings import Settings
from gateway.shedding import Shedder
from gateway.slowclients import SlowClients
from gateway.tokens import PromptBudget
from gateway.unreadbody import UnreadBody
from gateway.upstream import Upstream
from gateway.workerstate import read_state as read_workers_state

T = TypeVar("T")
JSON = "application/json"
_log = structlog.get_logger("gateway")

_LITESTAR_STATUS_KIND = {
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON, headers=headers)


def _request_id() -> str:
    record = current_record()
    return record.request_id if record else new_request_id()


def _error_parts(
    kind: ErrorKind, message: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and Cohere-shaped body of an error: the one rendering both serving paths use."""
    record = current_record()
    if record is not None:
        record.error = kind.value
    return kind.status, headers or {}, msgspec.json.encode(ErrorBody(id=_request_id(), message=message))


def _as_response(parts: tuple[int, dict[str, str], bytes]) -> Response[bytes]:
    status, headers, body = parts
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _error_response(kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return _as_response(_error_parts(kind, message, headers))


def _render(exc: Exception) -> tuple[int, dict[str, str], bytes]:
    """Our errors as the table says, anything else as a logged 500: for the fast path and Litestar alike."""
    if isinstance(exc, ApiError):
        return _error_parts(exc.kind, exc.message, exc.headers)
    _log.error("unhandled_error", request_id=_request_id(), exc_info=exc)
    return _error_parts(ErrorKind.INTERNAL, "internal error; quote this id when reporting it")


def _on_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _as_response(_render(exc))


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    kind = _LITESTAR_STATUS_KIND.get(exc.status_code)
    if kind is ErrorKind.NOT_FOUND:
        return _error_response(kind, f"no route for {request.method} {request.url.path}")
    if kind is ErrorKind.METHOD_NOT_ALLOWED:
        allow = exc.headers.get("allow", "") if exc.headers else ""
        return _error_response(kind, f"method {request.method} not allowed", {"Allow": allow})
    if kind is ErrorKind.PAYLOAD_TOO_LARGE:
        return _error_response(kind, "request body is too large")
    if exc.status_code < 500:
        return _error_response(ErrorKind.INVALID_REQUEST, str(exc.detail))
    return _on_error(request, exc)


async def _decode(content_type: str, read_body: ReadBody, model: type[T]) -> T:
    if content_type.split(";", 1)[0].strip().lower() != JSON:
        raise ApiError(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "content-type must be application/json")
    body = await read_body()
    try:
        return msgspec.json.decode(body, type=model, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request: {exc}") from None
    except msgspec.DecodeError:
        raise invalid("invalid request: body is not valid JSON") from None
    except RecursionError:  # msgspec's depth is the interpreter's recursion limit
        raise invalid("invalid request: JSON nested too deeply") from None


def _results(ranking: Ranking, documents: list[Document] | None) -> list[Result]:
    return [
        Result(
            index=i,
            # float() whatever the source: a score is always a JSON float, never 1 or 0 (OpenSearch's Cohere
            # post-processor casts every score to Double).
            relevance_score=float(ranking.scores[i]),
            document=msgspec.UNSET if documents is None else _as_object(documents[i]),
            fused_score=msgspec.UNSET if ranking.fused is None else ranking.fused[i],
        )
        for i in ranking.order
    ]


def _meta(ranking: Ranking, version: str) -> Meta:
    return Meta(
        api_version=ApiVersion(version),
        billed_units=BilledUnits(ranking.search_units),
        tokens=Tokens(ranking.input_tokens),
    )


def _ranked(ranking: Ranking, version: str, documents: list[Document] | None) -> bytes:
    results, meta = _results(ranking, documents), _meta(ranking, version)
    return msgspec.json.encode(RerankResponse(id=_request_id(), results=results, meta=meta))


def _ok(body: bytes) -> Response[bytes]:
    return Response(body, status_code=200, media_type=JSON)


def _route_arguments(request: Request[Any, Any, Any]) -> tuple[str, str, ReadBody]:
    """What a rerank route needs from a Litestar request: its two headers and a way to read the body."""

    async def read_body() -> bytes:
        try:
            return await request.body()
        except InternalServerException:  # reading the body raises it for one thing: the client hung up
            raise ApiError(ErrorKind.CLIENT_CLOSED, "client closed the request") from None

    headers = request.headers
    return headers.get("authorization", ""), headers.get("content-type", ""), read_body


def _priority(priority: int | None) -> int:
    record = current_record()
    if record is not None and priority is not None:
        record.priority = priority
    return priority or 0


def _as_object(document: Document) -> dict[str, Any]:
    return {"text": document} if isinstance(document, str) else dict(document)


def _bearer_key(authorization: str) -> str:
    header = authorization.strip()
    if not header:
        raise ApiError(ErrorKind.NO_API_KEY, "no api key supplied")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(ErrorKind.INVALID_API_KEY, "invalid api token")
    return key.strip()


def load_keyring(settings: Settings) -> KeyRing:
    """The configured keys; raises ValueError with a line number (never the line) when malformed."""
    return KeyRing.load(
        file=settings.api_keys_file,
        env_value=settings.api_keys.get_secret_value() if settings.api_keys else None,
    )


def _limit_store(settings: Settings) -> LimitStore:
    if settings.rate_limit_store == "redis" and settings.redis_url is not None:  # Settings ensures the URL
        return RedisStore(
            settings.redis_url.get_secret_value(),
            timeout_s=settings.redis_timeout_s,
            in_flight_ttl_s=settings.upstream_timeout_s + 30,  # a slot outlives any request it can hold
        )
    return MemoryStore()


def _shedder(settings: Settings) -> Shedder | None:
    """The bound on pairs in flight to vLLM: the gateway's total, shared equally by its workers."""
    if settings.max_pairs_in_flight == 0:
        return None
    return Shedder(
        max_pairs=max(1, settings.max_pairs_in_flight // settings.workers),
        max_queued=settings.queue_max_requests,
        wait_s=settings.queue_timeout_s,
    )


def _score_cache(settings: Settings) -> ScoreCache:
    shared = None
    if settings.score_cache_redis_ttl_s > 0 and settings.redis_url is not None:  # Settings ensures the URL
        shared = SharedTier(
            settings.redis_url.get_secret_value(),
            ttl_s=settings.score_cache_redis_ttl_s,
            timeout_s=settings.redis_timeout_s,
        )
    return ScoreCache(
        identity=model_identity(settings.model_dir, settings.served_model_name, settings.dtype),
        max_bytes=settings.score_cache_max_bytes,
        scope=settings.score_cache_scope,
        shared=shared,
    )


class RerankApi:
    """The keyed routes, whichever serving path delivered the request: the fast path (gateway/fastpath.py)
    calls them for exact paths, the Litestar handlers in create_app for everything Litestar routes to them."""

    def __init__(self, settings: Settings, keyring: KeyWatch, reranker: Reranker) -> None:
        self._settings = settings
        self._keyring = keyring
        self._reranker = reranker

    def authenticate(self, authorization: str) -> ApiKey:
        """Called first by every keyed route rather than as a Litestar guard: a guard costs a copy of the
        route handler per request (and a worker thread when synchronous)."""
        key = self._keyring.authenticate(_bearer_key(authorization))
        if key is None:
            raise ApiError(ErrorKind.INVALID_API_KEY, "invalid api token")
        record = current_record()
        if record is not None:
            record.key_id = key.key_id
        return key

    async def v1(self, authorization: str, content_type: str, read_body: ReadBody) -> bytes:
        """Cohere v1."""
        key = self.authenticate(authorization)
        body = await _decode(content_type, read_body, V1RerankRequest)
        self._reranker.check_common(body.model, body.query, len(body.documents), body.top_n)
        max_chunks = self._reranker.chunks_per_doc(body.max_chunks_per_doc)
        ranking = await self._rank_v1(key, body, self._settings.max_tokens_per_doc, max_chunks)
        return _ranked(ranking, "1", body.documents if body.return_documents else None)

    async def jina(self, authorization: str, content_type: str, read_body: ReadBody) -> bytes:
        """`/rerank`, for Jina/vLLM-style clients: the v1 contract, documents returned unless asked not to,
        ``max_tokens_per_doc`` truncating as vLLM's route does, and ``model`` and ``usage`` in the answer."""
        key = self.authenticate(authorization)
        body = await _decode(content_type, read_body, JinaRerankRequest)
        reranker = self._reranker
        reranker.check_common(body.model, body.query, len(body.documents), body.top_n)
        if body.max_tokens_per_doc is None:
            chunk_tokens = self._settings.max_tokens_per_doc
            max_chunks = reranker.chunks_per_doc(body.max_chunks_per_doc)
        else:
            reranker.check_positive("max_tokens_per_doc", body.max_tokens_per_doc)
            if body.max_chunks_per_doc is not None:
                raise invalid("send max_tokens_per_doc (truncate) or max_chunks_per_doc (split), not both")
            chunk_tokens, max_chunks = body.max_tokens_per_doc, 1
        ranking = await self._rank_v1(key, body, chunk_tokens, max_chunks)
        answer = JinaRerankResponse(
            id=_request_id(),
            model=body.model or self._settings.served_model_name,
            results=_results(ranking, None if body.return_documents is False else body.documents),
            usage=Usage(prompt_tokens=ranking.input_tokens, total_tokens=ranking.input_tokens),
            meta=_meta(ranking, "1"),
        )
        return msgspec.json.encode(answer)

    async def _rank_v1(
        self, key: ApiKey, body: V1RerankRequest, chunk_tokens: int, max_chunks: int
    ) -> Ranking:
        reranker = self._reranker
        texts = reranker.render_v1(body.documents, body.rank_fields)
        fusion = plan_for(body.fusion, key.fusion, body.documents)  # its 400s come before any scoring
        return await reranker.rank(
            key=key,
            query=body.query,
            texts=texts,
            instruction=reranker.instruction(body.instruction),
            top_n=body.top_n,
            chunk_tokens=chunk_tokens,
            max_chunks=max_chunks,
            use_cache=body.cache,
            score_threshold=body.score_threshold,
            fusion=fusion,
        )

    async def v2(self, authorization: str, content_type: str, read_body: ReadBody) -> bytes:
        key = self.authenticate(authorization)
        body = await _decode(content_type, read_body, V2RerankRequest)
        reranker = self._reranker
        reranker.check_common(body.model, body.query, len(body.documents), body.top_n)
        reranker.check_positive("max_tokens_per_doc", body.max_tokens_per_doc)
        if body.relevant_spans is not None and body.relevant_spans.mode == "enabled":
            raise invalid("relevant_spans is not supported by this model")
        if body.fusion is not None and body.fusion.fields:
            raise invalid("fusion needs object documents with numeric fields; use /v1/rerank")
        ranking = await reranker.rank(
            key=key,
            query=body.query,
            texts=body.documents,
            instruction=reranker.instruction(body.instruction),
            top_n=body.top_n,
            chunk_tokens=body.max_tokens_per_doc or self._settings.max_tokens_per_doc,
            max_chunks=1,
            use_cache=body.cache,
            score_threshold=body.score_threshold,
            priority=_priority(body.priority),
        )
        return _ranked(ranking, "2", None)


async def _flush_every(metrics: Metrics) -> None:
    """The worker's totals to the metrics port's directory, once a second (metrics.py says why)."""
    while True:  # the first at once, so every family is on the metrics port from the worker's start
        try:
            metrics.flush()
        except OSError as exc:  # a full or vanished directory costs freshness, never a request
            _log.warning("metrics_flush_failed", error=str(exc))
        await asyncio.sleep(FLUSH_INTERVAL_S)


def _ready_body() -> dict[str, object]:
    """Ready, and under `python -m gateway serve` how many of its worker processes are alive."""
    workers = read_workers_state()
    if workers is None:  # an app built in-process
        return {"status": "ready"}
    return {"status": "ready", "workers": {"configured": workers.configured, "alive": workers.alive}}


def create_app(settings: Settings) -> Litestar:
    """Build the gateway. Tests put fault-injecting vLLM stand-ins on the wire (RERANK_UPSTREAM_URL)."""
    in_flight = InFlight()
    shedder = _shedder(settings)
    metrics = None
    if settings.metrics_port:
        metrics = Metrics(
            lambda: in_flight.count,
            settings.metrics_dir,
            pairs_in_flight=(lambda: shedder.in_flight) if shedder else (lambda: 0),
            queued=(lambda: shedder.queued) if shedder else (lambda: 0),
        )
    keyring = KeyWatch(
        load_keyring(settings),
        file=settings.api_keys_file,
        env_value=settings.api_keys.get_secret_value() if settings.api_keys else None,
        interval_s=settings.api_keys_reload_s,
        on_reload=metrics.key_reloaded if metrics else None,
    )
    budget = PromptBudget.from_model_dir(settings.model_dir, max_model_len=settings.max_model_len)
    upstream = Upstream(settings)
    limiter = Limiter(_limit_store(settings), fail_open=settings.redis_failure_mode == "open")
    cache = _score_cache(settings)
    neutraliser = Neutraliser.for_prompt(budget.tokenizer)
    reranker = Reranker(
        settings,
        upstream,
        budget,
        limiter,
        cache,
        neutraliser=neutraliser,
        shedder=shedder,
    )

    api = RerankApi(settings, keyring, reranker)

    @post("/v1/rerank", status_code=200)
    async def rerank_v1(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ok(await api.v1(*_route_arguments(request)))

    @post("/rerank", status_code=200)
    async def rerank_jina(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ok(await api.jina(*_route_arguments(request)))

    @post("/v2/rerank", status_code=200)
    async def rerank_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ok(await api.v2(*_route_arguments(request)))

    @get("/v1/models")
    async def models(request: Request[Any, Any, Any]) -> Response[bytes]:
        api.authenticate(request.headers.get("authorization", ""))
        return _json(ModelList(data=[ModelCard(id=name) for name in settings.model_names]))

    limits = Limits(
        model_names=settings.model_names,
        max_documents=settings.max_documents,
        max_query_chars=settings.max_query_chars,
        max_instruction_chars=settings.max_instruction_chars,
        max_chunks_per_doc=settings.max_chunks_per_doc,
    )
    document = openapi(title="product-rerank", version=package_version(), limits=limits)
    document_json = msgspec.json.encode(document)
    docs_html = render_page(document).encode()

    @get("/openapi.json")
    async def openapi_json() -> Response[bytes]:
        return Response(document_json, media_type=JSON)

    @get("/docs")
    async def docs() -> Response[bytes]:
        return Response(docs_html, media_type="text/html; charset=utf-8")

    @get("/health")
    async def health() -> Response[bytes]:
        return _json({"status": "ok"})

    @get("/ready")
    async def ready() -> Response[bytes]:
        if not await upstream.ready():
            raise ApiError(
                ErrorKind.UPSTREAM_UNAVAILABLE, "the model server is not ready", headers={"Retry-After": "5"}
            )
        return _json(_ready_body())

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        flushing = asyncio.create_task(_flush_every(metrics)) if metrics is not None else None
        watching = asyncio.create_task(keyring.watch())
        try:
            yield
        finally:
            # The server has stopped accepting; requests it already took still need vLLM and Redis.
            if not await in_flight.wait_idle(settings.drain_timeout_s):
                _log.warning("drain_timeout", in_flight=in_flight.count)
            await upstream.aclose()
            await cache.aclose()
            await limiter.aclose()
            watching.cancel()
            if flushing is not None and metrics is not None:
                flushing.cancel()
                metrics.flush()  # the last requests count too

    app = Litestar(
        route_handlers=[rerank_v1, rerank_jina, rerank_v2, models, health, ready, openapi_json, docs],
        exception_handlers={
            ApiError: _on_error,
            HTTPException: _on_http_exception,
            Exception: _on_error,
        },
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,  # ours is generated from the wire types (gateway/apidoc)
        logging_config=None,
        debug=False,
    )
    fast = FastRoutes(
        app.asgi_handler,
        {"/v1/rerank": api.v1, "/rerank": api.jina, "/v2/rerank": api.v2},
        max_body=settings.max_body_bytes,
        render=_render,
    )
    # Wrap the whole ASGI handler (not per-route middleware) so the log line covers 404s and 405s too.
    framed = Framing(fast, max_body=settings.max_body_bytes, render=_render)
    log = RequestLog(
        SlowClients(
            UnreadBody(framed, max_body=settings.max_body_bytes),
            body_timeout_s=settings.body_read_timeout_s,
            max_in_progress=settings.max_requests_per_worker,
            render=_render,
        ),
        logger=structlog.get_logger("gateway.access"),
        observe=metrics.observe if metrics else None,
        # Counts of cache hits only when the cache is on and per key: then they tell a caller nothing about
        # what other keys asked.
        cache_timing=settings.score_cache_scope == "key"
        and (settings.score_cache_max_bytes > 0 or settings.score_cache_redis_ttl_s > 0),
    )
    app.asgi_handler = in_flight.wrap(log)
    return app
