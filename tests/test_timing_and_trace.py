"""What a shop's engineer sees from the client side (Server-Timing) and how a call joins their trace (W3C
traceparent in the log line and on the way to vLLM). vLLM is real; a TCP relay in front of it records the
bytes the gateway sends, so the test sees the headers exactly as they went over the wire."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import Gateway, GatewayStarter, Keys, Vllm, log_line

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
V1 = {"query": "trail running shoes", "documents": ["Hoka Speedgoat 5", "Cast iron skillet", "Trail socks"]}
TIMING = re.compile(r"([\w-]+)(?:;dur=([\d.]+))?(?:;desc=(\w+))?")


def timing(response: httpx.Response) -> dict[str, str]:
    """Server-Timing as {name: dur or desc}."""
    entries: dict[str, str] = {}
    for part in response.headers["server-timing"].split(","):
        match = TIMING.fullmatch(part.strip())
        assert match, part
        name, dur, desc = match.groups()
        entries[name] = dur or desc or ""
    return entries


class Relay:
    """A TCP relay to vLLM that keeps a copy of everything sent to it."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sent = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def sent(self) -> bytes:
        with self._lock:
            return bytes(self._sent)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self._sent += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def relayed(vllm: Vllm, start_module_gateway: GatewayStarter) -> Iterator[tuple[Gateway, Relay]]:
    relay = Relay(int(vllm.url.rsplit(":", 1)[1]))
    yield start_module_gateway("relayed", f"http://127.0.0.1:{relay.port}"), relay
    relay.close()


def post(gateway: Gateway, key: str, headers: dict[str, str] | None = None) -> tuple[httpx.Response, str]:
    request_id = f"trace-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{gateway.url}/v1/rerank",
        json={**V1, "query": f"{V1['query']} {request_id}"},  # a new query each time: vLLM is called
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id, **(headers or {})},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response, request_id


def _wait_for(relay: Relay, needle: bytes) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if needle in relay.sent:
            return True
        time.sleep(0.05)
    return False


def test_traceparent_goes_into_the_log_line_and_on_to_vllm(
    relayed: tuple[Gateway, Relay], api_keys: Keys
) -> None:
    gateway, relay = relayed
    context = {"traceparent": TRACEPARENT, "tracestate": "shop=1"}
    response, request_id = post(gateway, api_keys["shop-a"], context)
    assert log_line(gateway, request_id)["trace_id"] == TRACE_ID
    assert _wait_for(relay, f"traceparent: {TRACEPARENT}\r\n".encode())
    assert b"tracestate: shop=1\r\n" in relay.sent
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # upper case hex
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        "garbage",
    ],
)
def test_an_invalid_traceparent_is_neither_logged_nor_forwarded(
    relayed: tuple[Gateway, Relay], api_keys: Keys, traceparent: str
) -> None:
    gateway, relay = relayed
    before = len(relay.sent)
    _, request_id = post(gateway, api_keys["shop-a"], {"traceparent": traceparent})
    assert "trace_id" not in log_line(gateway, request_id)
    assert _wait_for(relay, request_id.encode())  # the call went out ...
    assert b"traceparent" not in relay.sent[before:]  # ... without a trace context


def test_server_timing_splits_gateway_and_upstream_time(gateway: Gateway, api_keys: Keys) -> None:
    """With the cache off (the session gateway) there is nothing to say about it."""
    started = time.perf_counter()
    response, _ = post(gateway, api_keys["shop-a"])
    elapsed_ms = (time.perf_counter() - started) * 1000
    entries = timing(response)
    assert set(entries) == {"gateway", "upstream"}
    gateway_ms, upstream_ms = float(entries["gateway"]), float(entries["upstream"])
    assert gateway_ms > 0
    assert upstream_ms > 0
    assert gateway_ms + upstream_ms <= elapsed_ms  # what the server says fits in what the client waited


def test_errors_carry_server_timing_too(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/rerank", json=V1, timeout=10)
    assert response.status_code == 401
    assert set(timing(response)) == {"gateway"}


CACHE_ON = {"RERANK_SCORE_CACHE_MAX_BYTES": str(1024 * 1024)}


def test_server_timing_counts_cache_hits_when_the_cache_is_per_key(
    vllm: Vllm, api_keys: Keys, start_gateway: GatewayStarter
) -> None:
    url = start_gateway("timing-key", vllm.url, CACHE_ON, RERANK_SCORE_CACHE_SCOPE="key").url
    body = {**V1, "query": f"cached {uuid.uuid4().hex}"}
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    first = httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=60)
    second = httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=60)
    assert (timing(first)["cache-hit"], timing(first)["cache-miss"]) == ("0", "3")
    assert (timing(second)["cache-hit"], timing(second)["cache-miss"]) == ("3", "0")
    assert "upstream" not in timing(second)  # vLLM was not asked


def test_server_timing_says_nothing_about_a_cache_shared_by_all_keys(
    vllm: Vllm, api_keys: Keys, start_gateway: GatewayStarter
) -> None:
    """With scope=global a hit can reveal what another shop searched for: no cache counts then."""
    url = start_gateway("timing-global", vllm.url, CACHE_ON, RERANK_SCORE_CACHE_SCOPE="global").url
    body = {**V1, "query": f"shared {uuid.uuid4().hex}"}
    for key_id in ("shop-a", "shop-b"):
        headers = {"Authorization": f"Bearer {api_keys[key_id]}"}
        response = httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=60)
        assert response.status_code == 200
        assert not any(name.startswith("cache") for name in timing(response))
