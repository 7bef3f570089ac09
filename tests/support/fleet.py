"""The fleet under test: two tiny models of different seeds and a cascade over them, served by entrypoint.sh
as a container would serve them (tests/test_fleet.py).

The "large" model is the session's vLLM, a remote upstream of the fleet, so the fleet starts one vLLM of its
own (the "small" one, local: the entrypoint starts and supervises it) and the suite pays for one more vLLM
start, not two. Both are the same tiny architecture; what differs is their weights (the seed), so every
check below can tell which model scored what.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.entrypoint_run import EntrypointRun, children_of, cmdline
from tests.support.procs import ROOT, TEST_DTYPE, free_port
from tests.support.stack import SERVED_NAME, TEST_MAX_MODEL_LEN, TEST_MAX_TOKENS_PER_DOC, VLLM_START_BUDGET_S

SMALL = "qwen3-reranker-0.6b"  # local: the tiny model of seed 1, started by the entrypoint
LARGE = SERVED_NAME  # remote: the session's vLLM (the tiny model of seed 0)
CASCADE = "qwen3-reranker-cascade"
TOP_K = 5
MAX_TOP_K = 20


def fleet_file(path: Path, *, small_dir: Path, large_dir: Path, small_port: int, large_url: str) -> Path:
    path.write_text(
        f"""# tests/support/fleet.py: the small model here, the large one the session's vLLM
default = "{LARGE}"

[[models]]
name = "{SMALL}"
aliases = ["small"]
model_dir = "{small_dir}"
port = {small_port}
dtype = "{TEST_DTYPE}"

[[models]]
name = "{LARGE}"
aliases = ["large"]
model_dir = "{large_dir}"
upstream_url = "{large_url}"
dtype = "{TEST_DTYPE}"

[[cascades]]
name = "{CASCADE}"
aliases = ["cascade"]
first = "{SMALL}"
second = "{LARGE}"
top_k = {TOP_K}
max_top_k = {MAX_TOP_K}
"""
    )
    return path


@dataclass
class FleetRun:
    run: EntrypointRun
    url: str
    metrics_url: str
    small_vllm_url: str  # the local vLLM, on loopback
    large_vllm_url: str  # the session's

    def small_vllm_pid(self) -> int:
        """The local vLLM's API server process (the entrypoint's child, in its own group)."""
        for pid in children_of(self.run.pid):
            line = cmdline(pid)
            if "vllm.entrypoints.openai.api_server" in line and f"--served-model-name {SMALL}" in line:
                return pid
        raise AssertionError("no vLLM of the small model under the entrypoint")


def start_fleet(
    artifacts: Path, *, keys_file: Path, small_dir: Path, large_dir: Path, large_url: str
) -> FleetRun:
    small_port, port, metrics_port = free_port(), free_port(), free_port()
    path = fleet_file(
        artifacts / "fleet.toml",
        small_dir=small_dir,
        large_dir=large_dir,
        small_port=small_port,
        large_url=large_url,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "VLLM_"))}
    env.update(
        RERANK_DEVICE="cpu",
        RERANK_FLEET_FILE=str(path),
        RERANK_API_KEYS_FILE=str(keys_file),
        RERANK_PYTHON=sys.executable,
        RERANK_PORT=str(port),
        RERANK_METRICS_PORT=str(metrics_port),
        RERANK_HOST="127.0.0.1",
        RERANK_DTYPE=TEST_DTYPE,
        RERANK_MAX_MODEL_LEN=str(TEST_MAX_MODEL_LEN),
        RERANK_MAX_TOKENS_PER_DOC=str(TEST_MAX_TOKENS_PER_DOC),
        # Off: the token checks compare with what each vLLM counted, which a cache hit would not reach.
        RERANK_SCORE_CACHE_MAX_BYTES="0",
        RERANK_CACHE_DIR=str(ROOT / "var" / "test-run" / "entrypoint-cache"),
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    run = EntrypointRun(env, artifacts / "fleet.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + VLLM_START_BUDGET_S + 60
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            run.close()
            raise RuntimeError(
                f"the fleet's entrypoint exited {run.proc.returncode}:\n{run.log_text()[-4000:]}"
            )
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return FleetRun(
                    run, url, f"http://127.0.0.1:{metrics_port}", f"http://127.0.0.1:{small_port}", large_url
                )
        except httpx.HTTPError:
            pass
        time.sleep(1)
    run.close()
    raise TimeoutError(f"the fleet was not ready in time:\n{run.log_text()[-4000:]}")
