"""The score cache in the running gateway: real vLLM for exactness, a counting stand-in for single-flight,
a real Redis for the shared tier and its outage."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import keys as keylib
from gateway.cache import REDIS_PREFIX, SHARED_RETRY_S
from model_setup.fetch import MANIFEST_NAME
from tests.support.fake_vllm import FakeVllm, fake_vllm
from tests.support.procs import Service
from tests.support.stack import Gateway, GatewayStarter, Keys, Redis, Vllm

CACHE_ON = {"RERANK_SCORE_CACHE_MAX_BYTES": str(8 * 1024 * 1024)}
PRODUCTS = [
    "Salomon Speedcross 6 trail running shoe, size 42",
    "Cast iron skillet, 28 cm",
    "Nike Pegasus 40 road running shoe",
    "Merino wool hiking socks, 3 pairs",
    "Garmin Forerunner 265 GPS running watch",
    "Hoka Speedgoat 5 trail shoe",
]


@pytest.fixture(scope="module")
def cache_keys(artifacts: Path) -> Keys:
    raw: dict[str, str] = {}
    lines = []
    for key_id, options in (("shop-a", ""), ("shop-b", ""), ("no-cache", "cache=off")):
        raw[key_id], line = keylib.generate(key_id)
        lines.append(f"{line} {options}".strip())
    file = artifacts / "cache-keys"
    file.write_text("\n".join(lines) + "\n")
    return Keys(raw, file)


class Running:
    def __init__(self, service: Service, url: str) -> None:
        self.service = service
        self.url = url

    def post(
        self, key: str, body: dict[str, Any], route: str = "/v1/rerank"
    ) -> tuple[httpx.Response, dict[str, Any]]:
        """The response and the gateway's log line for it."""
        request_id = f"cache-{uuid.uuid4().hex}"
        response = httpx.post(
            f"{self.url}{route}",
            json=body,
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
            timeout=60,
        )
        return response, self.log_line(request_id)

    def log_line(self, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in self.service.log_text().splitlines():
                if request_id in line and (record := json.loads(line)).get("event") == "request":
                    return dict(record)
            time.sleep(0.05)
        raise AssertionError(f"no log line for {request_id}")


def running(gateway: Gateway) -> Running:
    return Running(gateway.service, gateway.url)


@pytest.fixture(scope="module")
def cached(vllm: Vllm, cache_keys: Keys, start_module_gateway: GatewayStarter) -> Running:
    return running(start_module_gateway("cache", vllm.url, CACHE_ON, keys=cache_keys))


def counts(line: dict[str, Any]) -> tuple[int, int, int]:
    return line["cache_hits"], line["cache_shared"], line["cache_misses"]


def test_a_partial_hit_equals_an_uncached_call(cached: Running, cache_keys: Keys) -> None:
    """Some pairs from the cache, the rest from vLLM in one call: the same scores and order as no cache."""
    key = cache_keys["shop-a"]
    query = f"trail running shoes {uuid.uuid4().hex[:6]}"
    uncached, line = cached.post(key, {"query": query, "documents": PRODUCTS, "cache": False})
    assert counts(line) == (0, 0, len(PRODUCTS))
    warm, _ = cached.post(key, {"query": query, "documents": [PRODUCTS[1], PRODUCTS[4]]})
    partial, line = cached.post(key, {"query": query, "documents": PRODUCTS})
    assert counts(line) == (2, 0, 4), "two pairs from the cache, four from vLLM"
    assert partial.json()["results"] == uncached.json()["results"], "exactly the same scores and order"
    scores = {r["index"]: r["relevance_score"] for r in partial.json()["results"]}
    assert [scores[1], scores[4]] == [
        r["relevance_score"] for r in sorted(warm.json()["results"], key=lambda r: r["index"])
    ]
    again, line = cached.post(key, {"query": query, "documents": PRODUCTS})
    assert counts(line) == (len(PRODUCTS), 0, 0)
    assert again.json()["results"] == uncached.json()["results"]
    assert line["upstream_ms"] == 0, "a full hit never calls vLLM"
    # Billing and token counts depend on the request alone: the cache shows in neither.
    assert again.json()["meta"] == partial.json()["meta"] == uncached.json()["meta"]
    assert line["input_tokens"] == uncached.json()["meta"]["tokens"]["input_tokens"] > 0
    assert "prompt_tokens_mismatch" not in cached.service.log_text(), "our counts are vLLM's, pair by pair"


def test_another_instruction_or_query_misses(cached: Running, cache_keys: Keys) -> None:
    key = cache_keys["shop-a"]
    query = f"running watch {uuid.uuid4().hex[:6]}"
    body = {"query": query, "documents": PRODUCTS[:3]}
    cached.post(key, body)
    assert counts(cached.post(key, body)[1]) == (3, 0, 0)
    assert counts(cached.post(key, {**body, "instruction": "Find gifts for runners"})[1]) == (0, 0, 3)
    assert counts(cached.post(key, {**body, "query": query + "!"})[1]) == (0, 0, 3)


def test_per_key_scope_does_not_share_between_keys(cached: Running, cache_keys: Keys) -> None:
    body = {"query": f"hiking socks {uuid.uuid4().hex[:6]}", "documents": PRODUCTS[:4]}
    cached.post(cache_keys["shop-a"], body)
    assert counts(cached.post(cache_keys["shop-a"], body)[1]) == (4, 0, 0)
    assert counts(cached.post(cache_keys["shop-b"], body)[1]) == (0, 0, 4), "shop-b cannot see shop-a's pairs"


def test_the_request_and_the_key_can_opt_out(cached: Running, cache_keys: Keys) -> None:
    body = {"query": f"gps watch {uuid.uuid4().hex[:6]}", "documents": PRODUCTS[:2]}
    cached.post(cache_keys["shop-a"], body)
    response, line = cached.post(cache_keys["shop-a"], {**body, "cache": False})
    assert response.status_code == 200
    assert counts(line) == (0, 0, 2)
    for _ in range(2):
        response, line = cached.post(cache_keys["no-cache"], body)
        assert counts(line) == (0, 0, 2), "a key with cache=off always reaches vLLM"
    v2, line = cached.post(
        cache_keys["shop-a"], {"model": "rerank-v3.5", **body, "cache": False}, route="/v2/rerank"
    )
    assert v2.status_code == 200
    assert counts(line) == (0, 0, 2)


def test_cached_pairs_are_billed_like_any_other(cached: Running, cache_keys: Keys) -> None:
    body = {"query": f"skillet {uuid.uuid4().hex[:6]}", "documents": PRODUCTS}
    first, _ = cached.post(cache_keys["shop-a"], body)
    second, line = cached.post(cache_keys["shop-a"], body)
    assert counts(line)[0] == len(PRODUCTS)
    assert (
        first.json()["meta"]["billed_units"] == second.json()["meta"]["billed_units"] == {"search_units": 1}
    )


def test_global_scope_shares_between_keys(
    vllm: Vllm, cache_keys: Keys, start_gateway: GatewayStarter
) -> None:
    gateway = running(
        start_gateway("cache-global", vllm.url, CACHE_ON, keys=cache_keys, RERANK_SCORE_CACHE_SCOPE="global")
    )
    body = {"query": "trail shoes", "documents": PRODUCTS}
    gateway.post(cache_keys["shop-a"], body)
    assert counts(gateway.post(cache_keys["shop-b"], body)[1]) == (len(PRODUCTS), 0, 0)


@pytest.fixture
def slow_stand_in() -> Iterator[FakeVllm]:
    with fake_vllm() as server:
        server.mode = "slow"
        server.slow_seconds = 0.5
        yield server


def test_identical_concurrent_requests_reach_vllm_once(
    slow_stand_in: FakeVllm, cache_keys: Keys, start_gateway: GatewayStarter
) -> None:
    gateway = running(start_gateway("cache-flight", slow_stand_in.url, CACHE_ON, keys=cache_keys))
    body = {"query": "running shoes", "documents": PRODUCTS[:5]}
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: gateway.post(cache_keys["shop-a"], body), range(20)))
    assert slow_stand_in.score_calls == 1, "20 identical requests in flight together: one upstream call"
    assert {r.status_code for r, _ in results} == {200}
    assert len({json.dumps(r.json()["results"]) for r, _ in results}) == 1
    assert sorted(counts(line)[2] for _, line in results) == [0] * 19 + [5]
    assert sum(counts(line)[1] for _, line in results) == 19 * 5


def _redis_keys(redis: Redis) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "--scan", "--pattern", f"{REDIS_PREFIX}*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.split())


def _other_model(model_dir: Path, tmp_path: Path) -> Path:
    """The same files under another manifest: how a new revision of the snapshot looks to the gateway."""
    other = tmp_path / "other-model"
    other.mkdir()
    for path in model_dir.iterdir():
        if path.name != MANIFEST_NAME:
            (other / path.name).symlink_to(path)
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    manifest["revision"] = "0" * 40
    (other / MANIFEST_NAME).write_text(json.dumps(manifest))
    return other


@pytest.fixture
def stand_in() -> Iterator[FakeVllm]:
    with fake_vllm() as server:
        yield server


def test_shared_tier_across_replicas_model_identity_and_redis_outage(
    stand_in: FakeVllm,
    redis_server: Redis,
    model_dir: Path,
    cache_keys: Keys,
    start_gateway: GatewayStarter,
    tmp_path: Path,
) -> None:
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "flushall"], check=True, capture_output=True)
    shared = {"RERANK_REDIS_URL": redis_server.url, "RERANK_SCORE_CACHE_REDIS_TTL_S": "300", **CACHE_ON}
    key = cache_keys["shop-a"]
    a = running(start_gateway("shared-a", stand_in.url, shared, keys=cache_keys))
    b = running(start_gateway("shared-b", stand_in.url, shared, keys=cache_keys))
    other = running(
        start_gateway(
            "shared-other-model",
            stand_in.url,
            shared,
            keys=cache_keys,
            model_dir=_other_model(model_dir, tmp_path),
        )
    )
    body = {"query": "trail shoes", "documents": PRODUCTS}
    scored, line = a.post(key, body)
    assert counts(line) == (0, 0, 6)
    deadline = time.monotonic() + 5
    while _redis_keys(redis_server) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # written in the background, after the response
    assert _redis_keys(redis_server) == 6
    calls = stand_in.score_calls
    from_redis, line = b.post(key, body)
    assert counts(line) == (6, 0, 0), "the other replica reads the shared tier"
    assert stand_in.score_calls == calls
    assert from_redis.json()["meta"]["tokens"] == scored.json()["meta"]["tokens"], "pairs keep their counts"
    assert counts(other.post(key, body)[1]) == (0, 0, 6), "another model identity never reads these pairs"

    redis_server.service.stop()
    try:
        started = time.monotonic()
        response, line = a.post(key, {"query": "road shoes", "documents": PRODUCTS})
        assert response.status_code == 200, "a Redis outage bypasses the tier"
        assert counts(line) == (0, 0, 6)
        assert time.monotonic() - started < 2
        response, line = b.post(key, {"query": "road shoes 2", "documents": PRODUCTS})
        assert response.status_code == 200
        assert "score_cache_shared_tier_unavailable" in a.service.log_text()
    finally:
        redis_server.start()
    time.sleep(SHARED_RETRY_S + 0.5)  # the tier is skipped this long after a failure, then tried again
    body = {"query": "recovered shoes", "documents": PRODUCTS}
    assert counts(a.post(key, body)[1]) == (0, 0, 6)
    deadline = time.monotonic() + 5
    while _redis_keys(redis_server) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _redis_keys(redis_server) == 6, "writes reach Redis again (it restarted empty)"
    assert counts(b.post(key, body)[1]) == (6, 0, 0), "and reads come from it"
    assert "score_cache_shared_tier_recovered" in a.service.log_text()
