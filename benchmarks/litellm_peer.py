"""LiteLLM's proxy as a peer to benchmark the gateway against: same rerank workload, same vLLM behind it.

The proxy lives in its own venv (scripts/install-litellm.sh), so nothing here imports LiteLLM: this module
writes its config, starts it as a subprocess and says what a client sends it.

    config = tmp / "litellm.yaml"
    config.write_text(config_yaml(model_name="qwen3-reranker", vllm_url="http://127.0.0.1:8001"))
    proc = start(config_path=config, port=4001, master_key="sk-bench", log_path=tmp / "litellm.log")
    # wait for GET /health/liveliness (no key needed), then POST RERANK_PATH with
    # "Authorization: Bearer sk-bench" and rerank_body(...) as JSON
    stop(proc)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LITELLM_VERSION = "1.108.7"

ROOT = Path(__file__).resolve().parent.parent

# Any of the proxy's routes /rerank, /v1/rerank and /v2/rerank runs the same handler with the same
# Cohere-style body; /v1/rerank is the one the gateway serves with the same v1 contract.
RERANK_PATH = "/v1/rerank"

# The proxy's own liveness route: answers 200 without a key once the app has started.
LIVENESS_PATH = "/health/liveliness"

# Startup fetches that fall back to a copy bundled in the wheel when these are set; each would otherwise try
# raw.githubusercontent.com or docs.litellm.ai. The cost map is read at import; the others lazily, by routes
# a rerank benchmark does not call, but set them all so nothing goes out.
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_TELEMETRY_DISABLED": "True",  # veto: usage telemetry never starts whatever a DB might say
}

# Inherited settings that would give the peer a database or Redis it must not have; OTEL_* too, since an
# inherited OTLP endpoint would make FastAPI's and LiteLLM's OpenTelemetry hooks export spans.
_STRIPPED_PREFIXES = ("OTEL_",)
_STRIPPED_ENV = (
    "DATABASE_URL",
    "DIRECT_URL",
    "DATABASE_URL_READ_REPLICA",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "LITELLM_CONFIG_BUCKET_NAME",
)


def venv_dir() -> Path:
    """Where scripts/install-litellm.sh puts the proxy."""
    return Path(os.environ.get("RERANK_TOOLS", str(ROOT / "var" / "tools"))) / "litellm"


def config_yaml(*, model_name: str, vllm_url: str) -> str:
    """The proxy's config: one rerank model, `model_name`, sent to vLLM at `vllm_url` under the same name.

    Lean settings, so the benchmark measures LiteLLM's request path and not optional work:
    - general_settings.master_key from LITELLM_MASTER_KEY (set by `start`), so the key is not in the file;
      with no database_url the proxy runs DB-less and checks only that key.
    - disable_spend_logs, disable_spend_updates, disable_error_logs: no spend or error rows are built or
      queued (there is no DB to write them to anyway).
    - disable_model_info_refresh: for hosted_vllm the proxy otherwise GETs {api_base}/v1/models at startup
      and every 300 s to learn token limits, an extra request to vLLM during a run.
    - background_health_checks false, store_model_in_db false: no periodic probes, no DB-backed models.
    - router num_retries 0 and timeout 60: the gateway does not retry upstream and waits 60 s
      (upstream_timeout_s); LiteLLM's default would retry a failed call twice.
    - disable_cooldowns: failures never take the one vLLM deployment out of rotation (the gateway has no
      such state either).
    - litellm_settings: no callbacks, no cache, message logging off. Logging level and telemetry are set in
      `start` through the environment (LITELLM_LOG=ERROR, LITELLM_TELEMETRY_DISABLED).
    The proxy's built-in hooks (parallel-request limiter, budget and cache-control checks, ...) cannot be
    switched off from the config and stay on, as they would in any deployment.
    """
    # JSON strings are valid YAML scalars: quoting the caller's values this way needs no YAML library.
    name, url = json.dumps(model_name), json.dumps(vllm_url)
    upstream = json.dumps(f"hosted_vllm/{model_name}")  # the provider prefix is stripped before sending
    return f"""\
model_list:
  - model_name: {name}
    litellm_params:
      model: {upstream}
      api_base: {url}
litellm_settings:
  request_timeout: 60
  num_retries: 0
  callbacks: []
  success_callback: []
  failure_callback: []
  cache: false
  turn_off_message_logging: true
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 0
  timeout: 60
  disable_cooldowns: true
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  disable_spend_logs: true
  disable_spend_updates: true
  disable_error_logs: true
  disable_model_info_refresh: true
  background_health_checks: false
  store_model_in_db: false
"""


def start(*, config_path: Path, port: int, master_key: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the proxy on 127.0.0.1:`port` with one uvicorn worker (a single process); output to `log_path`.

    Returns at once: poll LIVENESS_PATH until it answers 200 (about 8 s cold on this machine), then send one
    rerank request before measuring: the first one takes about 0.5 s more (imports on first use).
    `master_key` may be any string; clients send it as "Authorization: Bearer <master_key>".
    """
    executable = venv_dir() / "bin" / "litellm"
    if not executable.exists():
        raise FileNotFoundError(f"{executable} is missing: run scripts/install-litellm.sh")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _STRIPPED_ENV and not key.startswith(_STRIPPED_PREFIXES)
    }
    env.update(_OFFLINE_ENV)
    env["LITELLM_MASTER_KEY"] = master_key
    env["LITELLM_LOG"] = "ERROR"  # also the uvicorn log level: no access log line per request
    command = [
        str(executable),
        "--config", str(config_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603  # fixed argv, the venv's own entry point
            command,
            env=env,
            cwd=log_path.parent,  # keep anything it might write out of the repo
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM (uvicorn drains and exits, 0.2 to 2 s here), SIGKILL if it is still there after `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def rerank_body(
    model_name: str, query: str, documents: Sequence[str], top_n: int | None = None
) -> dict[str, Any]:
    """The JSON body for POST RERANK_PATH: Cohere's rerank request, as the gateway takes it too.

    LiteLLM forwards model, query, documents and top_n to vLLM's /rerank as given (return_documents only
    when the client sets it), and answers {"id", "results": [{"index", "relevance_score", "document"}],
    "meta": {"billed_units": {"total_tokens"}, "tokens": {"input_tokens"}}}.
    """
    body: dict[str, Any] = {"model": model_name, "query": query, "documents": list(documents)}
    if top_n is not None:
        body["top_n"] = top_n
    return body
