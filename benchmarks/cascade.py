"""A cascade against the large model alone, on the real vLLM (CPU): tokens each model scores and throughput,
for requests of 200 candidates (results: docs/fleet.md, "What a cascade saves").

    .venv/bin/python benchmarks/cascade.py [--rounds 6] [--k 50]

Two random-weight Qwen3 models whose per-token work differs about as 0.6B's and 4B's do (non-embedding
parameters 1 : 8; model_setup tiny --hidden/--layers), served as a fleet by entrypoint.sh (two local vLLMs
and a cascade over them), one gateway. Each round sends one request of 200 products to each of large-only,
the cascade and small-only, in a rotating order (interleaved: the machine's other load hits all three alike),
one request at a time. Reported: tokens per model per request (from ``meta.tokens.by_model``, which
tests/test_fleet.py holds equal to what each vLLM counts) and requests per second, each as a ratio to
large-only from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.keys import generate  # noqa: E402
from model_setup.tiny import write_tiny_model  # noqa: E402
from tests.support.entrypoint_run import EntrypointRun  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

SMALL, LARGE, CASCADE = "bench-small", "bench-large", "bench-cascade"
# Non-embedding parameters per layer ~ 8 h^2 (attention: q and o h x h, k and v h x 32 with one KV head;
# MLP 3 x h x 2h): small 2 x 8 x 256^2 = 1.0M, large 4 x 8 x 512^2 = 8.4M, 1 : 8, as 0.6B's 440M to 4B's
# 3.63B.
SMALL_SHAPE = {"layers": 2, "hidden": 256}
LARGE_SHAPE = {"layers": 4, "hidden": 512}
QUERY = "waterproof hiking boots for women"
COLOURS = ("black", "brown", "grey", "olive", "navy", "tan", "red", "blue")
KINDS = (
    "waterproof hiking boots", "trail running shoes", "rain boots", "winter snow boots", "hiking socks",
    "walking sandals", "leather ankle boots", "trekking poles", "gaiters", "insoles",
)  # fmt: skip
AUDIENCE = ("women's", "men's", "kids'", "unisex")


def products(n: int) -> list[str]:
    """200 product titles of shop-like length (about 20 to 30 tokens each)."""
    return [
        f"{AUDIENCE[i % 4]} {KINDS[i % 10]}, {COLOURS[i % 8]}, size {36 + i % 12}, "
        f"breathable lining, rubber sole, model {1000 + i}"
        for i in range(n)
    ]


def fleet_file(path: Path, small: Path, large: Path, k: int) -> None:
    path.write_text(
        f"""default = "{LARGE}"

[[models]]
name = "{SMALL}"
model_dir = "{small}"

[[models]]
name = "{LARGE}"
model_dir = "{large}"

[[cascades]]
name = "{CASCADE}"
first = "{SMALL}"
second = "{LARGE}"
top_k = {k}
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=200)
    ns = parser.parse_args()

    models = ROOT / "var" / "models"
    small = write_tiny_model(models / "bench-small", seed=1, **SMALL_SHAPE)
    large = write_tiny_model(models / "bench-large", seed=2, **LARGE_SHAPE)
    work = Path(tempfile.mkdtemp(prefix="cascade-bench-"))
    raw, line = generate("bench")
    (work / "keys").write_text(line + "\n")
    fleet_file(work / "fleet.toml", small, large, ns.k)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "VLLM_"))}
    env.update(
        RERANK_DEVICE="cpu",
        RERANK_FLEET_FILE=str(work / "fleet.toml"),
        RERANK_API_KEYS_FILE=str(work / "keys"),
        RERANK_PYTHON=sys.executable,
        RERANK_PORT=str(port),
        RERANK_VLLM_PORT=str(free_port()),
        RERANK_METRICS_PORT="0",
        RERANK_HOST="127.0.0.1",
        RERANK_DTYPE="float32",
        RERANK_MAX_MODEL_LEN="2048",
        RERANK_SCORE_CACHE_MAX_BYTES="0",  # every request scores anew
        RERANK_CACHE_DIR=str(ROOT / "var" / "test-run" / "entrypoint-cache"),
        VLLM_CPU_KVCACHE_SPACE="1",
    )
    run = EntrypointRun(env, work / "fleet.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while not _ready(url):
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the fleet did not start:\n{run.log_text()[-3000:]}")
            time.sleep(2)
        measure(url, raw, ns)
    finally:
        run.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def measure(url: str, key: str, ns: argparse.Namespace) -> None:
    documents = products(ns.candidates)
    endpoints = (LARGE, CASCADE, SMALL)
    seconds: dict[str, list[float]] = {name: [] for name in endpoints}
    tokens: dict[str, dict[str, int]] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
        for name in endpoints:  # warm-up: compile paths, first-call costs
            client.post("/v2/rerank", json={"model": name, "query": QUERY, "documents": documents[:20]})
        for round_ in range(ns.rounds):
            rotated = endpoints[round_ % 3 :] + endpoints[: round_ % 3]
            for name in rotated:
                query = f"{QUERY} {round_}"  # a fresh prefix each round: no request reuses another's
                started = time.perf_counter()
                answer = client.post(
                    "/v2/rerank", json={"model": name, "query": query, "documents": documents}
                )
                seconds[name].append(time.perf_counter() - started)
                answer.raise_for_status()
                tokens[name] = answer.json()["meta"]["tokens"]["by_model"]
    base = statistics.median(seconds[LARGE])
    rows = []
    for name in endpoints:
        median = statistics.median(seconds[name])
        rows.append(
            {
                "endpoint": name,
                "small_tokens": tokens[name].get(SMALL, 0),
                "large_tokens": tokens[name].get(LARGE, 0),
                "median_s": round(median, 3),
                "requests_per_s": round(1 / median, 3),
                "throughput_vs_large_only": round(base / median, 2),
            }
        )
    print(json.dumps({"candidates": ns.candidates, "k": ns.k, "rounds": ns.rounds, "rows": rows}, indent=2))
    print("\n| endpoint | small-model tokens | large-model tokens | median s / request | vs large-only |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['endpoint']} | {row['small_tokens']:,} | {row['large_tokens']:,} | {row['median_s']} | "
            f"{row['throughput_vs_large_only']}x |"
        )


if __name__ == "__main__":
    main()
