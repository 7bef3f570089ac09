"""Stand-in children for entrypoint.sh, used as its ``RERANK_PYTHON``.

``-m model_setup serve`` and ``-m gateway serve`` become small HTTP servers whose behaviour the ``STUB_*``
variables choose; every other invocation (``verify``, ``args``, the health probes) is the real interpreter.
Each stub appends what happens to it to ``STUB_EVENTS`` as ``<monotonic time> <name> <event>`` lines, so a
test can assert the order of a shutdown. This is how entrypoint supervision is tested in seconds; the real
vLLM runs are in tests/test_entrypoint.py too, fewer of them.

STUB_VLLM:     ok | never-healthy | exit:<status> (during start-up)
STUB_GATEWAY:  ok | exit:<status> (right after start) | ignore-term
STUB_STOP_S:   seconds each stub takes to stop after SIGTERM (default 0.3: an in-flight request finishing)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def record(name: str, event: str) -> None:
    with Path(os.environ["STUB_EVENTS"]).open("a") as events:
        events.write(f"{time.monotonic():.3f} {name} {event}\n")


def serve(name: str) -> None:
    mode = os.environ.get(f"STUB_{name.upper()}", "ok")
    record(name, "started")
    record(name, "env " + json.dumps({key: os.environ.get(key) for key in ENV_SEEN} | process_facts()))
    if mode.startswith("exit:"):
        time.sleep(0.2)
        record(name, "exiting")
        raise SystemExit(int(mode.split(":", 1)[1]))
    stopping = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        record(name, f"got {signal.Signals(signum).name}")
        if mode != "ignore-term":
            stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 503 if mode == "never-healthy" else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # stdlib signature
            """Quiet."""

    port = int(os.environ["RERANK_VLLM_PORT" if name == "vllm" else "RERANK_PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping.wait()
    time.sleep(float(os.environ.get("STUB_STOP_S", "0.3")))
    server.shutdown()
    record(name, "stopped")


ENV_SEEN = ("RERANK_VLLM_HOST", "RERANK_UPSTREAM_URL", "RERANK_HOST", "HF_HUB_OFFLINE", "HOME", "USER")


def process_facts() -> dict[str, object]:
    return {"own_group": os.getpgrp() == os.getpid(), "uid": os.getuid()}


def main() -> None:
    args = sys.argv[1:]
    if args[:3] == ["-m", "model_setup", "serve"]:
        serve("vllm")
    elif args[:3] == ["-m", "gateway", "serve"]:
        serve("gateway")
    else:
        os.execv(sys.executable, [sys.executable, *args])  # noqa: S606  # the test's own interpreter


if __name__ == "__main__":
    main()
