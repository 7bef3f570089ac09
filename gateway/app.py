"""The app factory: settings in, Litestar app out. Nothing here runs at import; it only wires.

The request path, outermost first, is the list at the end of ``create_app``; the routes are
gateway/routes.py's, errors on the wire gateway/errors.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import msgspec
import structlog
from litestar import Litestar

from gateway import package_version
from gateway.apidoc.document import Limits, openapi
from gateway.apidoc.page import render as render_page
from gateway.bodydeadline import BodyDeadline
from gateway.cache import SharedTier
from gateway.errors import exception_handlers
from gateway.fastpath import FastRoutes
from gateway.framing import Framing
from gateway.inflight import InFlight
from gateway.keys import KeyRing
from gateway.keyswatch import KeyWatch
from gateway.layers import stack
from gateway.limits import Limiter, LimitStore, MemoryStore, RedisStore
from gateway.models import Models
from gateway.models import build as build_models
from gateway.observe.metrics import FLUSH_INTERVAL_S, Metrics
from gateway.requestcap import RequestCap
from gateway.requestlog import RequestLog
from gateway.rerank import Reranker
from gateway.routes import RerankApi, handlers
from gateway.settings import Settings
from gateway.unreadbody import UnreadBody

_log = structlog.get_logger("gateway")


def create_app(settings: Settings) -> Litestar:
    """Build the gateway. Tests put fault-injecting vLLM stand-ins on the wire (RERANK_UPSTREAM_URL)."""
    in_flight = InFlight()
    shared = _shared_tier(settings)
    models = build_models(settings, settings.fleet(), shared)
    metrics = _metrics(settings, in_flight, models)
    keyring = KeyWatch(
        load_keyring(settings),
        file=settings.api_keys_file,
        env_value=settings.api_keys.get_secret_value() if settings.api_keys else None,
        interval_s=settings.api_keys_reload_s,
        on_reload=metrics.key_reloaded if metrics else None,
    )
    limiter = Limiter(_limit_store(settings), fail_open=settings.redis_failure_mode == "open")
    reranker = Reranker(settings, models, limiter)
    api = RerankApi(settings, keyring, reranker, models)
    document = openapi(title="product-rerank", version=package_version(), limits=_limits(settings, models))

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
            await models.aclose()
            if shared is not None:
                await shared.aclose()
            await limiter.aclose()
            watching.cancel()
            if flushing is not None and metrics is not None:
                flushing.cancel()
                metrics.flush()  # the last requests count too

    app = Litestar(
        route_handlers=handlers(
            api,
            models,
            max_body=settings.max_body_bytes,
            openapi_json=msgspec.json.encode(document),
            docs_html=render_page(document).encode(),
        ),
        exception_handlers=exception_handlers(),
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,  # ours is generated from the wire types (gateway/apidoc)
        logging_config=None,
        debug=False,
    )
    # The request path, outermost first, in front of Litestar's own handler (Litestar answers lifespan
    # before it): layers here see every request, 404s and 405s included.
    app.asgi_handler = stack(
        app.asgi_handler,
        [
            in_flight.layer,  # counted until its last byte: shutdown waits for it
            partial(  # the request record, its log line and metrics, X-Request-ID, Server-Timing
                RequestLog,
                logger=structlog.get_logger("gateway.access"),
                observe=metrics.observe if metrics else None,
                # Counts of cache hits only when the cache is on and per key: then they tell a caller
                # nothing about what other keys asked.
                cache_timing=settings.score_cache_scope == "key"
                and (settings.score_cache_max_bytes > 0 or settings.score_cache_redis_ttl_s > 0),
            ),
            partial(RequestCap, max_in_progress=settings.max_requests_per_worker),  # 503 past the cap
            partial(BodyDeadline, timeout_s=settings.body_read_timeout_s),  # 408 for a late body
            partial(UnreadBody, max_body=settings.max_body_bytes),  # an early answer drains or closes
            partial(Framing, max_body=settings.max_body_bytes),  # Host, 414, 431, Content-Encoding
            partial(FastRoutes, routes=api.fast_routes, max_body=settings.max_body_bytes),
        ],
    )
    return app


def load_keyring(settings: Settings) -> KeyRing:
    """The configured keys; raises ValueError with a line number (never the line) when malformed."""
    return KeyRing.load(
        file=settings.api_keys_file,
        env_value=settings.api_keys.get_secret_value() if settings.api_keys else None,
    )


def _metrics(settings: Settings, in_flight: InFlight, models: Models) -> Metrics | None:
    if not settings.metrics_port:
        return None
    shedders = {scorer.name: scorer.shedder for scorer in models.scorers}
    return Metrics(
        lambda: in_flight.count,
        settings.metrics_dir,
        models=list(shedders),
        pairs_in_flight=lambda: {
            name: shedder.in_flight if shedder else 0 for name, shedder in shedders.items()
        },
        queued=lambda: {name: shedder.queued if shedder else 0 for name, shedder in shedders.items()},
    )


def _limit_store(settings: Settings) -> LimitStore:
    if settings.rate_limit_store == "redis" and settings.redis_url is not None:  # Settings ensures the URL
        return RedisStore(
            settings.redis_url.get_secret_value(),
            timeout_s=settings.redis_timeout_s,
            in_flight_ttl_s=settings.upstream_timeout_s + 30,  # a slot outlives any request it can hold
        )
    return MemoryStore()


def _shared_tier(settings: Settings) -> SharedTier | None:
    """The score cache's Redis tier, one for every model (a pair's key names its model)."""
    if settings.score_cache_redis_ttl_s > 0 and settings.redis_url is not None:  # Settings ensures the URL
        return SharedTier(
            settings.redis_url.get_secret_value(),
            ttl_s=settings.score_cache_redis_ttl_s,
            timeout_s=settings.redis_timeout_s,
        )
    return None


def _limits(settings: Settings, models: Models) -> Limits:
    """What the OpenAPI document states of this deployment's limits."""
    return Limits(
        model_names=models.names,
        max_documents=settings.max_documents,
        max_query_chars=settings.max_query_chars,
        max_instruction_chars=settings.max_instruction_chars,
        max_chunks_per_doc=settings.max_chunks_per_doc,
    )


async def _flush_every(metrics: Metrics) -> None:
    """The worker's totals to the metrics port's directory, once a second (metrics.py says why)."""
    while True:  # the first at once, so every family is on the metrics port from the worker's start
        try:
            metrics.flush()
        except OSError as exc:  # a full or vanished directory costs freshness, never a request
            _log.warning("metrics_flush_failed", error=str(exc))
        await asyncio.sleep(FLUSH_INTERVAL_S)
