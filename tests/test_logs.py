"""One JSON line per request with the fields operators need, and no query, document or key material."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.support.stack import Gateway, Keys, log_line

SECRET_QUERY = "query-text-that-must-not-be-logged"
SECRET_DOC = "document-text-that-must-not-be-logged"
SECRET_INSTRUCTION = "instruction-text-that-must-not-be-logged"


def test_canonical_line_fields_and_no_secrets(gateway: Gateway, api_keys: Keys) -> None:
    request_id = f"test-{uuid.uuid4()}"
    key = api_keys["shop-b"]
    response = httpx.post(
        f"{gateway.url}/v1/rerank",
        json={
            "query": SECRET_QUERY,
            "documents": [SECRET_DOC, "b", "c"],
            "top_n": 2,
            "instruction": SECRET_INSTRUCTION,
        },
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert response.json()["id"] == request_id

    line = log_line(gateway, request_id)
    assert line["event"] == "request"
    assert line["key_id"] == "shop-b"
    assert line["route"] == "/v1/rerank"
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert line["documents"] == 3
    assert line["top_n"] == 2
    assert line["chunks"] == 3
    assert line["search_units"] == 1
    assert line["limit"] == "unlimited"  # the rate-limit decision; this key has no limits
    assert line["duration_ms"] >= line["upstream_ms"] > 0
    assert "timestamp" in line
    assert line["level"] == "info"

    failed_id = f"test-{uuid.uuid4()}"
    httpx.post(
        f"{gateway.url}/v1/rerank",
        json={"query": SECRET_QUERY, "documents": [SECRET_DOC]},
        headers={"Authorization": f"Bearer {key}x", "X-Request-ID": failed_id},
    )
    failed = log_line(gateway, failed_id)
    assert failed["status"] == 401
    assert failed["error"] == "invalid_api_key"
    assert "key_id" not in failed

    text = gateway.service.log_text()
    for secret in (SECRET_QUERY, SECRET_DOC, SECRET_INSTRUCTION, *api_keys.raw.values(), "Bearer"):
        assert secret not in text
    for raw_line in text.splitlines():
        json.loads(raw_line)  # every line, the server's own included, is JSON


def test_request_id_generated_when_absent_or_unsafe(gateway: Gateway) -> None:
    generated = httpx.get(f"{gateway.url}/health")
    assert len(generated.headers["x-request-id"]) == 32
    for unsafe in (b"a b", b"x" * 200, b'a"}{"injected": 1', "\u00e9t\u00e9".encode()):
        response = httpx.get(f"{gateway.url}/health", headers={b"X-Request-ID": unsafe})
        assert response.headers["x-request-id"].encode() != unsafe
        assert len(response.headers["x-request-id"]) == 32
