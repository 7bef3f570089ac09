"""Quota refund: a request that fails because of vLLM (502, 503, 504) gives back the request and the search
units it was charged, in the in-process store and in Redis, so the SDK's retries of an outage cost nothing.
A stopped real vLLM is in tests/test_outage.py (one outage for the suite); here a stand-in answers 500,
drops the connection or is too slow, and the stores are driven directly."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import keys as keylib
from gateway.limits import KeyLimits, Limiter, MemoryStore, RedisStore
from tests.support.fake_vllm import FakeVllm, Mode, fake_vllm
from tests.support.ratelimit import LIMITS, post, remaining
from tests.support.stack import GatewayStarter, Keys, Redis


@pytest.fixture(scope="module")
def refund_keys(artifacts: Path) -> Keys:
    raw: dict[str, str] = {}
    lines = []
    for key_id in ("faults-error500", "faults-slow", "faults-drop"):
        raw[key_id], line = keylib.generate(key_id)
        lines.append(f"{line} {LIMITS}")
    file = artifacts / "refund-keys"
    file.write_text("\n".join(lines) + "\n")
    return Keys(raw, file)


@pytest.fixture(scope="module")
def faulty(refund_keys: Keys, start_module_gateway: GatewayStarter) -> Iterator[tuple[FakeVllm, str]]:
    with fake_vllm() as upstream:
        gateway = start_module_gateway(
            "refund-faults", upstream.url, keys=refund_keys, RERANK_UPSTREAM_TIMEOUT_S="1"
        )
        yield upstream, gateway.url


@pytest.mark.parametrize(("mode", "status"), [("error500", 502), ("slow", 504), ("drop", 503)])
def test_every_upstream_failure_is_refunded_and_a_rejection_is_not(
    faulty: tuple[FakeVllm, str], refund_keys: Keys, mode: Mode, status: int
) -> None:
    upstream, url = faulty
    key = refund_keys[f"faults-{mode}"]  # a key each: 10 units a minute are enough for one case
    before = remaining(post(url, key))
    upstream.mode = mode
    try:
        failed = post(url, key)
    finally:
        upstream.mode = "ok"
    assert failed.status_code == status, failed.text
    after = post(url, key)
    assert after.status_code == 200
    assert remaining(after) == {"rpm": before["rpm"] - 1, "units": before["units"] - 1}
    upstream.mode = "error400"  # the input's fault, not vLLM's: the charge stands
    try:
        assert post(url, key).status_code == 400
    finally:
        upstream.mode = "ok"
    assert remaining(post(url, key))["units"] == before["units"] - 3


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_refund_is_the_exact_inverse_of_an_admission(store: str, redis_server: Redis) -> None:
    async def run() -> None:
        backend = (
            MemoryStore()
            if store == "memory"
            else RedisStore(redis_server.url, timeout_s=1, in_flight_ttl_s=60)
        )
        limiter = Limiter(backend, fail_open=False)
        limits = KeyLimits(rpm=7, units_per_minute=13)
        try:
            first = await limiter.admit(f"exact-{store}", limits, 5)
            for _ in range(20):  # far more than the key could afford without the refunds
                await limiter.refund(await limiter.admit(f"exact-{store}", limits, 5))
            await limiter.refund(first)
            await limiter.refund(first)  # a second refund of one admission gives nothing more
            decision = await backend.admit(f"exact-{store}", limits, 13, "t")
            assert decision.allowed, "the whole allowance is back, and no more"
            assert decision.state["units"][0] == 0
            assert decision.state["rpm"][0] == 6
        finally:
            await limiter.aclose()

    if store == "redis":
        subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "flushall"], check=True, capture_output=True
        )
    asyncio.run(run())
