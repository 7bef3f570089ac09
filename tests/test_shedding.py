"""Load shedding and priority: a bounded number of pairs in flight to vLLM, a short queue in priority order
in front of it, fast 503s with a truthful Retry-After beyond that; Cohere v2's priority reaches vLLM, whose
priority scheduling is on. Proved on the real vLLM (tiny model) made busy by real requests; the queue's own
rules also as units on its event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from gateway.errors import ApiError, ErrorKind
from gateway.shedding import Shedder
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION
from tests.support.fake_vllm import fake_vllm
from tests.support.procs import Service, engine_paused
from tests.support.stack import SERVED_NAME, Gateway, GatewayStarter, Keys, Vllm

# --- the queue's rules, on one event loop ---


async def _hold(
    shedder: Shedder, pairs: int, priority: int, release: asyncio.Event, done: list[str], name: str
) -> None:
    async with shedder.slot(pairs, priority):
        done.append(name)
        await release.wait()


@pytest.mark.unit
def test_the_queue_serves_by_priority_then_arrival() -> None:
    async def run() -> list[str]:
        shedder = Shedder(max_pairs=4, max_queued=10, wait_s=5)
        release, order = asyncio.Event(), list[str]()
        tasks = [asyncio.create_task(_hold(shedder, 4, 5, release, order, "running"))]
        await asyncio.sleep(0)
        for name, priority in (("batch-1", 5), ("batch-2", 5), ("shop-1", 0), ("mid", 2), ("shop-2", 0)):
            tasks.append(asyncio.create_task(_hold(shedder, 4, priority, release, order, name)))
            await asyncio.sleep(0)
        assert shedder.queued == 5
        release.set()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == ["running", "shop-1", "shop-2", "mid", "batch-1", "batch-2"]


@pytest.mark.unit
def test_a_full_queue_gives_a_better_priority_the_worst_place() -> None:
    async def run() -> None:
        shedder = Shedder(max_pairs=2, max_queued=2, wait_s=5)
        release, order = asyncio.Event(), list[str]()
        running = asyncio.create_task(_hold(shedder, 2, 5, release, order, "running"))
        await asyncio.sleep(0)
        first = asyncio.create_task(_hold(shedder, 2, 5, release, order, "batch-1"))
        last = asyncio.create_task(_hold(shedder, 2, 5, release, order, "batch-2"))
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as same:  # no better than anyone waiting: refused at once
            await _hold(shedder, 2, 5, release, order, "batch-3")
        assert same.value.kind is ErrorKind.OVERLOADED
        assert "queue is full" in same.value.message
        shop = asyncio.create_task(_hold(shedder, 2, 0, release, order, "shop"))
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as evicted:
            await last
        assert "higher priority took its place" in evicted.value.message
        assert int(evicted.value.headers["Retry-After"]) >= 1
        release.set()
        await asyncio.gather(running, first, shop)
        assert order == ["running", "shop", "batch-1"]

    asyncio.run(run())


@pytest.mark.unit
def test_a_wait_past_the_bound_is_a_503_and_leaves_no_trace() -> None:
    async def run() -> None:
        shedder = Shedder(max_pairs=3, max_queued=4, wait_s=0.05)
        release, order = asyncio.Event(), list[str]()
        running = asyncio.create_task(_hold(shedder, 3, 0, release, order, "running"))
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(ApiError) as timed_out:
            await _hold(shedder, 1, 0, release, order, "late")
        assert time.monotonic() - started < 1
        assert "no capacity freed within 0.05 s" in timed_out.value.message
        assert shedder.queued == 0
        gone = asyncio.create_task(_hold(shedder, 1, 0, release, order, "gone"))  # a client that hangs up
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        release.set()
        await running
        assert (shedder.in_flight, shedder.queued) == (0, 0)
        async with shedder.slot(99, 0):  # more than the whole bound: runs alone
            assert shedder.in_flight == 3

    asyncio.run(run())


@pytest.mark.unit
def test_retry_after_follows_the_measured_throughput() -> None:
    async def run() -> None:
        shedder = Shedder(max_pairs=10, max_queued=1, wait_s=7)
        assert shedder.retry_after(10, 0) == 7, "nothing measured yet: the wait bound"
        for _ in range(20):  # 200 pairs finished within about a second
            async with shedder.slot(10, 0):
                pass
        assert shedder.retry_after(10, 0) == 1
        async with shedder.slot(10, 0):
            # 10 in flight + 10 more: at >= 200 pairs/s that is well under a second, rounded up to 1
            assert shedder.retry_after(10, 0) == 1

    asyncio.run(run())


# --- on the real vLLM ---

LONG_DOC = "Waterproof trail running shoe with a grippy outsole and a cushioned midsole, " * 30  # ~500 tokens
PAIRS = 8
RUN = uuid.uuid4().hex[:8]  # this session's request ids, told apart from earlier runs' in the log


@pytest.fixture(scope="module")
def shedding_gateway(vllm: Vllm, start_module_gateway: GatewayStarter) -> tuple[Service, str]:
    """Room for one 8-pair request at vLLM, four more waiting."""
    gateway = start_module_gateway(
        "shedding",
        vllm.url,
        RERANK_MAX_PAIRS_IN_FLIGHT=str(PAIRS),
        RERANK_QUEUE_MAX_REQUESTS="4",
        RERANK_QUEUE_TIMEOUT_S="120",
        RERANK_MAX_TOKENS_PER_DOC="1000",
    )
    return gateway.service, gateway.url


def rerank(
    url: str, key: str, priority: int, documents: int = PAIRS, tag: str = ""
) -> tuple[httpx.Response, float]:
    body: dict[str, Any] = {
        "model": "rerank-v3.5",
        "query": f"trail running shoes {tag}",
        "documents": [f"{i} {LONG_DOC}" for i in range(documents)],
        "priority": priority,
        "max_tokens_per_doc": 1000,
    }
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": f"{RUN}-{tag or 'untagged'}"}
    response = httpx.post(f"{url}/v2/rerank", json=body, headers=headers, timeout=300)
    return response, time.monotonic()


def answered(service: Service) -> list[str]:
    """This run's tags of the requests the gateway answered 200, in the order it answered them."""
    lines = (json.loads(line) for line in service.log_text().splitlines() if line.startswith("{"))
    return [
        record["request_id"].removeprefix(f"{RUN}-")
        for record in lines
        if record.get("event") == "request" and record.get("status") == 200
        and str(record.get("request_id", "")).startswith(f"{RUN}-")
    ]  # fmt: skip


def gauge(service: Service, name: str) -> float:
    """The gateway's one model's value of a per-model gauge."""
    text = httpx.get(f"http://127.0.0.1:{service.env['RERANK_METRICS_PORT']}/metrics", timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith(f'{name}{{model="{SERVED_NAME}"}} '))
    return float(line.split()[1])


def wait_for(service: Service, name: str, value: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while gauge(service, name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.02)


def test_with_the_queue_full_of_batch_work_a_priority_0_request_is_served_first(
    shedding_gateway: tuple[Service, str], vllm: Vllm, api_keys: Keys
) -> None:
    """vLLM's engine is paused while the queue is built and looked at, so each state lasts until the test
    moves on (metrics flush once a second; a busy machine drains nothing meanwhile); then it resumes and
    the queue drains in priority order."""
    service, url = shedding_gateway
    key = api_keys["shop-a"]
    warm, _ = rerank(url, key, 0, tag="warm")  # also gives the gateway a measured throughput
    assert warm.status_code == 200, warm.text
    assert vllm.service.proc is not None
    with concurrent.futures.ThreadPoolExecutor(8) as pool, engine_paused(vllm.service.proc.pid) as resume:
        # It holds the whole bound at vLLM, where nothing moves until resume().
        blocker = pool.submit(rerank, url, key, 5, PAIRS, "blocker")
        wait_for(service, "rerank_upstream_pairs_in_flight", PAIRS)
        batch = []
        for i in range(4):
            batch.append(pool.submit(rerank, url, key, 5, tag=f"batch-{i}"))
            wait_for(service, "rerank_queued_requests", i + 1)  # in this arrival order
        # The queue is full of priority-5 work: another one is refused at once, with a Retry-After.
        started = time.monotonic()
        refused, _ = rerank(url, key, 5, tag="too-many")
        assert refused.status_code == 503, refused.text
        assert time.monotonic() - started < 2, "shed early, not after the upstream timeout"
        assert "queue is full" in refused.json()["message"]
        retry_after = int(refused.headers["retry-after"])
        # A shop's interactive request takes the last batch request's place, at once, and is served next.
        shop = pool.submit(rerank, url, key, 0, tag="shop")
        evicted, _ = batch[-1].result(timeout=30)
        assert evicted.status_code == 503, evicted.text
        wait_for(service, "rerank_queued_requests", 4)
        resume()
        shop_response, _ = shop.result(timeout=300)
        results = [future.result(timeout=300) for future in batch[:-1]]
        assert blocker.result(timeout=300)[0].status_code == 200
    assert shop_response.status_code == 200, shop_response.text
    assert "higher priority" in evicted.json()["message"]
    assert int(evicted.headers["retry-after"]) >= 1
    assert [response.status_code for response, _ in results] == [200] * 3
    # One request at vLLM at a time (each holds the whole bound), so the order the gateway answered them in
    # is the order it let them through; the clients' own clocks would add their threads' scheduling.
    order = [tag for tag in answered(service) if tag in ("shop", "batch-0", "batch-1", "batch-2")]
    assert order[0] == "shop", f"the priority-0 request did not overtake the queued priority-5 ones: {order}"
    assert order[1:] == ["batch-0", "batch-1", "batch-2"], (
        f"priority-5 requests not in arrival order: {order}"
    )
    drained = max(done for _, done in results) - started
    assert 1 <= retry_after <= 3 * drained + 2, (retry_after, drained)
    # Once the worker has written its totals after the last answer (each second), all is given back.
    wait_for(service, "rerank_upstream_pairs_in_flight", 0, timeout=5)
    wait_for(service, "rerank_queued_requests", 0, timeout=5)
    metrics = httpx.get(f"http://127.0.0.1:{service.env['RERANK_METRICS_PORT']}/metrics", timeout=10).text
    assert 'rerank_shed_requests_total{reason="queue_full"} 1.0' in metrics
    assert 'rerank_shed_requests_total{reason="evicted"} 1.0' in metrics


def score_at_vllm(vllm: Vllm, priority: int, documents: int, tag: str) -> tuple[int, float]:
    """Pairs posted to vLLM itself, as the gateway would post them; the status and when the answer came."""
    body = {
        "model": SERVED_NAME,
        "queries": f"trail running shoes {tag}",
        "documents": [f"{i} {LONG_DOC}" for i in range(documents)],
        "instruction": PRODUCT_SEARCH_INSTRUCTION,
        "priority": priority,
    }
    response = httpx.post(f"{vllm.url}/score", json=body, timeout=300)
    return response.status_code, time.monotonic()


def server_load(vllm: Vllm) -> int:
    """Requests inside vLLM's API server (GET /load, on with --enable-server-load-tracking)."""
    load: int = httpx.get(f"{vllm.url}/load", timeout=10).json()["server_load"]
    return load


def wait_for_load(vllm: Vllm, load: int) -> None:
    deadline = time.monotonic() + 60
    while server_load(vllm) < load:
        assert time.monotonic() < deadline, f"vLLM's API server never held {load} requests"
        time.sleep(0.05)


def test_vllm_schedules_by_the_priority_the_gateway_passes_on(
    gateway: Gateway, vllm: Vllm, api_keys: Keys
) -> None:
    """With vLLM's engine paused, priority-5 requests posted to vLLM directly and then a priority-0 one
    through the session gateway reach its API server; resumed, the engine schedules the priority-0 one
    before the batch still waiting: the gateway passes the priority on and vLLM schedules by it. First
    come, first served, it would finish after every batch request."""
    requests, documents = 12, 48
    assert vllm.service.proc is not None
    before = server_load(vllm)
    with (
        concurrent.futures.ThreadPoolExecutor(requests + 1) as pool,
        engine_paused(vllm.service.proc.pid) as resume,
    ):
        batch = [pool.submit(score_at_vllm, vllm, 5, documents, f"vllm-batch-{i}") for i in range(requests)]
        wait_for_load(vllm, before + requests)
        shop = pool.submit(rerank, gateway.url, api_keys["shop-b"], 0, 1, "vllm-shop")
        wait_for_load(vllm, before + requests + 1)
        resume()
        shop_response, shop_done = shop.result(timeout=300)
        finished = [future.result(timeout=300) for future in batch]
    assert shop_response.status_code == 200, shop_response.text
    assert [status for status, _ in finished] == [200] * requests
    later = sum(done > shop_done for _, done in finished)
    # What the engine had started before the priority-0 request arrived may finish first; most cannot.
    assert later >= requests // 2, f"first come, first served, none would finish later; {later} did"


def test_priority_is_forwarded_only_when_given(api_keys: Keys, start_gateway: GatewayStarter) -> None:
    """0 (the default) is left out of vLLM's request, so a vLLM scheduling first come, first served takes it;
    a negative priority is the caller's error."""
    with fake_vllm() as upstream:
        url = start_gateway("priority", upstream.url).url
        headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
        body: dict[str, Any] = {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
        for priority, sent in ((None, None), (0, None), (7, 7)):
            extra = {} if priority is None else {"priority": priority}
            response = httpx.post(f"{url}/v2/rerank", json={**body, **extra}, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            assert upstream.requests[-1].get("priority") == sent
        negative = httpx.post(f"{url}/v2/rerank", json={**body, "priority": -1}, headers=headers, timeout=30)
        assert negative.status_code == 400
        assert "$.priority" in negative.json()["message"]
