"""The page's only way to the model: the Cohere SDK against the gateway, exactly as a shop calls it.

Every failure becomes one sentence a merchandiser can act on; tracebacks stay in the page's log. The
gateway's extensions (a cascade result's ``model``, ``meta.tokens.by_model``, the model list's cards) come
through the SDK as its models' extra fields.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cohere
import httpx
import msgspec
from cohere.core.api_error import ApiError
from cohere.core.request_options import RequestOptions

from gateway.schemas import ModelCard


@dataclass(frozen=True)
class Ranked:
    index: int  # position in the products as sent, 0-based
    score: float
    model: str | None = None  # a cascade's result: the model whose score this is


@dataclass(frozen=True)
class Outcome:
    results: list[Ranked]  # best first
    latency_ms: float  # the whole SDK call, as the shop would see it
    search_units: int | None  # meta.billed_units.search_units, what the request is billed
    tokens_by_model: dict[str, int] = field(default_factory=dict)  # meta.tokens.by_model: the cost


class RerankFailed(Exception):
    """The gateway could not rank; ``str()`` is a sentence for the page."""


class ModelsUnavailable(Exception):
    """The gateway did not list its models; ``str()`` says why, for the page's log."""


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 60.0,
        httpx_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # No retries: the SDK would otherwise sleep through a 429's Retry-After or a loading model in
        # silence; the page tells the merchandiser instead and lets them click again.
        self._sdk = cohere.Client(
            api_key=api_key,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=0,
            httpx_client=httpx_client,
        )
        self._timeout_s = timeout_s

    def rerank(
        self,
        query: str,
        documents: Sequence[str | dict[str, Any]],
        *,
        rank_fields: list[str] | None = None,
        instruction: str | None = None,
        top_n: int | None = None,
        model: str | None = None,
    ) -> Outcome:
        options: RequestOptions = {}
        if instruction:  # the gateway's extension field; without it the deployment default applies
            options["additional_body_parameters"] = {"instruction": instruction}
        # Named only when chosen: without it the deployment's default model ranks, as before fleets.
        named: dict[str, Any] = {"model": model} if model else {}
        started = time.perf_counter()
        try:
            response = self._sdk.rerank(
                query=query,
                documents=documents,
                top_n=top_n,
                rank_fields=rank_fields,
                request_options=options,
                **named,
            )
        except ApiError as exc:
            raise RerankFailed(api_error_sentence(exc.status_code, exc.headers or {}, exc.body)) from exc
        except httpx.TimeoutException as exc:
            raise RerankFailed(
                f"The gateway at {self.base_url} did not answer within {self._timeout_s:g} s; "
                "it may be overloaded. Try again with fewer products."
            ) from exc
        except httpx.HTTPError as exc:  # refused, DNS, TLS, dropped connection
            raise RerankFailed(
                f"Cannot reach the gateway at {self.base_url}: check that it is running and that the "
                "address is right. If it was just started, it may still be loading the model."
            ) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        units = None
        if (
            response.meta
            and response.meta.billed_units
            and response.meta.billed_units.search_units is not None
        ):
            units = int(response.meta.billed_units.search_units)
        tokens = response.meta.tokens if response.meta else None
        by_model = (tokens.model_extra or {}).get("by_model") if tokens else None
        results = [
            Ranked(r.index, r.relevance_score, _text_or_none((r.model_extra or {}).get("model")))
            for r in response.results
        ]
        return Outcome(results, latency_ms, units, _token_counts(by_model))

    def models(self) -> list[ModelCard]:
        """Every name the deployment answers to (GET /v1/models), or ModelsUnavailable: a gateway from
        before fleets, or another Cohere-compatible API, may list none or in another shape."""
        try:
            listing = self._sdk.models.list()
        except (ApiError, httpx.HTTPError) as exc:
            raise ModelsUnavailable(f"GET {self.base_url}/v1/models failed: {exc}") from exc
        try:
            return msgspec.convert((listing.model_extra or {}).get("data"), list[ModelCard])
        except msgspec.ValidationError as exc:
            raise ModelsUnavailable(f"{self.base_url}/v1/models is not this gateway's list: {exc}") from exc


def api_error_sentence(  # noqa: PLR0911  # one sentence per status: a match reads best
    status: int | None, headers: dict[str, str], body: Any
) -> str:
    """What an HTTP error from the gateway means for the person at the page, and what to do about it."""
    message = body.get("message") if isinstance(body, dict) else None
    said = f" The gateway said: “{message}”." if isinstance(message, str) and message else ""
    wait = _retry_after(headers)
    match status:
        case 400:
            return f"The gateway refused these products or settings: {message or 'invalid request'}."
        case 401 | 403 | 498:
            return (
                "The gateway refused this page's API key: it is missing, wrong or revoked. Start the page "
                "with a valid key (--api-key-file)."
            )
        case 404:
            return (
                "Nothing answers the rerank route at this address: check the page's --base-url (the "
                "gateway's address, without /v1)."
            )
        case 413:
            return "The request is too large for the gateway: send fewer or shorter products."
        case 429:
            after = f"wait {_seconds(wait)} and try again" if wait else "wait a moment and try again"
            return f"This page's API key has reached its rate limit: {after}.{said}"
        case 503:
            after = f" Try again in {_seconds(wait)}." if wait else " Try again in a minute."
            return f"The model is not ready yet (it may still be loading) or is unavailable.{after}{said}"
        case 504:
            return "The model took too long to answer: try again, or send fewer products."
        case _:
            return f"The gateway failed with HTTP {status}.{said} Try again; if it persists, check its logs."


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _token_counts(by_model: Any) -> dict[str, int]:
    """``meta.tokens.by_model`` as sent; nothing when the API does not send it (Cohere's does not)."""
    if not isinstance(by_model, dict):
        return {}
    return {str(name): int(n) for name, n in by_model.items() if isinstance(n, int | float)}


def _retry_after(headers: dict[str, str]) -> int | None:
    value = {name.lower(): v for name, v in headers.items()}.get("retry-after", "")
    return int(value) if value.strip().isdigit() else None


def _seconds(n: int) -> str:
    return "1 second" if n == 1 else f"{n} seconds"
