"""The API's contracts: Cohere v1 and v2, the Jina/vLLM-style ``/rerank``, the model list, and the unkeyed
routes (health, readiness, the OpenAPI document and page); the request decoded, the answer shaped.

``RerankApi`` holds the keyed routes whichever serving path delivered the request: the fast path
(gateway/fastpath.py) calls them for the exact rerank paths, the Litestar handlers of ``handlers`` for
everything Litestar routes to them. Request semantics (validation beyond the wire types, scoring, order) are
gateway/rerank.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from gateway.errors import ApiError, ErrorKind, invalid
from gateway.fastpath import ReadBody, Route, route_arguments
from gateway.fusion import plan_for
from gateway.keys import ApiKey
from gateway.keyswatch import KeyWatch
from gateway.models import Model, Models
from gateway.record import current_record, request_id
from gateway.rerank import Ranking, Reranker
from gateway.schemas import (
    ApiVersion,
    BilledUnits,
    Document,
    JinaRerankRequest,
    JinaRerankResponse,
    Meta,
    RerankResponse,
    Result,
    Tokens,
    Usage,
    V1RerankRequest,
    V2RerankRequest,
)
from gateway.settings import Settings
from gateway.workerstate import read_state as read_workers_state

T = TypeVar("T")
JSON = "application/json"


class RerankApi:
    def __init__(self, settings: Settings, keyring: KeyWatch, reranker: Reranker, models: Models) -> None:
        self._settings = settings
        self._keyring = keyring
        self._reranker = reranker
        self._default = models.default.name
        self._models = msgspec.json.encode(models.cards)

    @property
    def fast_routes(self) -> dict[str, Route]:
        """The rerank routes by exact path, for the fast path."""
        return {"/v1/rerank": self.v1, "/rerank": self.jina, "/v2/rerank": self.v2}

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
        model = self._reranker.check_common(body.model, body.query, len(body.documents), body.top_n)
        max_chunks = self._reranker.chunks_per_doc(body.max_chunks_per_doc)
        ranking = await self._rank_v1(key, model, body, self._settings.max_tokens_per_doc, max_chunks)
        return _ranked(ranking, "1", body.documents if body.return_documents else None)

    async def jina(self, authorization: str, content_type: str, read_body: ReadBody) -> bytes:
        """`/rerank`, for Jina/vLLM-style clients: the v1 contract, documents returned unless asked not to,
        ``max_tokens_per_doc`` truncating as vLLM's route does, and ``model`` and ``usage`` in the answer."""
        key = self.authenticate(authorization)
        body = await _decode(content_type, read_body, JinaRerankRequest)
        reranker = self._reranker
        model = reranker.check_common(body.model, body.query, len(body.documents), body.top_n)
        if body.max_tokens_per_doc is None:
            chunk_tokens = self._settings.max_tokens_per_doc
            max_chunks = reranker.chunks_per_doc(body.max_chunks_per_doc)
        else:
            reranker.check_positive("max_tokens_per_doc", body.max_tokens_per_doc)
            if body.max_chunks_per_doc is not None:
                raise invalid("send max_tokens_per_doc (truncate) or max_chunks_per_doc (split), not both")
            chunk_tokens, max_chunks = body.max_tokens_per_doc, 1
        ranking = await self._rank_v1(key, model, body, chunk_tokens, max_chunks)
        answer = JinaRerankResponse(
            id=request_id(),
            model=body.model or self._default,
            results=_results(ranking, None if body.return_documents is False else body.documents),
            usage=Usage(prompt_tokens=ranking.input_tokens, total_tokens=ranking.input_tokens),
            meta=_meta(ranking, "1"),
        )
        return msgspec.json.encode(answer)

    async def _rank_v1(
        self, key: ApiKey, model: Model, body: V1RerankRequest, chunk_tokens: int, max_chunks: int
    ) -> Ranking:
        reranker = self._reranker
        cascade_k = reranker.cascade_k(model, body.cascade_top_k)
        texts = reranker.render_v1(body.documents, body.rank_fields)
        fusion = plan_for(body.fusion, key.fusion, body.documents)  # its 400s come before any scoring
        return await reranker.rank(
            key=key,
            model=model,
            query=body.query,
            texts=texts,
            instruction=reranker.instruction(body.instruction),
            top_n=body.top_n,
            chunk_tokens=chunk_tokens,
            max_chunks=max_chunks,
            use_cache=body.cache,
            score_threshold=body.score_threshold,
            fusion=fusion,
            cascade_k=cascade_k,
        )

    async def v2(self, authorization: str, content_type: str, read_body: ReadBody) -> bytes:
        key = self.authenticate(authorization)
        body = await _decode(content_type, read_body, V2RerankRequest)
        reranker = self._reranker
        model = reranker.check_common(body.model, body.query, len(body.documents), body.top_n)
        cascade_k = reranker.cascade_k(model, body.cascade_top_k)
        reranker.check_positive("max_tokens_per_doc", body.max_tokens_per_doc)
        if body.relevant_spans is not None and body.relevant_spans.mode == "enabled":
            raise invalid("relevant_spans is not supported by this model")
        if body.fusion is not None and body.fusion.fields:
            raise invalid("fusion needs object documents with numeric fields; use /v1/rerank")
        ranking = await reranker.rank(
            key=key,
            model=model,
            query=body.query,
            texts=body.documents,
            instruction=reranker.instruction(body.instruction),
            top_n=body.top_n,
            chunk_tokens=body.max_tokens_per_doc or self._settings.max_tokens_per_doc,
            max_chunks=1,
            use_cache=body.cache,
            score_threshold=body.score_threshold,
            priority=_priority(body.priority),
            cascade_k=cascade_k,
        )
        return _ranked(ranking, "2", None)

    def models(self, authorization: str) -> bytes:
        self.authenticate(authorization)
        return self._models


def handlers(
    api: RerankApi, models: Models, *, max_body: int, openapi_json: bytes, docs_html: bytes
) -> list[HTTPRouteHandler]:
    """The Litestar route table: the route table of the OpenAPI document, 404s and 405s come from it."""

    def keyed(route: Route) -> Callable[[Request[Any, Any, Any]], Any]:
        async def handler(request: Request[Any, Any, Any]) -> Response[bytes]:
            return _ok(await route(*route_arguments(request.scope["headers"], request.receive, max_body)))

        return handler

    async def model_list(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _ok(api.models(request.headers.get("authorization", "")))

    async def openapi() -> Response[bytes]:
        return Response(openapi_json, media_type=JSON)

    async def docs() -> Response[bytes]:
        return Response(docs_html, media_type="text/html; charset=utf-8")

    async def health() -> Response[bytes]:
        return _ok(b'{"status":"ok"}')

    async def ready() -> Response[bytes]:
        """Ready when every model this pod serves answers. A remote model (another pod's vLLM) is listed
        but does not decide: its outage must not take this pod's healthy models out of the Service too."""
        answers = await asyncio.gather(*(scorer.upstream.ready() for scorer in models.scorers))
        states = dict(zip(models.scorers, answers, strict=True))
        waiting = [scorer.name for scorer, ok in states.items() if scorer.own and not ok]
        if waiting:
            message = "the model server is not ready"
            if len(models.scorers) > 1:
                message += f" (not answering: {', '.join(waiting)})"
            raise ApiError(ErrorKind.UPSTREAM_UNAVAILABLE, message, headers={"Retry-After": "5"})
        body = _ready_body()
        remote = {
            scorer.name: "answering" if ok else "not answering"
            for scorer, ok in states.items()
            if not scorer.own
        }
        if remote:
            body["remote_models"] = remote
        return _ok(msgspec.json.encode(body))

    return [
        post("/v1/rerank", status_code=200, name="rerank_v1")(keyed(api.v1)),
        post("/rerank", status_code=200, name="rerank_jina")(keyed(api.jina)),
        post("/v2/rerank", status_code=200, name="rerank_v2")(keyed(api.v2)),
        get("/v1/models")(model_list),
        get("/health")(health),
        get("/ready")(ready),
        get("/openapi.json")(openapi),
        get("/docs")(docs),
    ]


def _ready_body() -> dict[str, object]:
    """Ready, and under `python -m gateway serve` how many of its worker processes are alive."""
    workers = read_workers_state()
    if workers is None:  # an app built in-process
        return {"status": "ready"}
    return {"status": "ready", "workers": {"configured": workers.configured, "alive": workers.alive}}


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


def _bearer_key(authorization: str) -> str:
    header = authorization.strip()
    if not header:
        raise ApiError(ErrorKind.NO_API_KEY, "no api key supplied")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(ErrorKind.INVALID_API_KEY, "invalid api token")
    return key.strip()


def _priority(priority: int | None) -> int:
    record = current_record()
    if record is not None and priority is not None:
        record.priority = priority
    return priority or 0


def _results(ranking: Ranking, documents: list[Document] | None) -> list[Result]:
    return [
        Result(
            index=i,
            # float() whatever the source: a score is always a JSON float, never 1 or 0 (OpenSearch's Cohere
            # post-processor casts every score to Double).
            relevance_score=float(ranking.scores[i]),
            document=msgspec.UNSET if documents is None else _as_object(documents[i]),
            fused_score=msgspec.UNSET if ranking.fused is None else ranking.fused[i],
            model=msgspec.UNSET if ranking.scored_by is None else ranking.scored_by[i],
        )
        for i in ranking.order
    ]


def _as_object(document: Document) -> dict[str, Any]:
    return {"text": document} if isinstance(document, str) else dict(document)


def _meta(ranking: Ranking, version: str) -> Meta:
    return Meta(
        api_version=ApiVersion(version),
        billed_units=BilledUnits(ranking.search_units),
        tokens=Tokens(ranking.input_tokens, ranking.tokens_by_model),
    )


def _ranked(ranking: Ranking, version: str, documents: list[Document] | None) -> bytes:
    results, meta = _results(ranking, documents), _meta(ranking, version)
    return msgspec.json.encode(RerankResponse(id=request_id(), results=results, meta=meta))


def _ok(body: bytes) -> Response[bytes]:
    return Response(body, status_code=200, media_type=JSON)
