"""Session fixtures: one real vLLM (CPU, tiny Qwen3 model) and one real gateway for the whole run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cohere
import pytest

from gateway import keys as keylib
from tests.containers import build_image
from tests.procs import ROOT, Service, free_port, gateway_service, vllm_service, wait_http
from tests.reference import CardReranker

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
        """The metrics port (tests/procs.py gives every gateway its own)."""
        return f"http://127.0.0.1:{self.service.env['RERANK_METRICS_PORT']}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = ROOT / "var" / "test-run"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The tiny model `make test` writes. Missing means the set-up did not run: fail, never skip."""
    path = Path(os.environ.get("RERANK_TEST_MODEL_DIR", ROOT / "var" / "models" / "tiny"))
    if not (path / "config.json").is_file():
        pytest.fail(f"tiny test model missing at {path}: run `make test` (it runs scripts/setup.sh)")
    return path


@pytest.fixture(scope="session")
def api_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    raw: dict[str, str] = {}
    lines = ["# test keys"]
    for key_id in ("shop-a", "shop-b"):
        raw[key_id], line = keylib.generate(key_id)
        lines.append(line)
    file = tmp_path_factory.mktemp("keys") / "keys"  # per session: a concurrent run cannot overwrite it
    file.write_text("\n".join(lines) + "\n")
    return Keys(raw, file)


@pytest.fixture(scope="session")
def vllm(model_dir: Path, artifacts: Path) -> Iterator[Vllm]:
    port = free_port()
    service = vllm_service(
        model_dir, port, artifacts / "vllm.log", served_name=SERVED_NAME, max_model_len=TEST_MAX_MODEL_LEN
    )
    server = Vllm(service, f"http://127.0.0.1:{port}")
    try:
        server.start()
    except Exception:
        service.stop()
        pytest.fail(f"vLLM did not start; last log lines:\n{service.log_text()[-4000:]}")
    yield server
    service.stop()


def gateway_env(model_dir: Path, keys: Keys, upstream: str, **extra: str) -> dict[str, str]:
    return {
        "RERANK_MODEL_DIR": str(model_dir),
        "RERANK_API_KEYS_FILE": str(keys.file),
        "RERANK_UPSTREAM_URL": upstream,
        "RERANK_SERVED_MODEL_NAME": SERVED_NAME,
        "RERANK_MAX_MODEL_LEN": str(TEST_MAX_MODEL_LEN),
        "RERANK_MAX_TOKENS_PER_DOC": str(TEST_MAX_TOKENS_PER_DOC),
        # Off unless a test turns it on: the suites below assert what happens when vLLM is asked (an outage is
        # a 503 even for a request scored before). tests/test_cache.py runs gateways with it on.
        "RERANK_SCORE_CACHE_MAX_BYTES": "0",
        **extra,
    }


@pytest.fixture(scope="session")
def gateway(vllm: Vllm, model_dir: Path, api_keys: Keys, artifacts: Path) -> Iterator[Gateway]:
    port = free_port()
    service = gateway_service(port, artifacts / "gateway.log", gateway_env(model_dir, api_keys, vllm.url))
    service.start()
    assert service.proc is not None
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=30, proc=service.proc)
    except Exception:
        service.stop()
        pytest.fail(f"gateway did not start:\n{service.log_text()[-4000:]}")
    yield Gateway(service, url)
    service.stop()


@pytest.fixture(scope="session")
def card(model_dir: Path) -> CardReranker:
    return CardReranker(model_dir)


@pytest.fixture
def client(gateway: Gateway, api_keys: Keys) -> Iterator[cohere.Client]:
    """The real Cohere v1 SDK on the session gateway, no retries (tests see every status)."""
    with cohere.Client(api_key=api_keys["shop-a"], base_url=gateway.url, max_retries=0) as client:
        yield client


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


@pytest.fixture(scope="session")
def redis_server(artifacts: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: scripts/test.sh installs it (scripts/system-deps.sh)")
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = Redis(Service("redis", command, {}, artifacts / "redis.log"), port)
    redis.start()
    yield redis
    redis.service.stop()


@pytest.fixture(scope="session")
def image(artifacts: Path) -> str:
    """The CPU flavour of the image, built by `scripts/image.sh build cpu` (layers cached between runs).
    No buildah or podman is a failure: scripts/system-deps.sh installs them."""
    for tool in ("buildah", "podman"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: scripts/test.sh installs it (scripts/system-deps.sh)")
    try:
        reference, seconds = build_image(artifacts / "image-build.log")
    except Exception as exc:
        pytest.fail(str(exc))
    (artifacts / "image-build-seconds").write_text(f"{seconds:.0f}\n")
    return reference
