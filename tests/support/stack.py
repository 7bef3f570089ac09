"""The stack under test as the tests see it: the model name and limits every test gateway serves with, API
keys, handles on a running vLLM, gateway and Redis, and how a test gateway is configured and started.

conftest.py builds the session's vLLM, gateway and Redis from these; a test that needs a gateway of its own
starts it with the `start_gateway` fixture (or `start_module_gateway` from a module-scoped fixture), which
says only what differs from `gateway_env`'s defaults.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION
from tests.support.procs import TEST_DTYPE, Service, start_gateway, wait_http

SERVED_NAME = "qwen3-reranker-4b"
TEST_MAX_MODEL_LEN = 2048
TEST_MAX_TOKENS_PER_DOC = 128  # small, so chunking and truncation are exercised with modest texts
VLLM_START_BUDGET_S = 420.0


@dataclass
class Keys:
    raw: dict[str, str]  # key id -> raw key
    file: Path

    def __getitem__(self, key_id: str) -> str:
        return self.raw[key_id]


@dataclass
class Vllm:
    service: Service
    url: str

    def start(self) -> None:
        self.service.start()
        assert self.service.proc is not None
        wait_http(f"{self.url}/health", timeout=VLLM_START_BUDGET_S, proc=self.service.proc)


@dataclass
class Gateway:
    service: Service
    url: str

    @property
    def metrics_url(self) -> str:
        """The metrics port (tests/support/procs.py gives every gateway its own)."""
        return f"http://127.0.0.1:{self.service.env['RERANK_METRICS_PORT']}"


@dataclass
class Redis:
    service: Service
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.service.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise TimeoutError("redis did not start")


def gateway_env(model_dir: Path, keys: Keys, upstream: str, **extra: str) -> dict[str, str]:
    return {
        "RERANK_MODEL_DIR": str(model_dir),
        "RERANK_API_KEYS_FILE": str(keys.file),
        "RERANK_UPSTREAM_URL": upstream,
        "RERANK_SERVED_MODEL_NAME": SERVED_NAME,
        "RERANK_DTYPE": TEST_DTYPE,  # what the session's vLLM computes in: part of the score cache's key
        "RERANK_MAX_MODEL_LEN": str(TEST_MAX_MODEL_LEN),
        "RERANK_MAX_TOKENS_PER_DOC": str(TEST_MAX_TOKENS_PER_DOC),
        # Off unless a test turns it on: the suites below assert what happens when vLLM is asked (an outage is
        # a 503 even for a request scored before). tests/test_cache.py runs gateways with it on.
        "RERANK_SCORE_CACHE_MAX_BYTES": "0",
        **extra,
    }


class GatewayStarter:
    """Starts test gateways: `gateway_env`'s defaults (the session's model and keys unless given others) with
    a test's own settings on top, each logging to ``<artifacts>/gateway-<name>.log``, and stops all it
    started on `close` (the fixtures call it at their teardown), last started first."""

    def __init__(self, model_dir: Path, keys: Keys, artifacts: Path) -> None:
        self.model_dir = model_dir
        self.keys = keys
        self.artifacts = artifacts
        self.started: list[Service] = []

    def __call__(
        self,
        name: str,
        upstream: str,
        /,
        *presets: Mapping[str, str],
        keys: Keys | None = None,
        model_dir: Path | None = None,
        fresh_log: bool = False,
        **settings: str,
    ) -> Gateway:
        """A gateway on a free port in front of ``upstream`` once it answers /health. ``presets`` (settings a
        module's gateways share, such as its cache) and then ``settings`` are environment variables
        (RERANK_...) over the defaults; ``fresh_log`` first removes the log of earlier runs, for a test that
        counts its lines."""
        if fresh_log:
            (self.artifacts / f"gateway-{name}.log").unlink(missing_ok=True)
        overrides = {key: value for preset in presets for key, value in preset.items()} | settings
        env = gateway_env(
            self.model_dir if model_dir is None else model_dir,
            self.keys if keys is None else keys,
            upstream,
            **overrides,
        )
        service, url = start_gateway(name, self.artifacts, env)
        self.started.append(service)
        return Gateway(service, url)

    def close(self) -> None:
        while self.started:
            self.started.pop().stop()

    def __enter__(self) -> GatewayStarter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def vllm_score(url: str, model: str, query: str, documents: list[str]) -> dict[str, Any]:
    """What the vLLM at ``url`` answers for these pairs itself: the gateway's request to it, by hand."""
    instruction = PRODUCT_SEARCH_INSTRUCTION
    body = {"model": model, "queries": query, "documents": documents, "instruction": instruction}
    response = httpx.post(f"{url}/score", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def log_line(gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The gateway's log line for the request ``request_id`` (written after the answer: waited for)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in gateway.service.log_text().splitlines():
            if request_id in line:
                record: dict[str, Any] = json.loads(line)
                if record.get("event") == "request":
                    return record
        time.sleep(0.1)
    raise AssertionError(f"no log line for {request_id}")
