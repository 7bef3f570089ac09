"""Granian vs uvicorn for the gateway, measured in one run with wrk (results: docs/benchmarks.md).

    .venv/bin/python benchmarks/server_choice.py [--seconds 10] [--connections 32]

Both servers run the same app factory with one worker, in front of the same fake vLLM (so the model's
speed does not drown the difference), on loopback. Reported: requests/s and latency, and granian's
throughput as a ratio of uvicorn's measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import wrk  # noqa: E402
from gateway.keys import generate  # noqa: E402
from tests.support.procs import free_port, wait_http  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--model-dir", default=str(ROOT / "var" / "models" / "tiny"))
    ns = parser.parse_args()

    raw, line = generate("bench")
    tmp = Path(tempfile.mkdtemp())
    docs = [f"product {i}: running shoes, size {i % 12 + 36}, colour {i % 7}" for i in range(20)]
    request = {"query": "trail running shoes size 42", "documents": docs, "top_n": 5}
    body = json.dumps(request)
    script = wrk.script(tmp / "rerank.lua", request, key=raw)

    upstream_port = free_port()
    stand_in = [sys.executable, "-m", "tests.support.fake_vllm", str(upstream_port)]
    upstream = subprocess.Popen(stand_in, cwd=ROOT)  # noqa: S603
    env = {
        **os.environ,
        "RERANK_MODEL_DIR": ns.model_dir,
        "RERANK_API_KEYS": line,
        "RERANK_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "RERANK_LOG_LEVEL": "warning",  # measure serving, not log writing
    }
    servers = {
        "granian": [sys.executable, "-m", "gateway", "serve"],
        "uvicorn": [
            sys.executable, "-m", "uvicorn", "--factory", "gateway.asgi:app_from_env",
            "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
        ],
    }  # fmt: skip
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        wait_http(f"http://127.0.0.1:{upstream_port}/health", timeout=10)
        for name, command in servers.items():
            port = free_port()
            extra = ["--host", "127.0.0.1", "--port", str(port)] if name == "uvicorn" else []
            proc_env = {**env, "RERANK_HOST": "127.0.0.1", "RERANK_PORT": str(port)}
            proc = subprocess.Popen([*command, *extra], env=proc_env, cwd=ROOT)  # noqa: S603
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(f"{base}/health", timeout=30, proc=proc)
                check = httpx.post(f"{base}/v1/rerank", content=body, headers={
                    "Authorization": f"Bearer {raw}", "content-type": "application/json"})  # fmt: skip
                assert check.status_code == 200, check.text
                wrk.run(f"{base}/health", None, seconds=2, connections=ns.connections, threads=2)  # warm-up
                results[name] = {
                    "health": wrk.run(
                        f"{base}/health", None, seconds=ns.seconds, connections=ns.connections, threads=2
                    ),
                    "rerank": wrk.run(
                        f"{base}/v1/rerank", script, seconds=ns.seconds, connections=ns.connections, threads=2
                    ),
                }
            finally:
                proc.terminate()
                proc.wait(30)
                time.sleep(1)
    finally:
        upstream.terminate()
        upstream.wait(10)
    for route in ("health", "rerank"):
        ratio = results["granian"][route]["rps"] / results["uvicorn"][route]["rps"]
        results.setdefault("ratio_granian_over_uvicorn", {})[route] = {"rps": round(ratio, 2)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
