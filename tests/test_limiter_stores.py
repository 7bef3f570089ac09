"""The two stores behind the limiter agree, decide exactly, and hold slots by per-admission tokens.
Redis is a real redis-server; nothing here needs vLLM."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator

import pytest

from gateway.errors import ApiError, ErrorKind
from gateway.limits import Admission, KeyLimits, Limiter, LimitStore, MemoryStore, RedisStore
from tests.support.stack import Redis


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(params=["memory", "redis"])
def store(
    request: pytest.FixtureRequest,
    loop: asyncio.AbstractEventLoop,
    redis_server: Redis,
) -> Iterator[LimitStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "flushall"], check=True, capture_output=True)
    redis = RedisStore(redis_server.url, timeout_s=1.0, in_flight_ttl_s=60)
    yield redis
    loop.run_until_complete(redis.aclose())


@pytest.mark.parametrize("rpm", [1, 7, 9, 13, 17, 60])
def test_a_full_burst_is_admitted_and_counted_exactly(
    store: LimitStore, loop: asyncio.AbstractEventLoop, rpm: int
) -> None:
    """Limits whose interval is not a whole number of microseconds (9, 13, ...) lose nothing to rounding."""
    limits = KeyLimits(rpm=rpm)
    remaining = []
    for i in range(rpm):
        decision = loop.run_until_complete(store.admit("k", limits, 1, f"t{i}"))
        assert decision.allowed, f"request {i + 1} of a {rpm}/min burst refused"
        remaining.append(decision.state["rpm"][0])
    assert remaining[0] == rpm - 1
    assert remaining[-1] == 0
    refused = loop.run_until_complete(store.admit("k", limits, 1, "over"))
    assert not refused.allowed
    assert refused.refused_by == "rpm"
    assert 0 < refused.retry_after_us <= 60_000_000 // rpm


def test_units_refusal_spends_nothing(store: LimitStore, loop: asyncio.AbstractEventLoop) -> None:
    limits = KeyLimits(rpm=9, units_per_minute=14)
    first = loop.run_until_complete(store.admit("k", limits, 10, "a"))
    assert first.allowed
    assert first.state["rpm"][0] == 8
    assert first.state["units"][0] == 4
    refused = loop.run_until_complete(store.admit("k", limits, 5, "b"))
    assert refused.refused_by == "units"
    assert refused.state["rpm"][0] == 8, "the refused request did not spend a request"
    assert refused.state["units"][0] == 4
    assert loop.run_until_complete(store.admit("k", limits, 4, "c")).allowed


def test_slots_are_held_by_admission_tokens(store: LimitStore, loop: asyncio.AbstractEventLoop) -> None:
    limits = KeyLimits(concurrency=2)
    assert loop.run_until_complete(store.admit("k", limits, 1, "one")).allowed
    assert loop.run_until_complete(store.admit("k", limits, 1, "two")).allowed
    third = loop.run_until_complete(store.admit("k", limits, 1, "three"))
    assert third.refused_by == "concurrency"
    loop.run_until_complete(store.release("k", "one"))
    loop.run_until_complete(store.release("k", "one"))  # releasing twice frees one slot, not two
    assert loop.run_until_complete(store.admit("k", limits, 1, "four")).allowed
    assert not loop.run_until_complete(store.admit("k", limits, 1, "five")).allowed


@pytest.mark.unit
def test_client_request_ids_cannot_share_a_slot(loop: asyncio.AbstractEventLoop) -> None:
    """The limiter mints its own token per admission: the same X-Request-ID twice still takes two slots."""
    limiter = Limiter(MemoryStore(), fail_open=True)
    limits = KeyLimits(concurrency=2)
    held = [loop.run_until_complete(limiter.admit("k", limits, 1)) for _ in range(2)]
    assert len({a.token for a in held}) == 2
    with pytest.raises(ApiError) as raised:
        loop.run_until_complete(limiter.admit("k", limits, 1))
    assert raised.value.kind is ErrorKind.RATE_LIMITED


@pytest.mark.unit
def test_rpm_precheck_refuses_without_asking_the_store(loop: asyncio.AbstractEventLoop) -> None:
    limiter = Limiter(MemoryStore(), fail_open=True)
    limits = KeyLimits(rpm=1)
    limiter.precheck("k", limits)
    loop.run_until_complete(limiter.admit("k", limits, 1))
    with pytest.raises(ApiError):
        loop.run_until_complete(limiter.admit("k", limits, 1))
    with pytest.raises(ApiError) as raised:
        limiter.precheck("k", limits)
    assert 55 <= int(raised.value.headers["Retry-After"]) <= 60
    assert raised.value.headers["RateLimit"].startswith('"rpm";r=0;t=')
    limiter.precheck("other", limits)  # other keys are untouched


def test_read_only_redis_is_a_store_failure_not_a_500(
    redis_server: Redis, loop: asyncio.AbstractEventLoop
) -> None:
    """After a failover the old primary answers READONLY: that is 'unavailable', handled by the mode."""
    cli = ["redis-cli", "-p", str(redis_server.port)]
    subprocess.run([*cli, "replicaof", "127.0.0.1", "1"], check=True, capture_output=True)
    try:
        for fail_open in (True, False):
            limiter = Limiter(
                RedisStore(redis_server.url, timeout_s=1.0, in_flight_ttl_s=60), fail_open=fail_open
            )
            if fail_open:
                admission = loop.run_until_complete(limiter.admit("k", KeyLimits(rpm=5), 1))
                assert admission == Admission("k", None)
            else:
                with pytest.raises(ApiError) as raised:
                    loop.run_until_complete(limiter.admit("k", KeyLimits(rpm=5), 1))
                assert raised.value.kind is ErrorKind.UPSTREAM_UNAVAILABLE
            loop.run_until_complete(limiter.aclose())
        assert limiter.counts["fail_closed"] == 1
    finally:
        subprocess.run([*cli, "replicaof", "no", "one"], check=True, capture_output=True)


def test_a_slow_redis_does_not_leak_the_slot(redis_server: Redis, loop: asyncio.AbstractEventLoop) -> None:
    """Redis busy past our timeout still runs the admission later; the fail-open path gives the slot back."""
    cli = ["redis-cli", "-p", str(redis_server.port)]
    subprocess.run([*cli, "flushall"], check=True, capture_output=True)
    busy_script = (
        "local function us() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end "
        "local s = us() while us() - s < 1000000 do end return 1"
    )
    busy = threading.Thread(target=subprocess.run, args=([*cli, "eval", busy_script, "0"],), daemon=True)
    limiter = Limiter(RedisStore(redis_server.url, timeout_s=0.2, in_flight_ttl_s=60), fail_open=True)
    busy.start()
    try:
        loop.run_until_complete(asyncio.sleep(0.2))
        admission = loop.run_until_complete(limiter.admit("slow", KeyLimits(concurrency=1), 1))
        assert admission.token is None  # served without limits
    finally:
        busy.join(5)
    loop.run_until_complete(asyncio.sleep(0.5))
    in_flight = subprocess.run(
        [*cli, "zcard", "rerank:rl:{slow}:inflight"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert in_flight == "0", "the late admission's slot was released"
    loop.run_until_complete(limiter.aclose())
