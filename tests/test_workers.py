"""A gateway worker killed as the OOM killer kills it (SIGKILL): replaced while the others serve, the master
never exits for it, a worker that keeps dying is respawned after a growing delay, and /ready and the metrics
port say how many workers are alive. Real processes: `python -m gateway` (granian), vLLM and Redis.

Nothing here waits for a short-lived state: worker pids come from /proc, starts and exits from the log, and
counts from the supervisor's state file, which the metrics port reads on each scrape."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import httpx
import pytest

from gateway.workers import FIRST_DELAY_S
from tests.support.procs import workers_of
from tests.support.stack import Gateway, GatewayStarter, Keys, Redis, Vllm

BODY = {"model": "qwen3-reranker-4b", "query": "usb cable", "documents": ["USB-C cable 2 m", "chef's knife"]}
RESPAWN_BUDGET_S = 60.0  # a new worker imports the app (vLLM's tokenizer) on a busy 2-core machine


def events(gateway: Gateway, name: str) -> list[dict[str, object]]:
    lines = (line for line in gateway.service.log_text().splitlines() if line.startswith("{"))
    return [record for record in map(json.loads, lines) if record.get("event") == name]


def metric(gateway: Gateway, sample: str) -> float:
    text = httpx.get(f"{gateway.metrics_url}/metrics", timeout=10).text
    (line,) = (line for line in text.splitlines() if line.startswith(sample + " "))
    return float(line.split()[-1])


def wait_for(check: Callable[[], bool], what: str, budget: float = RESPAWN_BUDGET_S) -> None:
    deadline = time.monotonic() + budget
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {budget:.0f}s")
        time.sleep(0.2)


def replaced(gateway: Gateway, number: int, old_pid: int) -> bool:
    """Worker `number` has a new pid, and granian's "Started worker-N" line (logged once it serves) is there
    for it: one more of them than deaths of that worker so far."""
    assert gateway.service.proc is not None
    pid = workers_of(gateway.service.proc.pid).get(number)
    starts = sum(1 for record in events(gateway, f"Started worker-{number}"))
    deaths = sum(1 for record in events(gateway, "worker_exited") if record["worker"] == number)
    return pid not in (None, old_pid) and starts > deaths


# Each gateway here logs its own run only (fresh_log): the tests count lines in it.


@pytest.fixture(scope="module")
def two_workers(vllm: Vllm, redis_server: Redis, start_module_gateway: GatewayStarter) -> Gateway:
    return start_module_gateway(
        "two-workers", vllm.url, fresh_log=True,
        RERANK_WORKERS="2", RERANK_RATE_LIMIT_STORE="redis", RERANK_REDIS_URL=redis_server.url,
    )  # fmt: skip


@pytest.fixture(scope="module")
def one_worker(vllm: Vllm, start_module_gateway: GatewayStarter) -> Gateway:
    return start_module_gateway("one-worker", vllm.url, fresh_log=True)


@pytest.fixture
def fresh_worker(vllm: Vllm, start_gateway: GatewayStarter) -> Gateway:
    """A gateway of its own, so the first death this test causes is its worker's first."""
    return start_gateway("crash-loop", vllm.url, fresh_log=True)


class Failure(NamedTuple):
    at: float  # monotonic time the client saw it
    error: str
    client: int
    opened: float  # when the failed connection's client was made: before the connection was opened


@dataclass
class Load:
    """Clients on keep-alive connections, each reconnecting after an error, until stopped."""

    url: str
    key: str
    clients: int = 4
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, status)
    errors: list[Failure] = field(default_factory=list)

    def _run(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        opened = time.monotonic()  # before the client's connection is, which its first request opens
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        while not self.stop.is_set():
            try:
                status = client.post("/v1/rerank", json=BODY).status_code
                self.answers.append((time.monotonic(), status))
            except httpx.HTTPError as exc:
                self.errors.append(Failure(time.monotonic(), type(exc).__name__, index, opened))
                client.close()
                opened = time.monotonic()
                client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        client.close()

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)


def test_a_killed_worker_is_replaced_while_the_other_serves(two_workers: Gateway, api_keys: Keys) -> None:
    gateway = two_workers
    assert gateway.service.proc is not None
    master = gateway.service.proc.pid
    before = workers_of(master)
    assert sorted(before) == [1, 2]
    assert metric(gateway, 'rerank_gateway_workers{state="alive"}') == 2
    with Load(gateway.url, api_keys["shop-a"]) as load:
        wait_for(lambda: len(load.answers) >= 20, "20 answers before the kill")
        killed_at = time.monotonic()  # before the kill: a client may see the reset before this thread runs on
        os.kill(before[1], signal.SIGKILL)
        wait_for(lambda: replaced(gateway, 1, before[1]), "worker-1 replaced")
        replaced_at = time.monotonic()
        wait_for(lambda: sum(1 for t, _ in load.answers if t > replaced_at) >= 20, "20 answers after")
    assert gateway.service.proc.poll() is None, "the master exited"
    assert workers_of(master)[2] == before[2], "the other worker was restarted"
    assert {status for _, status in load.answers} == {200}
    # Only connections the killed worker held fail: at most one per client, each opened before the kill and
    # failing after it (whenever a client thread gets to notice on a busy machine); none opened later fails.
    assert len({failure.client for failure in load.errors}) == len(load.errors) <= load.clients, load.errors
    assert all(f.opened < killed_at <= f.at for f in load.errors), (killed_at, load.errors)
    assert any(killed_at < t < replaced_at for t, _ in load.answers), "worker-2 served during the respawn"
    (exited,) = events(gateway, "worker_exited")
    assert (exited["worker"], exited["pid"], exited["exit_code"]) == (1, before[1], -signal.SIGKILL)
    assert exited["respawn_in_s"] == 0
    assert metric(gateway, "rerank_gateway_worker_exits_total") == 1
    assert metric(gateway, 'rerank_gateway_workers{state="alive"}') == 2
    ready = httpx.get(f"{gateway.url}/ready", timeout=10).json()
    assert ready["workers"] == {"configured": 2, "alive": 2}


def test_the_only_worker_is_replaced_and_the_master_stays(one_worker: Gateway, api_keys: Keys) -> None:
    gateway = one_worker
    assert gateway.service.proc is not None
    (pid,) = workers_of(gateway.service.proc.pid).values()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: replaced(gateway, 1, pid), "the worker replaced")
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    answer = httpx.post(f"{gateway.url}/v1/rerank", json=BODY, headers=headers, timeout=30)
    assert answer.status_code == 200
    assert gateway.service.proc.poll() is None
    assert httpx.get(f"{gateway.url}/ready", timeout=10).json()["workers"] == {"configured": 1, "alive": 1}


def test_a_worker_that_keeps_dying_is_respawned_after_a_growing_delay(fresh_worker: Gateway) -> None:
    """Four quick deaths in a row: respawned at once, then after 1, 2 and 4 s; each counted and logged; then
    the worker serves again and the master never left."""
    gateway = fresh_worker
    assert gateway.service.proc is not None
    for _ in range(4):
        (pid,) = workers_of(gateway.service.proc.pid).values()
        os.kill(pid, signal.SIGKILL)
        wait_for(partial(replaced, gateway, 1, pid), "the worker replaced")
    exits = events(gateway, "worker_exited")
    doubling = [0, FIRST_DELAY_S, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S]
    assert [record["respawn_in_s"] for record in exits] == doubling
    assert [record["crash_loop"] for record in exits] == [False, True, True, True]
    assert metric(gateway, "rerank_gateway_worker_exits_total") == 4
    assert metric(gateway, "rerank_gateway_worker_respawn_backoff_seconds") == 0
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200
    assert gateway.service.proc.poll() is None
