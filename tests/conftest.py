"""The suite's fixtures: one real vLLM (CPU, tiny Qwen3 model), one real gateway and one Redis for the whole
run; the image, a browser and gateways of a test's own when asked for; and the guard that keeps the `unit`
tier free of all of them. What they are made of is in tests/support/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from gateway import keys as keylib
from model_setup.tiny import write_tiny_model
from tests.support import procs
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.containers import build_image
from tests.support.procs import (
    ROOT,
    Service,
    free_port,
    vllm_service,
)
from tests.support.quantise import write_quantised
from tests.support.reference import CardReranker
from tests.support.stack import (
    SERVED_NAME,
    TEST_MAX_MODEL_LEN,
    Gateway,
    GatewayStarter,
    Keys,
    Redis,
    Vllm,
    gateway_env,
)

# Fixtures that start a server (vLLM, a gateway, Redis, the image or a container, a browser). A test marked
# `unit` may not use any of them, directly or through another fixture.
SERVER_FIXTURES = frozenset(
    {"vllm", "gateway", "redis_server", "image", "browser", "start_gateway", "start_module_gateway"}
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The `unit` tier's promise, checked before any fixture runs: a `unit` test that would start a server
    fails at set-up and names the fixtures that would have."""
    if item.get_closest_marker("unit") is None:
        return
    servers = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if servers:
        pytest.fail(
            f"{item.nodeid} is marked unit (needs no server) but uses {', '.join(servers)}: "
            "drop the marker or the fixture",
            pytrace=False,
        )


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
def second_model_dir(model_dir: Path) -> Path:
    """Another tiny model beside it: the same architecture and tokenizer, other weights (seed 1), for a
    fleet of two; readable by the containers' uids."""
    path = write_tiny_model(model_dir.with_name("tiny-seed1"), seed=1)
    for item in (path, *path.iterdir()):
        item.chmod(0o755 if item.is_dir() else 0o644)
    return path


@pytest.fixture(scope="session")
def quantised_model_dir(model_dir: Path) -> Path:
    """The tiny model in INT8 W8A8 (compressed-tensors, lm_head kept), made once beside it; readable by the
    containers' uids, which mount it as a shop mounts a snapshot volume."""
    path = write_quantised(model_dir, model_dir.with_name(f"{model_dir.name}-w8a8"))
    for item in (path, *path.iterdir()):
        item.chmod(0o755 if item.is_dir() else 0o644)
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


@pytest.fixture(scope="session")
def gateway(vllm: Vllm, model_dir: Path, api_keys: Keys, artifacts: Path) -> Iterator[Gateway]:
    try:
        service, url = procs.start_gateway("", artifacts, gateway_env(model_dir, api_keys, vllm.url))
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"gateway did not start: {exc}\n{(artifacts / 'gateway.log').read_text()[-4000:]}")
    yield Gateway(service, url)
    service.stop()


@pytest.fixture
def start_gateway(model_dir: Path, api_keys: Keys, artifacts: Path) -> Iterator[GatewayStarter]:
    """Gateways of this test's own, each saying only what differs from `gateway_env`:
    ``start_gateway("drain", vllm.url, RERANK_DRAIN_TIMEOUT_S="20")`` (tests/support/stack.py). Every one it
    started is stopped after the test."""
    with GatewayStarter(model_dir, api_keys, artifacts) as start:
        yield start


@pytest.fixture(scope="module")
def start_module_gateway(model_dir: Path, api_keys: Keys, artifacts: Path) -> Iterator[GatewayStarter]:
    """`start_gateway` for module-scoped fixtures: what it started is stopped after the module."""
    with GatewayStarter(model_dir, api_keys, artifacts) as start:
        yield start


@pytest.fixture(scope="session")
def card(model_dir: Path) -> CardReranker:
    return CardReranker(model_dir)


@pytest.fixture
def client(gateway: Gateway, api_keys: Keys) -> Iterator[cohere.Client]:
    """The real Cohere v1 SDK on the session gateway, no retries (tests see every status)."""
    with cohere.Client(api_key=api_keys["shop-a"], base_url=gateway.url, max_retries=0) as client:
        yield client


@pytest.fixture
def http(gateway: Gateway, api_keys: Keys) -> Iterator[httpx.Client]:
    """httpx on the session gateway with shop-a's key, for what the SDK does not send: other routes, raw
    bodies, fields it does not know. A module needing more (a longer timeout, a default header) overrides
    this fixture with one that takes it and adds that."""
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as client:
        yield client


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (scripts/system-deps.sh), one per module. Missing is a failure: the pages must be
    tested."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium (scripts/system-deps.sh)"
        )
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
