"""When vLLM misbehaves the gateway answers in Cohere's shape with 502/503/504, quickly, and keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_vllm import FakeVllm, Mode, fake_vllm
from tests.support.stack import GatewayStarter, Keys


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeVllm]:
    with fake_vllm() as server:
        yield server


@pytest.fixture(scope="module")
def faulty_gateway(upstream: FakeVllm, start_module_gateway: GatewayStarter) -> str:
    return start_module_gateway("faults", upstream.url, RERANK_UPSTREAM_TIMEOUT_S="1").url


FAULTS: list[tuple[Mode, int, str]] = [
    ("slow", 504, "did not answer in time"),
    ("drop", 503, "unavailable"),
    ("error500", 502, "failed (500)"),
    ("error400", 400, "the model rejected the input: prompt too long"),
    ("garbage", 502, "unreadable answer"),
    ("incomplete", 502, "incomplete answer"),
]


@pytest.mark.parametrize(("mode", "status", "message"), FAULTS)
def test_upstream_fault_is_mapped(
    upstream: FakeVllm, faulty_gateway: str, api_keys: Keys, mode: Mode, status: int, message: str
) -> None:
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    body = {"query": "shoes", "documents": ["a", "b", "c"]}
    upstream.mode = mode
    try:
        started = time.monotonic()
        response = httpx.post(f"{faulty_gateway}/v1/rerank", json=body, headers=headers, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        upstream.mode = "ok"
    assert response.status_code == status, response.text
    assert set(response.json()) == {"id", "message"}
    assert message in response.json()["message"]
    assert elapsed < 10, "a fault must not hang the client"
    if status in (502, 503, 504):
        assert "EngineCore" not in response.text  # vLLM internals stay internal
    healthy = httpx.post(f"{faulty_gateway}/v1/rerank", json=body, headers=headers, timeout=30)
    assert healthy.status_code == 200, "the gateway recovers as soon as vLLM does"
    assert [r["index"] for r in healthy.json()["results"]] == [0, 1, 2]


def test_ready_follows_upstream_health(upstream: FakeVllm, faulty_gateway: str) -> None:
    assert httpx.get(f"{faulty_gateway}/ready").status_code == 200
    upstream.mode = "not_ready"
    try:
        response = httpx.get(f"{faulty_gateway}/ready")
    finally:
        upstream.mode = "ok"
    assert response.status_code == 503
    assert response.json()["message"] == "the model server is not ready"
    assert httpx.get(f"{faulty_gateway}/health").status_code == 200, "/health never asks vLLM"


def test_the_upstream_request_carries_the_instruction(
    upstream: FakeVllm, faulty_gateway: str, api_keys: Keys
) -> None:
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    upstream.requests.clear()
    body = {"query": "shoes", "documents": ["a"], "instruction": "Find socks"}
    assert httpx.post(f"{faulty_gateway}/v1/rerank", json=body, headers=headers).status_code == 200
    sent = upstream.requests[-1]
    assert sent["instruction"] == "Find socks"
    assert sent["queries"] == "shoes"
    assert sent["documents"] == ["a"]
