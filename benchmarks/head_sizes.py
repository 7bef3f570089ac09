"""The request heads real clients send, for the gateway's head budget (results: docs/http.md).

    .venv/bin/python benchmarks/head_sizes.py

A loopback socket records each request's line and head size and answers a minimal Cohere rerank; the
Cohere Python SDK (v1 and v2, which LangChain, LlamaIndex and Haystack call), the TypeScript SDK
(var/tools/node, scripts/install-node-clients.sh) and Chromium with 20 cookies of 100 bytes call it.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import cohere
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ANSWER = b'{"id":"x","results":[],"meta":{"api_version":{"version":"2"}}}'
KEY = "rk_" + "a" * 43
TS_CALL = """
const { CohereClientV2 } = require('cohere-ai');
new CohereClientV2({ token: process.argv[1], environment: process.argv[2] })
  .rerank({ model: 'rerank-v3.5', query: 'q', documents: ['d'] }).catch(() => process.exit(1));
"""


def serve(server: socket.socket, heads: list[tuple[str, int, int]]) -> None:
    while True:
        connection, _ = server.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
                data += chunk
            head = data.split(b"\r\n\r\n")[0]
            lines = head.split(b"\r\n")
            heads.append((lines[0].decode(), len(head) + 4, len(lines) - 1))
            connection.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
                + ANSWER
            )


def main() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    heads: list[tuple[str, int, int]] = []
    threading.Thread(target=serve, args=(server, heads), daemon=True).start()
    calls: dict[str, Callable[[], object]] = {
        "Cohere Python SDK, ClientV2.rerank": lambda: cohere.ClientV2(api_key=KEY, base_url=url).rerank(
            model="rerank-v3.5", query="q", documents=["d"]
        ),
        "Cohere Python SDK, Client.rerank": lambda: cohere.Client(api_key=KEY, base_url=url).rerank(
            model="rerank-v3.5", query="q", documents=["d"]
        ),
        "Cohere TypeScript SDK, CohereClientV2.rerank": lambda: subprocess.run(  # noqa: S603
            ["node", "-e", TS_CALL, KEY, url],  # noqa: S607  # node from PATH, as install-node-clients uses it
            cwd=ROOT / "var" / "tools" / "node",
            check=True,
            timeout=60,
        ),
        "Chromium, GET /docs with 20 cookies of 100 bytes": lambda: browse(url),
    }
    for name, call in calls.items():
        before = len(heads)
        call()
        line, size, count = heads[before]
        print(f"| {name} | `{line}` | {size:,} bytes, {count} headers |")


def browse(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        context = browser.new_context()
        context.add_cookies([{"name": f"c{i}", "value": "v" * 100, "url": url} for i in range(20)])
        context.new_page().goto(f"{url}/docs")
        browser.close()


if __name__ == "__main__":
    main()
