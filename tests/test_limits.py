"""Per-key limits, exact across two gateway replicas sharing a real Redis; failure modes when Redis dies."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest

from gateway import keys as keylib
from tests.support.fake_vllm import FakeVllm, fake_vllm
from tests.support.procs import Service
from tests.support.stack import GatewayStarter, Keys, Redis, Vllm, gateway_env

KEY_LIMITS = {
    "hammer": "rpm=60",
    "bystander": "",
    "units5": "units_per_minute=5",
    "retry": "rpm=60",
    "strict": "rpm=1",
    "conc2": "concurrency=2",
    "failmode": "rpm=1000",
}


@pytest.fixture(scope="module")
def limit_keys(artifacts: Path) -> Keys:
    raw: dict[str, str] = {}
    lines = []
    for key_id, options in KEY_LIMITS.items():
        raw[key_id], line = keylib.generate(key_id)
        lines.append(f"{line} {options}".strip())
    file = artifacts / "limit-keys"
    file.write_text("\n".join(lines) + "\n")
    return Keys(raw, file)


@pytest.fixture(scope="module")
def replicas(
    vllm: Vllm, redis_server: Redis, limit_keys: Keys, start_module_gateway: GatewayStarter
) -> dict[str, tuple[Service, str]]:
    """Two fail-open replicas and one fail-closed gateway, all on one Redis and the real vLLM."""
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "flushall"], check=True, capture_output=True)
    redis = {"RERANK_RATE_LIMIT_STORE": "redis", "RERANK_REDIS_URL": redis_server.url}
    started: dict[str, tuple[Service, str]] = {}
    for name, mode in (("a", "open"), ("b", "open"), ("closed", "closed")):
        gateway = start_module_gateway(name, vllm.url, redis, keys=limit_keys, RERANK_REDIS_FAILURE_MODE=mode)
        started[name] = gateway.service, gateway.url
    return started


def post(url: str, key: str, documents: list[str] | None = None, timeout: float = 60) -> httpx.Response:
    body = {"query": "running shoes", "documents": documents or ["Nike Pegasus 40", "cast iron pan"]}
    return httpx.post(
        f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


def test_exact_across_replicas(replicas: dict[str, tuple[Service, str]], limit_keys: Keys) -> None:
    """20 clients hammer one 60/min key through two replicas for 6 s: admitted <= burst (60) + refill (6),
    every refusal is a 429 with Retry-After and RateLimit headers, and another key is never refused."""
    urls = [replicas["a"][1], replicas["b"][1]]
    hammer, bystander = limit_keys["hammer"], limit_keys["bystander"]
    deadline = time.monotonic() + 6.0
    started = time.monotonic()
    statuses: list[int] = []
    bad_refusals: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                url = urls[n % 2]
                response = http.post(
                    f"{url}/v1/rerank",
                    json={"query": "shoes", "documents": ["a"]},
                    headers={"Authorization": f"Bearer {hammer}"},
                )
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 429 and not (
                        int(response.headers.get("retry-after", "0")) >= 1
                        and response.headers.get("ratelimit-policy") == '"rpm";q=60;w=60'
                        and response.headers.get("ratelimit", "").startswith('"rpm";r=0;t=')
                        and "may send 60 requests per minute" in response.json()["message"]
                    ):
                        bad_refusals.append(f"{dict(response.headers)} {response.text}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=21) as pool:
        futures = [pool.submit(client, n) for n in range(20)]
        bystander_statuses = [post(urls[i % 2], bystander).status_code for i in range(5)]
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0
    assert admitted <= 60 + int(elapsed) + 1, f"{admitted} admitted in {elapsed:.1f}s"
    assert admitted >= 60, "the burst itself must be admitted"
    assert not bad_refusals, bad_refusals[:2]
    assert bystander_statuses == [200] * 5


def test_headers_on_success_and_units_counting(
    replicas: dict[str, tuple[Service, str]], limit_keys: Keys
) -> None:
    """250 short documents are 3 search units; a 5-units/min key is refused its sixth unit."""
    url = replicas["a"][1]
    many = post(url, limit_keys["bystander"], [f"product {i}" for i in range(250)])
    assert many.status_code == 200
    assert many.json()["meta"]["billed_units"]["search_units"] == 3
    assert "ratelimit" not in many.headers  # an unlimited key advertises no policy

    units = limit_keys["units5"]
    first = post(url, units)
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == '"units";q=5;w=60;qu="search-units"'
    assert first.headers["ratelimit"].startswith('"units";r=4;t=')
    for _ in range(4):
        assert post(replicas["b"][1], units).status_code == 200
    sixth = post(url, units)
    assert sixth.status_code == 429
    assert "may use 5 search units per minute and this request needs 1" in sixth.json()["message"]
    assert int(sixth.headers["retry-after"]) >= 1
    too_big = post(url, units, [f"p{i}" for i in range(600)])
    assert too_big.status_code == 400, "a request that can never fit is not a rate-limit matter"
    assert "needs 6 search units" in too_big.json()["message"]
    assert too_big.headers["ratelimit-policy"] == '"units";q=5;w=60;qu="search-units"'


def test_cohere_sdk_raises_too_many_requests(
    replicas: dict[str, tuple[Service, str]], limit_keys: Keys
) -> None:
    url, key = replicas["b"][1], limit_keys["strict"]  # 1 request per minute: the second is refused
    with cohere.Client(api_key=key, base_url=url, max_retries=0) as client:
        client.rerank(query="shoes", documents=["a", "b"])
        with pytest.raises(cohere.TooManyRequestsError) as raised:
            client.rerank(query="shoes", documents=["a", "b"])
    assert raised.value.status_code == 429
    assert isinstance(raised.value.body, dict)
    assert "may send 1 requests per minute" in raised.value.body["message"]
    assert 55 <= int((raised.value.headers or {})["retry-after"]) <= 60


def test_cohere_sdk_retries_after_the_advertised_wait(
    replicas: dict[str, tuple[Service, str]], limit_keys: Keys
) -> None:
    """With its default retries the SDK waits Retry-After (1 s for a 60/min key) and then succeeds.
    The burst is spent right before the call; should a refill land in between (a 1 s cycle), try again."""
    url, key = replicas["b"][1], limit_keys["retry"]
    attempts: list[tuple[float, int, str | None]] = []

    def record(response: httpx.Response) -> None:
        attempts.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))

    with httpx.Client(event_hooks={"response": [record]}, timeout=60) as http:
        client = cohere.Client(api_key=key, base_url=url, httpx_client=http)
        for _ in range(5):
            while post(url, key).status_code == 200:  # spend the burst
                pass
            attempts.clear()
            response = client.rerank(query="shoes", documents=["a", "b"])
            assert len(response.results) == 2
            if attempts[0][1] == 429:
                break
        statuses = [status for _, status, _ in attempts]
        assert statuses[0] == 429, "the first attempt must have met the limit"
        assert statuses[-1] == 200
        assert attempts[0][2] == "1"
        assert attempts[-1][0] - attempts[0][0] >= 0.9, "the SDK waited the advertised Retry-After"


def test_redis_down_fail_open_and_fail_closed_then_recovery(
    replicas: dict[str, tuple[Service, str]], redis_server: Redis, limit_keys: Keys
) -> None:
    key = limit_keys["failmode"]
    open_service, open_url = replicas["a"]
    closed_url = replicas["closed"][1]
    assert post(open_url, key).status_code == 200
    assert post(closed_url, key).status_code == 200

    redis_server.service.stop()
    try:
        served = post(open_url, key)
        assert served.status_code == 200, "fail-open keeps serving"
        assert "ratelimit" not in served.headers
        refused = post(closed_url, key)
        assert refused.status_code == 503
        assert refused.json()["message"] == "rate limiting is unavailable; retry shortly"
        assert refused.headers["retry-after"] == "1"
        assert "rate_limit_store_unavailable" in open_service.log_text()
        assert '"limit": "fail_open"' in open_service.log_text()
    finally:
        redis_server.start()

    recovered_open = post(open_url, key)
    assert recovered_open.status_code == 200
    assert "ratelimit" in recovered_open.headers, "limits apply again without a restart"
    assert post(closed_url, key).status_code == 200


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeVllm]:
    with fake_vllm() as server:
        server.mode = "slow"
        server.slow_seconds = 2.0
        yield server


def test_concurrency_limit(
    slow_upstream: FakeVllm, redis_server: Redis, limit_keys: Keys, start_gateway: GatewayStarter
) -> None:
    """N+1 slow requests on a key limited to N in flight: one is refused at once, the others finish."""
    url = start_gateway(
        "concurrency",
        slow_upstream.url,
        keys=limit_keys,
        RERANK_RATE_LIMIT_STORE="redis",
        RERANK_REDIS_URL=redis_server.url,
    ).url
    key = limit_keys["conc2"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(post, url, key, ["a"], 30) for _ in range(3)]
        results = [future.result() for future in futures]
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 429]
    refused = next(r for r in results if r.status_code == 429)
    assert "may have 2 requests in flight" in refused.json()["message"]
    assert refused.elapsed.total_seconds() < 1.5, "refused at once, not after waiting"
    assert post(url, key, ["a"], 30).status_code == 200, "slots come back when requests finish"


@pytest.mark.unit
def test_many_workers_with_the_in_process_store_refuse_to_start(model_dir: Path, limit_keys: Keys) -> None:
    env = gateway_env(model_dir, limit_keys, "http://127.0.0.1:9", RERANK_WORKERS="2")
    done = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "RERANK_RATE_LIMIT_STORE=redis" in done.stderr
    assert "multiply each key's limits" in done.stderr
