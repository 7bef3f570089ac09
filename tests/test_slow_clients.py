"""Slow and idle clients cannot hold the gateway: a slowloris of 500 connections of each kind (headers that
never end, a body that never comes, idle keep-alive, silent) is closed by the server within its deadlines
while normal requests (real vLLM) are served meanwhile; a worker's requests in progress are capped."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.procs import Service
from tests.support.slowloris import MODES, Outcome, attack
from tests.support.stack import GatewayStarter, Keys, Vllm

HEADER_S, BODY_S = 2, 3
CONNECTIONS = 500
ATTACK_S = 5.0  # longer than either deadline plus the slack below
SLACK_S = 1.5


@pytest.fixture(scope="module")
def guarded(vllm: Vllm, start_module_gateway: GatewayStarter) -> tuple[Service, str]:
    gateway = start_module_gateway(
        "slow-clients",
        vllm.url,
        RERANK_HEADER_READ_TIMEOUT_S=str(HEADER_S),
        RERANK_BODY_READ_TIMEOUT_S=str(BODY_S),
    )
    return gateway.service, gateway.url


def test_a_slowloris_is_closed_within_the_deadlines_while_normal_requests_are_served(
    guarded: tuple[Service, str], api_keys: Keys
) -> None:
    _, url = guarded

    async def run() -> list[Outcome]:
        # One kind at a time: 2,000 connections at once would overflow granian's listen backlog (1,024),
        # and the kernel's SYN-ACK retries would then delay the server's accept by seconds.
        return [
            await attack(url, api_keys["shop-a"], mode, connections=CONNECTIONS, duration=ATTACK_S)
            for mode in MODES
        ]

    outcomes = asyncio.run(run())
    for outcome in outcomes:
        deadline = BODY_S if outcome.mode == "body" else HEADER_S
        assert outcome.refused == 0, outcome.mode
        assert outcome.opened == CONNECTIONS, outcome.mode
        assert outcome.open_at(deadline + SLACK_S) == 0, f"{outcome.mode}: {outcome.open_at(1e9)} still open"
        assert min(outcome.lived) >= deadline - 0.5, f"{outcome.mode} closed before its deadline"
        statuses = [status for status, _ in outcome.probes]
        assert len(statuses) >= ATTACK_S, outcome.mode  # one every 0.5 s, each answered
        assert set(statuses) == {200}, (outcome.mode, statuses)
        assert max(seconds for _, seconds in outcome.probes) < 2.0, outcome.mode


def test_a_body_past_its_deadline_is_a_408_that_closes_the_connection(
    guarded: tuple[Service, str], api_keys: Keys
) -> None:
    _, url = guarded
    key = api_keys["shop-a"].encode()

    async def run() -> bytes:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        writer.write(b"Authorization: Bearer " + key + b"\r\n")
        writer.write(b"Content-Length: 100\r\n\r\n{")
        await writer.drain()
        answer = await asyncio.wait_for(
            reader.read(), timeout=BODY_S + 5
        )  # read() ends when the server closes
        writer.close()
        return answer

    answer = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"connection: close" in head.lower()
    assert b"the request body did not arrive within 3 s" in body


def test_requests_in_progress_per_worker_are_capped(
    vllm: Vllm, api_keys: Keys, start_gateway: GatewayStarter
) -> None:
    """20 bodies that never come fill a worker capped at 20: a normal request is a fast 503 with Retry-After,
    and is served again once the body deadline has freed the worker."""
    url = start_gateway(
        "capped", vllm.url, RERANK_BODY_READ_TIMEOUT_S=str(BODY_S), RERANK_MAX_REQUESTS_PER_WORKER="20"
    ).url
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    body = {"query": "trail shoes", "documents": ["Salomon Speedcross", "cast iron pan"]}

    async def run() -> tuple[httpx.Response, Outcome]:
        held = asyncio.create_task(
            attack(url, api_keys["shop-a"], "body", connections=20, duration=BODY_S + 4, probe_every_s=None)
        )
        await asyncio.sleep(1.0)  # the 20 are in progress, waiting for their bodies
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            busy = await client.post("/v1/rerank", json=body, headers=headers)
        return busy, await held

    busy, outcome = asyncio.run(run())
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "1"
    assert "too many requests in progress" in busy.json()["message"]
    assert outcome.open_at(1e9) == 0  # each closed by its deadline (3 s, swept every 0.5 s), well within 7 s
    again = httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=30)
    assert again.status_code == 200, again.text
