"""vLLM stopped under a running gateway: /ready fails, rerank answers 503 clearly; both recover with vLLM."""

from __future__ import annotations

import httpx

from tests.conftest import Gateway, Keys, Vllm


def test_vllm_down_then_back(vllm: Vllm, gateway: Gateway, api_keys: Keys) -> None:
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    body = {"query": "trail running shoes", "documents": ["Salomon Speedcross 6", "Cast iron skillet"]}
    assert httpx.post(f"{gateway.url}/v1/rerank", json=body, headers=headers, timeout=60).status_code == 200

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
    finally:
        vllm.start()  # later tests share this vLLM

    assert httpx.get(f"{gateway.url}/ready", timeout=10).status_code == 200
    again = httpx.post(f"{gateway.url}/v1/rerank", json=body, headers=headers, timeout=60)
    assert again.status_code == 200
    assert len(again.json()["results"]) == 2
