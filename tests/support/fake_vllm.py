"""A stand-in for vLLM that can fail on demand, for faults a real vLLM cannot be made to show on cue
(a slow answer, a dropped connection, a 500), and fast enough to benchmark the gateway against (an
asyncio protocol, no framework: well over 5,000 requests/s here). It speaks vLLM 0.32's wire format for
``POST /score`` and ``GET /health``, HTTP/1.1 with keep-alive and Content-Length bodies, as vLLM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal

import msgspec

Mode = Literal["ok", "slow", "error500", "error400", "garbage", "incomplete", "drop", "not_ready"]

_ERRORS: dict[Mode, tuple[int, dict[str, Any]]] = {
    "error500": (
        500,
        {"error": {"message": "EngineCore died", "type": "InternalServerError", "param": None, "code": 500}},
    ),
    "error400": (
        400,
        {"error": {"message": "prompt too long", "type": "BadRequestError", "param": None, "code": 400}},
    ),
}
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 503: "Unavailable"}


def _response(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _scores(model: str, count: int) -> bytes:
    data = [{"index": i, "object": "score", "score": 1.0 / (i + 2)} for i in range(count)]
    usage = {"prompt_tokens": 10 * count, "total_tokens": 10 * count, "completion_tokens": 0}
    return msgspec.json.encode(
        {"id": "score-x", "object": "list", "created": 0, "model": model, "data": data, "usage": usage}
    )


class FakeVllm:
    """Settable from any thread: ``mode``, ``slow_seconds``; ``requests`` records every /score body."""

    def __init__(self, *, record: bool = True) -> None:
        self.mode: Mode = "ok"
        self.slow_seconds = 5.0
        self.requests: list[dict[str, Any]] = []
        self.score_calls = 0  # /score requests answered or attempted, for single-flight counting
        self.port = 0
        self._record = record
        self._cache: dict[tuple[str, int], bytes] = {}
        self.open: set[asyncio.BaseTransport] = set()  # connections not yet closed, closed at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, port: int = 0) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def answer_score(self, body: bytes) -> bytes | None:
        """The bytes to send for one /score body, or None to drop the connection."""
        self.score_calls += 1
        request = msgspec.json.decode(body)
        if self._record:
            self.requests.append(request)
        mode = self.mode
        if mode == "drop":
            return None
        if mode in _ERRORS:
            status, error = _ERRORS[mode]
            return _response(status, msgspec.json.encode(error))
        if mode == "garbage":
            return _response(200, b"<html>proxy error</html>")
        count = len(request["documents"]) - (1 if mode == "incomplete" else 0)
        key = (request["model"], count)
        if key not in self._cache:
            self._cache[key] = _response(200, _scores(request["model"], count))
        return self._cache[key]


class _Connection(asyncio.Protocol):
    def __init__(self, server: FakeVllm) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a slow answer is pending: read nothing more until it is sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP transport (uvloop's is no subclass)
        self._server.open.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server.open.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._drain()

    def _drain(self) -> None:
        while not self._busy and self._transport is not None and not self._transport.is_closing():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            self._handle(method, path, body)

    def _handle(self, method: str, path: str, body: bytes) -> None:
        assert self._transport is not None
        server = self._server
        if method == "GET" and path == "/health":
            self._transport.write(_response(503 if server.mode == "not_ready" else 200, b""))
        elif method == "POST" and path == "/score":
            if server.mode == "slow":
                self._busy = True
                asyncio.get_running_loop().call_later(server.slow_seconds, self._finish_slow, body)
                return
            self._send_score(body)
        else:
            self._transport.write(_response(404, b'{"detail":"Not Found"}'))

    def _send_score(self, body: bytes) -> None:
        assert self._transport is not None
        answer = self._server.answer_score(body)
        if answer is None:  # vLLM dying mid-request: the socket closes with no answer
            self._transport.close()
        else:
            self._transport.write(answer)

    def _finish_slow(self, body: bytes) -> None:
        self._busy = False
        if self._transport is not None and not self._transport.is_closing():
            self._send_score(body)
            self._drain()


@contextlib.contextmanager
def fake_vllm() -> Iterator[FakeVllm]:
    """A stand-in on its own event loop in a background thread, for the duration of a test."""
    fake = FakeVllm()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    # Started from its own thread, so a test whose thread already runs a loop (Playwright's) can use it.
    server = asyncio.run_coroutine_threadsafe(fake.serve(), loop).result(10)

    async def shut() -> None:
        """Every socket closed on the loop that owns it, before the loop stops: a connection the gateway
        left open would otherwise be closed by the garbage collector, as a ResourceWarning in a later test."""
        server.close()
        for transport in list(fake.open):
            transport.close()
        await asyncio.sleep(0)  # the transports' close callbacks run before this resumes

    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main() -> None:
    """``python -m tests.support.fake_vllm PORT``: a healthy stand-in for benchmarks (uvloop if installed)."""
    import sys  # noqa: PLC0415

    async def run() -> None:
        fake = FakeVllm(record=False)
        server = await fake.serve(int(sys.argv[1]))
        async with server:
            await server.serve_forever()

    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


if __name__ == "__main__":
    main()
