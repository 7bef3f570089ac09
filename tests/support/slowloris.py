"""A slowloris on loopback, for the slow-client test and its measurement (benchmarks/slowloris.py).

Connections are opened in one of four ways and then held; the attack watches when the server closes each,
while a well-behaved client keeps sending normal requests beside them:

- ``headers``: a request line and headers that never end, one more byte every ``trickle_s``;
- ``body``: complete headers announcing a 1,000-byte body, then one byte of it (the issue's case);
- ``idle``: one complete request, its answer read, then silence on the kept-alive connection;
- ``silent``: connected, nothing sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx

Mode = Literal["headers", "body", "idle", "silent"]
MODES: tuple[Mode, ...] = ("headers", "body", "idle", "silent")


@dataclass
class Outcome:
    mode: Mode
    opened: int = 0
    refused: int = 0  # could not connect at all
    # Seconds until the server's close, by two clocks that bracket the server's own (it starts at accept):
    closed_after: list[float] = field(default_factory=list)  # from our connect() returning: the upper bounds
    lived: list[float] = field(default_factory=list)  # from our connect() call: the lower bound
    probes: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds) of normal requests

    def open_at(self, seconds: float) -> int:
        return self.opened - sum(1 for t in self.closed_after if t <= seconds)


def _request(path: str, body: bytes, key: str, *, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


async def _hold(
    host: str, port: int, mode: Mode, key: str, duration: float, trickle_s: float
) -> tuple[float, float] | None:
    """One attacking connection; seconds until the server closed it, from our connect() call and from its
    return (None: still open at the end). The server's timer starts at accept, which lies between the two:
    after the call, and after the return too where SYN retries delay the accept, but before the return
    where this loop is slow to resume us (a busy machine; 500 connections in one loop)."""
    called = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()

    def closed() -> tuple[float, float]:
        now = time.monotonic()
        return now - called, now - started

    try:
        if mode == "headers":
            writer.write(b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        elif mode == "body":
            writer.write(_request("/v1/rerank", b"{", key, content_length=1000))
        elif mode == "idle":
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        deadline = started + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout=min(trickle_s, left))
            except TimeoutError:
                if mode == "headers":
                    writer.write(b"a")
                    await writer.drain()
                continue
            if not data:  # the server closed the connection
                return closed()
        return None
    except (ConnectionError, OSError):
        return closed()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _probe(url: str, key: str, until: float, every_s: float, outcome: Outcome) -> None:
    body = {"query": "trail shoes", "documents": ["Salomon Speedcross", "cast iron pan"]}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                status = (await client.post("/v1/rerank", json=body, headers=headers)).status_code
            except httpx.HTTPError:
                status = 0
            outcome.probes.append((status, time.monotonic() - started))
            await asyncio.sleep(every_s)


async def attack(
    url: str,
    key: str,
    mode: Mode,
    *,
    connections: int,
    duration: float,
    trickle_s: float = 1.0,
    probe_every_s: float | None = 0.5,
) -> Outcome:
    """Hold ``connections`` of ``mode`` for ``duration`` seconds while probing with normal requests (unless
    ``probe_every_s`` is None)."""
    host, port = url.removeprefix("http://").split(":")
    outcome = Outcome(mode)
    until = time.monotonic() + duration
    probe = (
        None
        if probe_every_s is None
        else asyncio.create_task(_probe(url, key, until, probe_every_s, outcome))
    )
    holds = []
    for _ in range(connections):  # opened one by one, as a client would, not in one burst
        holds.append(asyncio.create_task(_hold(host, int(port), mode, key, duration, trickle_s)))
        await asyncio.sleep(0)
    results = await asyncio.gather(*holds, return_exceptions=True)
    if probe is not None:
        await probe
    for result in results:
        if isinstance(result, BaseException):
            outcome.refused += 1
            continue
        outcome.opened += 1
        if result is not None:
            lived, closed_after = result
            outcome.lived.append(lived)
            outcome.closed_after.append(closed_after)
    return outcome
