"""One endpoint under evaluation, called through the Cohere SDK like any shop calls it (v1 rerank: product
objects with rank_fields). Works against this gateway, Cohere's API or any other Cohere-compatible one;
the extensions (instruction, fusion) are sent only when asked for, and the answer's token counts are read
when it has them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.request_options import RequestOptions
from cohere.types import RerankResponse

from gateway.eval.dataset import LabelledQuery


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    base_url: str
    api_key: str = field(repr=False)
    model: str | None = None
    instruction: str | None = None  # our extension; other endpoints may refuse or ignore it
    fusion: dict[str, Any] | None = None  # our extension: the request's "fusion" object

    def identity(self) -> str:
        """What makes answers differ, for the result store: never the key, which may be rotated."""
        parts = [self.base_url, self.model, self.instruction, self.fusion]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]

    def fused(self, name: str, fusion: dict[str, Any]) -> Endpoint:
        return replace(self, name=name, fusion=fusion)


@dataclass(frozen=True, slots=True)
class Tokens:
    """An answer's ``meta.tokens``: the prompt tokens scored for the request, and (this gateway's extension)
    by the model that scored them; ``by_model`` is empty when the endpoint does not say."""

    input_tokens: int
    by_model: dict[str, int] = field(default_factory=dict)

    @property
    def unattributed(self) -> int:
        """Tokens no model is named for (an endpoint reporting ``input_tokens`` alone)."""
        return max(0, self.input_tokens - sum(self.by_model.values()))

    def as_json(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "by_model": dict(self.by_model)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokens:
        return cls(int(data["input_tokens"]), {str(m): int(n) for m, n in data["by_model"].items()})


@dataclass(frozen=True, slots=True)
class Ranked:
    order: tuple[int, ...]  # candidate positions, best first, as the endpoint returned them
    scores: tuple[float, ...]  # relevance_score of each returned result, in that order
    fused: tuple[float, ...] | None = None  # fused_score likewise, when fusion was asked for
    tokens: Tokens | None = None  # None: the endpoint did not report them

    def as_json(self) -> dict[str, Any]:
        return {
            "order": list(self.order),
            "scores": list(self.scores),
            "fused": None if self.fused is None else list(self.fused),
            "tokens": None if self.tokens is None else self.tokens.as_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ranked:
        fused, tokens = data.get("fused"), data.get("tokens")
        return cls(
            tuple(data["order"]),
            tuple(data["scores"]),
            None if fused is None else tuple(fused),
            None if tokens is None else Tokens.from_json(tokens),
        )


class EndpointFailed(Exception):
    """The endpoint could not rank a query; ``str()`` is a sentence naming the endpoint and the query."""


class EndpointClient:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        httpx_client: httpx.Client | None = None,
    ) -> None:
        self.endpoint = endpoint
        # The SDK retries 429 and 5xx, waiting out Retry-After: a long run rides out rate limits.
        self._sdk = cohere.Client(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url.rstrip("/"),
            timeout=timeout_s,
            max_retries=max_retries,
            httpx_client=httpx_client,
        )

    def rank(self, query: LabelledQuery, *, rank_fields: list[str] | None, top_n: int | None) -> Ranked:
        endpoint = self.endpoint
        extra: dict[str, Any] = {}
        if endpoint.instruction is not None:
            extra["instruction"] = endpoint.instruction
        if endpoint.fusion is not None:
            extra["fusion"] = endpoint.fusion
        options: RequestOptions = {"additional_body_parameters": extra} if extra else {}
        where = f"endpoint '{endpoint.name}' ({endpoint.base_url}), query '{query.id}'"
        # Only what is set goes on the wire: the SDK would send null for None, which not every API takes.
        given = {"model": endpoint.model, "top_n": top_n, "rank_fields": rank_fields}
        optional: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
        try:
            response = self._sdk.rerank(
                query=query.query,
                documents=[candidate.document for candidate in query.candidates],
                request_options=options,
                **optional,
            )
        except ApiError as exc:
            body = exc.body.get("message") if isinstance(exc.body, dict) else exc.body
            raise EndpointFailed(f"{where}: HTTP {exc.status_code}: {body}") from exc
        except httpx.HTTPError as exc:
            raise EndpointFailed(f"{where}: {type(exc).__name__}: {exc}") from exc
        order = tuple(result.index for result in response.results)
        expected = min(top_n or len(query.candidates), len(query.candidates))
        if sorted(order) != sorted(set(order)) or not all(0 <= i < len(query.candidates) for i in order):
            raise EndpointFailed(f"{where}: the answer's indices are not distinct positions of the products")
        if len(order) != expected:
            raise EndpointFailed(f"{where}: {len(order)} results, expected {expected}")
        fused: tuple[float, ...] | None = None
        if endpoint.fusion is not None:
            extras = [(result.model_extra or {}).get("fused_score") for result in response.results]
            if not all(isinstance(value, int | float) for value in extras):
                raise EndpointFailed(
                    f"{where}: no fused_score in the answer; the endpoint does not do fusion"
                )
            fused = tuple(float(value) for value in extras if value is not None)
        scores = tuple(result.relevance_score for result in response.results)
        return Ranked(order, scores, fused, tokens_of(response))


def tokens_of(response: RerankResponse) -> Tokens | None:
    """``meta.tokens`` of an answer: Cohere's ``input_tokens`` and this gateway's ``by_model``, which the SDK
    keeps as an extra field. A ``by_model`` of another shape (another API's idea) counts as not given: cost
    accounting never fails an evaluation of relevance."""
    reported = response.meta.tokens if response.meta is not None else None
    if reported is None:
        return None
    by_model = (reported.model_extra or {}).get("by_model")
    if not isinstance(by_model, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in by_model.values()
    ):
        by_model = {}
    if reported.input_tokens is None and not by_model:
        return None
    total = sum(by_model.values()) if reported.input_tokens is None else int(reported.input_tokens)
    return Tokens(total, {str(model): n for model, n in by_model.items()})
