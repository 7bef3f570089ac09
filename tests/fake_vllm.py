"""A stand-in for vLLM that can fail on demand, for faults a real vLLM cannot be made to show on cue
(a slow answer, a dropped connection, a 500). It speaks vLLM 0.32's wire format for /score and /health."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["ok", "slow", "error500", "error400", "garbage", "incomplete", "drop", "not_ready"]


class FakeVllm(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the stdlib default of 5 refuses connections under a benchmark's load
    mode: Mode = "ok"
    slow_seconds: float = 5.0
    requests: list[dict[str, object]]

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: clients that gave up on a slow answer (the point of some tests) are not errors here."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeVllm
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's uvicorn does
    disable_nagle_algorithm = True  # headers and body go out in separate writes; Nagle would add 40 ms

    def log_message(self, format: str, *args: object) -> None:  # stdlib signature
        """Quiet: the test asserts on responses, not on this server's access log."""

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(503 if self.server.mode == "not_ready" else 200, b"")
        else:
            self._send(404, b'{"detail":"Not Found"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(body)
        mode = self.server.mode
        documents = body["documents"]
        if mode == "slow":
            time.sleep(self.server.slow_seconds)
        if mode == "drop":  # vLLM dying mid-request: the socket closes with no answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "error500":
            error = {
                "error": {
                    "message": "EngineCore died",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            }
            self._send(500, json.dumps(error).encode())
            return
        if mode == "error400":
            error = {
                "error": {"message": "prompt too long", "type": "BadRequestError", "param": None, "code": 400}
            }
            self._send(400, json.dumps(error).encode())
            return
        if mode == "garbage":
            self._send(200, b"<html>proxy error</html>")
            return
        count = len(documents) - (1 if mode == "incomplete" else 0)
        data = [{"index": i, "object": "score", "score": 1.0 / (i + 2)} for i in range(count)]
        usage = {"prompt_tokens": 10, "total_tokens": 10, "completion_tokens": 0}
        response = {
            "id": "score-x",
            "object": "list",
            "created": 0,
            "model": body["model"],
            "data": data,
            "usage": usage,
        }
        self._send(200, json.dumps(response).encode())


@contextmanager
def fake_vllm() -> Iterator[FakeVllm]:
    server = FakeVllm(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    """``python -m tests.fake_vllm PORT``: a healthy stand-in, for benchmarks of the gateway alone."""
    import sys  # noqa: PLC0415

    server = FakeVllm(("127.0.0.1", int(sys.argv[1])), _Handler)
    server.requests = []
    server.serve_forever()


if __name__ == "__main__":
    main()
