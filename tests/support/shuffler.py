"""A broken candidate for the agreement gate: an HTTP server in front of a real gateway that forwards every
request and answers a rerank with the products permuted. The wire format stays Cohere's exactly (the same
body, scores still descending, each result keeping its own document), only which product holds which
score is shuffled, as a model with broken weights would answer.

The permutation is seeded by the request body, so the same search is shuffled the same way every time.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

# Hop-by-hop and framing headers are the proxy's own to set; everything else (Authorization) is forwarded.
NOT_FORWARDED = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding"})


def shuffle_results(body: dict[str, Any], seed: str) -> dict[str, Any]:
    """``body`` with its results' products permuted and its scores left in place (a permutation that
    moves at least one product whenever there are two)."""
    results: list[dict[str, Any]] = body["results"]
    order = list(range(len(results)))
    random.Random(seed).shuffle(order)
    if order == sorted(order) and len(order) > 1:
        order = order[1:] + order[:1]
    moved = [
        {**results[source], "relevance_score": result["relevance_score"]}
        for result, source in zip(results, order, strict=True)
    ]
    return {**body, "results": moved}


class ShufflingProxy:
    """``with ShufflingProxy(gateway.url) as proxy:`` serves on ``proxy.url`` until the block ends."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.shuffled = 0  # rerank answers permuted so far
        self._client = httpx.Client(timeout=120)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="shuffler", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        kept = {name: value for name, value in headers.items() if name.lower() not in NOT_FORWARDED}
        return self._client.request(method, self.upstream + path, headers=kept, content=body)

    def answer(self, path: str, sent: bytes, response: httpx.Response) -> bytes:
        if not (path.rstrip("/").endswith("/rerank") and response.status_code == 200):
            return response.content
        seed = hashlib.sha256(sent).hexdigest()
        body = json.dumps(shuffle_results(response.json(), seed), ensure_ascii=False).encode()
        with self._lock:
            self.shuffled += 1
        return body

    def __enter__(self) -> ShufflingProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._client.close()


def _handler(proxy: ShufflingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects

        def _relay(self) -> None:
            sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            response = proxy.forward(self.command, self.path, dict(self.headers.items()), sent)
            body = proxy.answer(self.path, sent, response)
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in NOT_FORWARDED | {"content-encoding", "date", "server"}:  # ours now
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _relay  # http.server dispatches on these names

        def log_message(self, format: str, *args: Any) -> None:  # the base class names it format
            """Quiet: the test reads the command's output, not the proxy's access log."""

    return Handler
