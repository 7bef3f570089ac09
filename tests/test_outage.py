"""vLLM stopped under a running gateway: /ready fails, rerank answers 503 clearly; both recover with vLLM. The
503s cost a limited key nothing, in either rate-limit store (the refund)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from gateway import keys as keylib
from tests.support.procs import Service
from tests.support.ratelimit import LIMITS, post, remaining
from tests.support.stack import Gateway, GatewayStarter, Keys, Redis, Vllm


@pytest.fixture(scope="module")
def limited(
    vllm: Vllm, redis_server: Redis, artifacts: Path, start_module_gateway: GatewayStarter
) -> list[tuple[Service, str, str]]:
    """A gateway per rate-limit store on the session vLLM, each with one limited key: (service, url, key)."""
    raw, line = keylib.generate("outage")
    keys = Keys({"outage": raw}, artifacts / "outage-keys")
    keys.file.write_text(f"{line} {LIMITS}\n")
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "flushall"], check=True, capture_output=True)
    redis = {"RERANK_RATE_LIMIT_STORE": "redis", "RERANK_REDIS_URL": redis_server.url}
    started = [
        start_module_gateway(f"outage-{name}", vllm.url, extra, keys=keys)
        for name, extra in (("memory", {}), ("redis", redis))
    ]
    return [(gateway.service, gateway.url, raw) for gateway in started]


def test_vllm_down_then_back(
    vllm: Vllm, gateway: Gateway, api_keys: Keys, limited: list[tuple[Service, str, str]]
) -> None:
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    body = {"query": "trail running shoes", "documents": ["Salomon Speedcross 6", "Cast iron skillet"]}
    assert httpx.post(f"{gateway.url}/v1/rerank", json=body, headers=headers, timeout=60).status_code == 200
    for _, url, key in limited:
        served = post(url, key)
        assert served.status_code == 200, served.text
        assert remaining(served) == {"rpm": 5, "units": 5}

    vllm.service.stop()
    try:
        ready = httpx.get(f"{gateway.url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["message"] == "the model server is not ready"
        response = httpx.post(f"{gateway.url}/v1/rerank", json=body, headers=headers, timeout=30)
        assert response.status_code == 503
        assert set(response.json()) == {"id", "message"}
        assert response.json()["message"] == "the model server is unavailable; retry shortly"
        assert response.headers["retry-after"] == "5"
        assert httpx.get(f"{gateway.url}/health").status_code == 200
        for _, url, key in limited:  # the SDK would retry twice: none of it counts
            failed = [post(url, key) for _ in range(3)]
            assert [response.status_code for response in failed] == [503] * 3
            # Each shows its own charge at admission; the same every time, as each was given back.
            assert remaining(failed[0]) == remaining(failed[1]) == remaining(failed[2])
            assert remaining(failed[0])["units"] < 6, "charged at admission (6 is the full allowance)"
    finally:
        vllm.start()  # later tests share this vLLM

    assert httpx.get(f"{gateway.url}/ready", timeout=10).status_code == 200
    again = httpx.post(f"{gateway.url}/v1/rerank", json=body, headers=headers, timeout=60)
    assert again.status_code == 200
    assert len(again.json()["results"]) == 2
    for service, _, _ in limited:
        assert '"refunded": true' in service.log_text()
