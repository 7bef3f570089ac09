"""The fast path answers exactly as Litestar does: the same request to `/v2/rerank` (fast path) and to
`/v2/rerank/` (Litestar's router serves the trailing-slash form) gets the same status, headers and body. Its
body reader takes a client's hang-up for what it is (a 499), shown on the app itself without a server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import keys
from gateway.settings import Settings
from tests.support.fake_vllm import FakeVllm, fake_vllm
from tests.support.stack import GatewayStarter, Keys

MAX_BODY = 4096
COMPARED_HEADERS = ("content-type", "retry-after", "allow", "ratelimit", "ratelimit-policy")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[FakeVllm]:
    with fake_vllm() as server:
        yield server


@pytest.fixture(scope="module")
def url(stand_in: FakeVllm, start_module_gateway: GatewayStarter) -> str:
    return start_module_gateway("fastpath", stand_in.url, RERANK_MAX_BODY_BYTES=str(MAX_BODY)).url


def _answer(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("id", None)  # the request id differs per request
    headers = {name: response.headers[name] for name in COMPARED_HEADERS if name in response.headers}
    return response.status_code, headers, body


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    (
        "v2 ok",
        "/v2/rerank",
        {},
        json.dumps({"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}).encode(),
    ),
    (
        "v1 objects",
        "/v1/rerank",
        {},
        json.dumps(
            {
                "query": "q",
                "documents": [{"title": "x", "text": "y"}, "z"],
                "rank_fields": ["title"],
                "return_documents": True,
                "top_n": 1,
            }
        ).encode(),
    ),
    ("jina route", "/rerank", {}, json.dumps({"query": "q", "documents": ["a"]}).encode()),
    (
        "jina objects, threshold, truncation",
        "/rerank",
        {},
        json.dumps(
            {
                "model": "rerank-v3.5",
                "query": "q",
                "documents": ["a", {"text": "b", "sku": "1"}],
                "top_n": 1,
                "score_threshold": 0,
                "max_tokens_per_doc": 4,
            }
        ).encode(),
    ),
    (
        "jina truncation and chunking",
        "/rerank",
        {},
        json.dumps(
            {"query": "q", "documents": ["a"], "max_tokens_per_doc": 4, "max_chunks_per_doc": 2}
        ).encode(),
    ),
    (
        "v1 fusion",
        "/v1/rerank",
        {},
        json.dumps(
            {"query": "q", "documents": [{"text": "a", "ctr": 0.1}, {"text": "b", "ctr": 0.3}], "top_n": 1}
            | {"fusion": {"fields": {"ctr": 0.5}}}
        ).encode(),
    ),
    (
        "fusion field missing",
        "/v1/rerank",
        {},
        json.dumps({"query": "q", "documents": [{"text": "a"}], "fusion": {"fields": {"ctr": 0.5}}}).encode(),
    ),
    ("no key", "/v2/rerank", {"authorization": ""}, b"{}"),
    ("bad key", "/v2/rerank", {"authorization": "Bearer rk_nope"}, b"{}"),
    ("not bearer", "/v1/rerank", {"authorization": "Basic abc"}, b"{}"),
    ("media type", "/v1/rerank", {"content-type": "text/plain"}, b"{}"),
    ("not json", "/v1/rerank", {}, b"{nope"),
    ("wrong type", "/v2/rerank", {}, json.dumps({"model": "m", "query": 1, "documents": []}).encode()),
    (
        "unknown model",
        "/v2/rerank",
        {},
        json.dumps({"model": "gpt", "query": "q", "documents": ["a"]}).encode(),
    ),
    ("empty documents", "/v1/rerank", {}, json.dumps({"query": "q", "documents": []}).encode()),
    ("too large", "/v1/rerank", {}, json.dumps({"query": "q", "documents": ["x" * MAX_BODY]}).encode()),
]


@pytest.mark.parametrize(("name", "path", "headers", "body"), CASES, ids=[case[0] for case in CASES])
def test_fast_path_and_litestar_answer_alike(
    url: str, api_keys: Keys, name: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    sent = {"authorization": f"Bearer {api_keys['shop-a']}", "content-type": "application/json", **headers}
    sent = {key: value for key, value in sent.items() if value}
    fast = httpx.post(f"{url}{path}", content=body, headers=sent, timeout=30)
    routed = httpx.post(f"{url}{path}/", content=body, headers=sent, timeout=30)
    assert _answer(fast) == _answer(routed)
    assert fast.headers["x-request-id"] == fast.json()["id"]


def test_upstream_errors_alike(url: str, stand_in: FakeVllm, api_keys: Keys) -> None:
    sent = {"authorization": f"Bearer {api_keys['shop-a']}", "content-type": "application/json"}
    body = {"model": "rerank-v3.5", "query": "upstream", "documents": ["a"]}
    stand_in.mode = "drop"
    try:
        fast = httpx.post(f"{url}/v2/rerank", json=body, headers=sent, timeout=30)
        routed = httpx.post(f"{url}/v2/rerank/", json=body, headers=sent, timeout=30)
    finally:
        stand_in.mode = "ok"
    assert fast.status_code == 503
    assert _answer(fast) == _answer(routed)


def test_other_methods_still_get_litestars_405(url: str) -> None:
    response = httpx.get(f"{url}/v2/rerank")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert set(response.json()) == {"id", "message"}


@pytest.mark.unit
def test_a_client_hanging_up_mid_upload_is_a_499_not_a_500(model_dir: Path) -> None:
    """Litestar reports the disconnect as a server error; we log it as the client's doing."""
    import asyncio  # noqa: PLC0415

    from gateway.app import create_app  # noqa: PLC0415

    raw, line = keys.generate("k")
    app = create_app(Settings(model_dir=model_dir, api_keys=line, upstream_url="http://127.0.0.1:9"))  # type: ignore[arg-type]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/rerank", "raw_path": b"/v1/rerank", "query_string": b"", "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {raw}".encode()),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    events = iter(
        [{"type": "http.request", "body": b'{"query": "q", ', "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict[str, object]] = []

    async def receive() -> object:
        return next(events)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 499
