"""What the limiter costs per request: in-process vs Redis (real server), measured with pytest-benchmark.

    ./scripts/test.sh tests/test_limits_benchmark.py --benchmark-columns=min,median,mean,ops,rounds

Results and the ratio between the stores, from one run, are in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from gateway.limits import MAX_PER_MINUTE, KeyLimits, Limiter, LimitStore, MemoryStore, RedisStore
from tests.support.stack import Redis

# Limits high enough that every call is admitted: we measure the decision, not refusals.
LIMITS = KeyLimits(rpm=MAX_PER_MINUTE, units_per_minute=MAX_PER_MINUTE, concurrency=10**6)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def admit_and_release(loop: asyncio.AbstractEventLoop, store: LimitStore) -> Callable[[], None]:
    limiter = Limiter(store, fail_open=False)

    def once() -> None:
        async def run() -> None:
            admission = await limiter.admit("bench", LIMITS, 1)
            assert admission.token is not None
            await limiter.release(admission)

        loop.run_until_complete(run())

    return once


@pytest.mark.unit
def test_limiter_in_process(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "limiter"
    benchmark(admit_and_release(loop, MemoryStore()))


def test_limiter_redis(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    redis_server: Redis,
) -> None:
    benchmark.group = "limiter"
    store = RedisStore(redis_server.url, timeout_s=1.0, in_flight_ttl_s=60)
    benchmark(admit_and_release(loop, store))
    loop.run_until_complete(store.aclose())


@pytest.mark.unit
def test_loop_baseline(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """The cost of driving one coroutine on the loop, to subtract mentally from the two above."""
    benchmark.group = "limiter"

    async def nothing() -> None:
        return None

    benchmark(lambda: loop.run_until_complete(nothing()))
