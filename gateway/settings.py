"""Gateway settings: typed, ``RERANK_``-prefixed, validated once when the caller builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.limits import MAX_PER_MINUTE, KeyLimits
from model_setup import defaults
from model_setup.fetch import FetchError
from model_setup.fleet import Fleet, Member
from model_setup.fleet import load as load_fleet
from model_setup.naming import served_name
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION
from model_setup.serving import Precision, online_quantization

DOCUMENTS_CEILING = 10_000
# A field's json_schema_extra for what the program sets itself: in no table for operators.
INTERNAL: JsonDict = {"internal": True}


class Settings(BaseSettings):
    """Everything the gateway needs: ``Settings()`` reads the environment; keyword arguments override."""

    model_config = SettingsConfigDict(env_prefix="RERANK_", extra="ignore", frozen=True)

    # Serving
    host: str = Field(default=defaults.HOST, description="the API's listen address")
    port: int = Field(default=defaults.PORT, ge=1, le=65535, description="the API's port")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="gateway worker processes; more than 1 needs the Redis rate-limit store",
    )
    # Prometheus scrapes this port, never the API's: per-key usage is no other tenant's business.
    metrics_host: str = Field(default="0.0.0.0", description="the metrics port's listen address")  # noqa: S104
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Prometheus metrics (see Operations); `0` turns them off"
    )
    metrics_dir: Path | None = Field(
        default=None, description="set by `serve` for its workers, never by hand", json_schema_extra=INTERNAL
    )
    # Slow and idle clients (README "Slow clients"): what a connection may take before it is closed.
    # 10 s: above the 5 s for which httpx (the Cohere SDK's client) keeps an idle connection, so a client
    # does not reuse a connection the gateway is closing.
    header_read_timeout_s: float = Field(
        default=10.0,
        ge=1,
        le=60,
        description="a connection's request line and headers must arrive within this, from connect or from "
        "the last answer (so it also closes idle keep-alive and silent connections); 1 to 60",
    )
    body_read_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="the whole body must arrive within this of the headers; else 408 and the connection "
        "closes",
    )
    max_requests_per_worker: int = Field(
        default=1024,
        ge=1,
        description="requests in progress in one worker; one more is a 503 with `Retry-After: 1` at once",
    )

    # The model behind us
    upstream_url: str = Field(
        default=f"http://{defaults.VLLM_HOST}:{defaults.VLLM_PORT}",
        description="vLLM (the entrypoint sets it)",
    )
    served_model_name: str = Field(
        default="",
        description="model name vLLM serves and clients may ask for; unset: the snapshot's repository name, "
        "lower-cased (`qwen3-reranker-0.6b`, `qwen3-reranker-tiny`), as vLLM gets it",
        json_schema_extra={"shown": "(the snapshot's)"},
    )
    model_aliases: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("rerank-v3.5", "rerank-multilingual-v3.0"),
        description="other names accepted in `model`, comma-separated (with a fleet: names of its default)",
    )
    model_dir: Path | None = Field(
        default=None,
        description="model snapshot; the gateway reads its `tokenizer.json`, vLLM the rest (required "
        "without a fleet file)",
    )
    fleet_file: Path | None = Field(
        default=None,
        description="several models (and cascades) in one deployment, routed by `model` (docs/fleet.md); "
        "replaces `RERANK_MODEL_DIR` and the served name, while the aliases go to the fleet's default",
    )
    vllm_port: int = Field(
        default=defaults.VLLM_PORT,
        ge=1,
        le=65535,
        description="the first local vLLM's port, as the entrypoint gives it",
        json_schema_extra=INTERNAL,
    )
    max_model_len: int = Field(
        default=defaults.MAX_MODEL_LEN,
        ge=256,
        description="context per (query, document) prompt; passed to vLLM too",
    )
    default_instruction: str = Field(
        default=PRODUCT_SEARCH_INSTRUCTION,
        description="used when a request sends none",
        json_schema_extra={"shown": "product-search instruction"},
    )
    dtype: str = Field(
        default=defaults.DTYPE,
        description="vLLM's `--dtype`; part of the score cache's key (a new dtype, new scores)",
    )
    quantization: str = Field(
        default=defaults.QUANTIZATION,
        description="vLLM's online quantisation: `fp8` (FP8 compute from Ada; Turing, Ampere: FP8 weights "
        "only); empty: none, and a checkpoint with its own `quantization_config` is served as it "
        "declares. Part of the score cache's key",
        json_schema_extra={"shown": "(none)"},
    )

    # API keys: lines of "<key-id> sha256:<hex>", from a mounted file and/or the environment
    api_keys_file: Path | None = Field(
        default=None, description="keys file (mount a secret here); one `<key-id> sha256:<hex>` per line"
    )
    api_keys: SecretStr | None = Field(
        default=None, description="the same lines, `;`- or newline-separated, when a file is impractical"
    )
    api_keys_reload_s: float = Field(
        default=2.0, ge=0, description="the keys file is re-read this soon after it changes (`0`: never)"
    )

    # Per-key limits (keys-file options override these defaults; unset means unlimited)
    default_rpm: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PER_MINUTE,
        description="requests per minute where the key's line sets none",
    )
    default_units_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PER_MINUTE,
        description="search units per minute where the key's line sets none",
    )
    default_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PER_MINUTE,
        description="requests in progress where the key's line sets none",
    )
    rate_limit_store: Literal["memory", "redis"] = Field(
        default="memory", description="`memory` (one process) or `redis` (replicas, workers)"
    )
    redis_url: SecretStr | None = Field(
        default=None, description="`redis://[:password@]host:6379/0`; treated as a secret"
    )
    redis_failure_mode: Literal["open", "closed"] = Field(
        default="open", description="`open`: serve unlimited while Redis is down; `closed`: 503"
    )
    redis_timeout_s: float = Field(
        default=0.25, gt=0, description="per Redis call (limits and the shared cache); then the failure mode"
    )

    # Request limits
    max_documents: int = Field(
        default=1000, ge=1, le=DOCUMENTS_CEILING, description=f"per request; at most {DOCUMENTS_CEILING:,}"
    )
    max_query_chars: int = Field(default=4000, ge=1, description="query length, before tokenizing")
    max_query_tokens: int = Field(default=1024, ge=1, description="query tokens; at most half of the context")
    max_instruction_chars: int = Field(default=2000, ge=1, description="a request's own instruction")
    max_document_chars: int = Field(default=100_000, ge=1, description="per document, before any tokenizing")
    max_tokens_per_doc: int = Field(default=4096, ge=1, description="v2 default truncation and v1 chunk size")
    max_chunks_per_doc: int = Field(default=10, ge=1, le=100, description="v1 default and ceiling")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="request body (16 MiB)")
    tokenizer_threads: int = Field(
        default=2, ge=1, le=64, description="requests tokenizing at once per worker; more wait their turn"
    )

    # Upstream behaviour
    upstream_timeout_s: float = Field(
        default=60.0, gt=0, description="per vLLM call; beyond it the client gets 504"
    )
    upstream_connect_timeout_s: float = Field(default=2.0, gt=0, description="to connect to vLLM")
    upstream_max_connections: int = Field(
        default=64, ge=1, description="connections to vLLM per worker; a request waits up to 5 s for one"
    )
    ready_timeout_s: float = Field(default=2.0, gt=0, description="`/ready`'s wait for vLLM's `/health`")
    drain_timeout_s: int = Field(
        default=defaults.DRAIN_TIMEOUT_S, ge=1, description="on SIGTERM, in-flight requests get this long"
    )
    # Load shedding (gateway/shedding.py): pairs in flight to vLLM, then a short priority queue, then 503
    max_pairs_in_flight: int = Field(
        default=512,
        ge=0,
        description="query-document pairs at vLLM at once, all workers together (each gets an equal share); "
        '`0`: no bound (see "Load shedding")',
    )
    queue_max_requests: int = Field(
        default=128, ge=0, description="requests waiting for capacity, per worker"
    )
    queue_timeout_s: float = Field(
        default=2.0, ge=0, description="how long one waits for capacity before a 503"
    )

    # Pair-score cache (README "Score cache")
    score_cache_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="in-process score cache per worker (64 MiB); `0` turns it off",
    )
    score_cache_scope: Literal["key", "global"] = Field(
        default="key", description="`key`: pairs stay with the API key that scored them; `global`: shared"
    )
    score_cache_redis_ttl_s: int = Field(
        default=0,
        ge=0,
        description="seconds a score lives in the shared tier in `RERANK_REDIS_URL`; `0`: no shared tier",
    )

    # Logs
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="logs")
    log_format: Literal["json", "console"] = Field(
        default=defaults.LOG_FORMAT, description="`json` (one object a line) or `console`"
    )

    _fleet: Fleet | None = PrivateAttr(default=None)

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="before")
    @classmethod
    def _name_from_the_snapshot(cls, data: Any) -> Any:
        """Unset: the snapshot's name (model_setup/naming.py), the rule vLLM's options follow."""
        if isinstance(data, dict) and not data.get("served_model_name") and data.get("model_dir"):
            try:
                return {**data, "served_model_name": served_name(Path(data["model_dir"]))}
            except FetchError:
                pass  # _check names what is missing
        return data

    @field_validator("quantization")
    @classmethod
    def _online_quantization(cls, value: str) -> str:
        return online_quantization(value)

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.fleet_file is None:
            if self.model_dir is None:
                raise ValueError("no model: set RERANK_MODEL_DIR (one model) or RERANK_FLEET_FILE (a fleet)")
            if not (self.model_dir / "tokenizer.json").is_file():
                raise ValueError(f"model_dir {self.model_dir} has no tokenizer.json")
            if not self.served_model_name:
                raise ValueError(
                    f"RERANK_SERVED_MODEL_NAME is unset and {self.model_dir} has no manifest naming its "
                    "model: set it"
                )
        served = self._fleet = self._read_fleet()  # a wrong fleet file is refused here, naming the entry
        taken = [alias for alias in self.model_aliases if alias in served.names()]
        if taken and self.fleet_file is not None:  # one model: an alias that is its name changes nothing
            raise ValueError(
                f"RERANK_MODEL_ALIASES names {taken[0]!r}, which the fleet file already gives a model"
            )
        for member in served.members:
            self.precision(member)  # quantising a quantised checkpoint: refused before anything starts
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
        shortest = min(self.max_model_len_of(member) for member in served.members)
        if self.max_query_tokens > shortest // 2:
            raise ValueError(
                "max_query_tokens may be at most half of max_model_len: the rest is for documents"
            )
        return self

    def fleet(self) -> Fleet:
        """The models served: the fleet file's, or the one model of RERANK_MODEL_DIR as a fleet of one
        (read once, when the settings are made)."""
        assert self._fleet is not None  # _check sets it
        return self._fleet

    def _read_fleet(self) -> Fleet:
        if self.fleet_file is not None:
            # GPU shares are the entrypoint's to check (`model_setup fleet`): the gateway takes no GPU.
            env = {"RERANK_VLLM_PORT": str(self.vllm_port), "RERANK_PORT": str(self.port)}
            return load_fleet(self.fleet_file, env, check_gpu=False)
        assert self.model_dir is not None  # _check insists
        # The entrypoint's one vLLM, which the gateway reaches at RERANK_UPSTREAM_URL.
        member = Member(
            name=self.served_model_name, aliases=(), model_dir=self.model_dir, upstream_url=self.upstream_url
        )
        return Fleet((member,), (), member.name)

    def own_vllms(self) -> tuple[Member, ...]:
        """The models whose vLLM this pod's entrypoint runs: a fleet's local ones, or the one model."""
        served = self.fleet()
        return served.local if self.fleet_file is not None else served.members

    def precision(self, member: Member) -> Precision:
        """What a model's scores are computed in (reads its config.json)."""
        dtype = member.dtype or self.dtype
        online = (
            self.quantization if member.quantization is None else online_quantization(member.quantization)
        )
        return Precision.of(member.model_dir, dtype=dtype, online=online)

    def max_model_len_of(self, member: Member) -> int:
        return member.max_model_len or self.max_model_len

    @property
    def default_limits(self) -> KeyLimits:
        return KeyLimits(self.default_rpm, self.default_units_per_minute, self.default_concurrency)


def documented() -> list[tuple[str, str, str]]:
    """(variable, default in Markdown, meaning) of every setting an operator may set: the README's table
    (``python -m gateway settings`` prints it; tests/test_settings.py checks the README against it)."""
    rows = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("internal"):
            continue
        shown = extra.get("shown")
        rows.append((f"RERANK_{name.upper()}", str(shown) if shown else _shown(info), info.description or ""))
    return rows


def _shown(info: FieldInfo) -> str:
    if info.is_required():
        return "(required)"
    default = info.default
    if default is None:
        return ""
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"
