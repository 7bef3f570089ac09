"""SIGTERM under load: every request the gateway accepted gets its real answer, none a 5xx, and it exits 0."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import time

import httpx

from tests.support.stack import GatewayStarter, Keys, Vllm

CONCURRENCY = 32
LOAD_BEFORE_S = 2.0
LOAD_AFTER_S = 4.0


async def _load(url: str, key: str, pid: int) -> tuple[collections.Counter[int], int, int]:
    """Statuses received, 200s received after SIGTERM, and failures to get any answer (not accepted)."""
    statuses: collections.Counter[int] = collections.Counter()
    after = 0
    unanswered = 0
    signalled_at: float | None = None
    deadline = time.monotonic() + LOAD_BEFORE_S + LOAD_AFTER_S
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal after, unanswered
            i = 0
            while time.monotonic() < deadline:
                i += 1
                body = {
                    "query": f"running shoes {n}-{i}",
                    "documents": ["Pegasus 40", "cast iron pan", "socks"],
                }
                try:
                    response = await client.post(
                        f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}"}
                    )
                except httpx.TransportError:  # refused or reset before an answer: never accepted
                    unanswered += 1
                    await asyncio.sleep(0.05)
                    continue
                statuses[response.status_code] += 1
                if signalled_at is not None and response.status_code == 200:
                    after += 1

        tasks = [asyncio.create_task(worker(n)) for n in range(CONCURRENCY)]
        await asyncio.sleep(LOAD_BEFORE_S)
        signalled_at = time.monotonic()
        os.killpg(pid, signal.SIGTERM)  # the whole group, as a container runtime or our test harness does
        await asyncio.gather(*tasks)
    return statuses, after, unanswered


def test_sigterm_under_load_drains_every_accepted_request(
    vllm: Vllm, api_keys: Keys, start_gateway: GatewayStarter
) -> None:
    gateway = start_gateway("drain", vllm.url, fresh_log=True, RERANK_DRAIN_TIMEOUT_S="20")
    log, proc = gateway.service.log_path, gateway.service.proc
    assert proc is not None
    statuses, after, unanswered = asyncio.run(_load(gateway.url, api_keys["shop-a"], proc.pid))
    exit_code = proc.wait(30)

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    served = [line for line in lines if line.get("event") == "request" and line["route"] == "/v1/rerank"]
    assert statuses[200] > 100, f"the load did not run: {statuses}"
    assert not [s for s in statuses if s >= 500], f"5xx while draining: {statuses}"
    assert set(statuses) == {200}, statuses
    assert after > 0, "requests in flight at SIGTERM were answered"
    assert len(served) == sum(statuses.values()), "every request the gateway took was answered to the client"
    assert all(line["status"] == 200 for line in served)
    assert exit_code == 0
    assert "unhandled_error" not in log.read_text()
    assert unanswered > 0, "the gateway stopped accepting (the load ran past its shutdown)"
