"""Gateway settings: typed, ``RERANK_``-prefixed, validated once when the caller builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.limits import MAX_PER_MINUTE, KeyLimits
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION

DOCUMENTS_CEILING = 10_000


class Settings(BaseSettings):
    """Everything the gateway needs: ``Settings()`` reads the environment; keyword arguments override."""

    model_config = SettingsConfigDict(env_prefix="RERANK_", extra="ignore", frozen=True)

    # Serving
    host: str = "0.0.0.0"  # noqa: S104  # the container's public port; vLLM stays on loopback
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # Prometheus scrapes this port, never the API's: per-key usage is no other tenant's business.
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="0 turns the metrics port off")
    metrics_host: str = "0.0.0.0"  # noqa: S104  # Prometheus scrapes the pod IP
    metrics_dir: Path | None = Field(default=None, description="set by `serve` for its workers, not by hand")
    # Slow and idle clients (README "Slow clients"): what a connection may take before it is closed
    # 10 s: above the 5 s for which httpx (the Cohere SDK's client) keeps an idle connection, so a client
    # does not reuse a connection the gateway is closing.
    header_read_timeout_s: float = Field(
        default=10.0, ge=1, le=60, description="request line and headers, from connect or the last answer"
    )
    body_read_timeout_s: float = Field(default=15.0, gt=0, description="the whole body, from the headers")
    max_requests_per_worker: int = Field(
        default=1024, ge=1, description="requests in progress per worker; one more is a 503 at once"
    )

    # The model behind us
    upstream_url: str = "http://127.0.0.1:8001"
    served_model_name: str = "qwen3-reranker-4b"
    model_aliases: Annotated[tuple[str, ...], NoDecode] = ("rerank-v3.5", "rerank-multilingual-v3.0")
    model_dir: Path = Field(description="snapshot directory; the gateway reads its tokenizer.json")
    max_model_len: int = Field(default=8192, ge=256)
    default_instruction: str = PRODUCT_SEARCH_INSTRUCTION

    # API keys: lines of "<key-id> sha256:<hex>", from a mounted file and/or the environment
    api_keys_file: Path | None = None
    api_keys: SecretStr | None = None
    api_keys_reload_s: float = Field(
        default=2.0, ge=0, description="the keys file is re-read this soon after it changes; 0: never"
    )

    # Per-key limits (keys-file options override these defaults; unset means unlimited)
    default_rpm: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    default_units_per_minute: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    default_concurrency: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    rate_limit_store: Literal["memory", "redis"] = "memory"
    redis_url: SecretStr | None = None
    redis_failure_mode: Literal["open", "closed"] = "open"
    redis_timeout_s: float = Field(default=0.25, gt=0)

    # Request limits
    max_documents: int = Field(default=1000, ge=1, le=DOCUMENTS_CEILING)
    max_query_chars: int = Field(default=4000, ge=1)
    max_query_tokens: int = Field(default=1024, ge=1)
    max_instruction_chars: int = Field(default=2000, ge=1)
    max_document_chars: int = Field(default=100_000, ge=1)
    max_tokens_per_doc: int = Field(default=4096, ge=1, description="v2 default; v1 chunk size")
    max_chunks_per_doc: int = Field(default=10, ge=1, le=100, description="v1 default and ceiling")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    tokenizer_threads: int = Field(default=2, ge=1, le=64, description="requests tokenizing at once")

    # Upstream behaviour
    upstream_timeout_s: float = Field(default=60.0, gt=0)
    upstream_connect_timeout_s: float = Field(default=2.0, gt=0)
    upstream_max_connections: int = Field(default=64, ge=1)
    # Load shedding (gateway/shedding.py): pairs in flight to vLLM, then a short priority queue, then 503
    max_pairs_in_flight: int = Field(
        default=512, ge=0, description="query-document pairs at vLLM at once, all workers; 0: no bound"
    )
    queue_max_requests: int = Field(
        default=128, ge=0, description="requests waiting for capacity, per worker"
    )
    queue_timeout_s: float = Field(default=2.0, ge=0, description="longest wait for capacity before a 503")
    ready_timeout_s: float = Field(default=2.0, gt=0)
    drain_timeout_s: int = Field(default=20, ge=1, description="on SIGTERM, in-flight requests get this long")

    # Pair-score cache (README "Score cache")
    score_cache_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="in-process tier; 0 turns it off"
    )
    score_cache_scope: Literal["key", "global"] = "key"
    score_cache_redis_ttl_s: int = Field(
        default=0, ge=0, description="shared tier in RERANK_REDIS_URL; 0 is off"
    )
    dtype: str = Field(default="auto", description="vLLM's --dtype (RERANK_DTYPE): part of the cache key")

    # Logs
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not (self.model_dir / "tokenizer.json").is_file():
            raise ValueError(f"model_dir {self.model_dir} has no tokenizer.json")
        if self.api_keys_file is None and self.api_keys is None:
            raise ValueError("no API keys configured: set RERANK_API_KEYS_FILE or RERANK_API_KEYS")
        if self.workers > 1 and self.rate_limit_store == "memory":
            raise ValueError(
                f"workers={self.workers} with the in-process rate-limit store would give every worker its "
                "own counters and multiply each key's limits; set RERANK_RATE_LIMIT_STORE=redis and "
                "RERANK_REDIS_URL, or RERANK_WORKERS=1"
            )
        if self.rate_limit_store == "redis" and self.redis_url is None:
            raise ValueError("RERANK_RATE_LIMIT_STORE=redis needs RERANK_REDIS_URL")
        if self.score_cache_redis_ttl_s > 0 and self.redis_url is None:
            raise ValueError(
                "RERANK_SCORE_CACHE_REDIS_TTL_S turns on the shared cache tier, which needs RERANK_REDIS_URL"
            )
        if self.metrics_port != 0 and self.metrics_port == self.port:
            raise ValueError("RERANK_METRICS_PORT must differ from RERANK_PORT: metrics stay off the API")
        if self.max_query_tokens > self.max_model_len // 2:
            raise ValueError(
                "max_query_tokens may be at most half of max_model_len: the rest is for documents"
            )
        return self

    @property
    def model_names(self) -> tuple[str, ...]:
        return (self.served_model_name, *self.model_aliases)

    @property
    def default_limits(self) -> KeyLimits:
        return KeyLimits(self.default_rpm, self.default_units_per_minute, self.default_concurrency)
