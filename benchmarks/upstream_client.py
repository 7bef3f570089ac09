"""Which HTTP client should the gateway use to call vLLM? httpx, aiohttp and our own, measured in one run.

    .venv/bin/python benchmarks/upstream_client.py [--calls 3000] [--concurrency 32]

Both clients post the same 5-document ``/score`` body to the fast stand-in vLLM (tests/support/fake_vllm.py,
its own process) from one uvloop event loop, configured as the gateway would configure them (one pooled
client, keep-alive, explicit limits). Reported per client: p50/p99 of one call at concurrency 1, and calls/s
at ``--concurrency``; then each client's figures as ratios of httpx's. Runs are interleaved (A B C A B C) so
that drift on a shared machine hits all of them. Results: docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import msgspec
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.http1 import Http1Pool  # noqa: E402
from tests.support.procs import free_port, wait_http  # noqa: E402

BODY = msgspec.json.encode(
    {"model": "m", "queries": "running shoes", "documents": ["a", "b", "c", "d", "e"], "instruction": "i"}
)
Call = Callable[[], Awaitable[bytes]]


async def latencies(call: Call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(call: Call, count: int, concurrency: int) -> float:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def measure(url: str, calls: int, concurrency: int, rounds: int) -> dict[str, dict[str, float]]:
    headers = {"content-type": "application/json"}
    hx = httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(60, connect=2, pool=5),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )
    ah = aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=4),
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )

    async def call_httpx() -> bytes:
        response = await hx.post("/score", content=BODY, headers=headers)
        return response.content

    async def call_aiohttp() -> bytes:
        async with ah.post("/score", data=BODY, headers=headers) as response:
            return await response.read()

    own = Http1Pool(url, max_connections=64, connect_timeout_s=2, idle_s=4, pool_timeout_s=5)

    async def call_own() -> bytes:
        _, content = await own.request("POST", "/score", BODY, "application/json")
        return content

    clients: dict[str, Call] = {"httpx": call_httpx, "aiohttp": call_aiohttp, "http1": call_own}
    samples: dict[str, list[float]] = {name: [] for name in clients}
    rates: dict[str, list[float]] = {name: [] for name in clients}
    for call in clients.values():  # warm-up: connections open, code paths hot
        await latencies(call, 200)
    for _ in range(rounds):
        for name, call in clients.items():
            samples[name] += await latencies(call, calls // rounds)
            rates[name].append(await throughput(call, calls, concurrency))
    await hx.aclose()
    await ah.close()
    await own.aclose()
    results: dict[str, dict[str, float]] = {}
    for name in clients:
        ordered = sorted(samples[name])
        results[name] = {
            "c1_p50_us": round(statistics.median(ordered) * 1e6, 1),
            "c1_p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
            f"c{concurrency}_calls_per_s": round(statistics.median(rates[name])),
        }
    for name in ("aiohttp", "http1"):
        results[f"{name}_over_httpx"] = {
            key: round(results[name][key] / results["httpx"][key], 2) for key in results["httpx"]
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    port = free_port()
    stand_in = subprocess.Popen([sys.executable, "-m", "tests.support.fake_vllm", str(port)], cwd=ROOT)  # noqa: S603
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", timeout=10)
        results = uvloop.run(measure(url, ns.calls, ns.concurrency, ns.rounds))
    finally:
        stand_in.terminate()
        stand_in.wait(10)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
