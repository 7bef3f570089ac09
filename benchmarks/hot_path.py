"""The gateway's hot path, measured side by side in one run (results: docs/benchmarks.md).

    .venv/bin/python benchmarks/hot_path.py stand-in [--seconds 8] [--rounds 2] [--baseline-rev 01e366b]
    .venv/bin/python benchmarks/hot_path.py vllm [--seconds 10] [--rounds 2] [--litellm] [--pin]

``stand-in``: the gateway against the fast stand-in vLLM (tests/support/fake_vllm.py), so that only the
gateway's own cost shows. Added latency at concurrency 1 (gateway minus the stand-in called directly with the
same pairs) and throughput at 32 against the gateway as it was at ``--baseline-rev`` (a git worktree of that
commit, same venv, same stand-in).

``vllm``: the real vLLM (tiny model, float32, CPU) started here. Gateway (cache off) against vLLM called
directly for 5, 100 and 1,000 documents; the cache on a repeated hot request and on a Zipf(s=1.1)
workload over 1,000 queries with 50 candidates each; with ``--litellm``, LiteLLM's proxy (its own venv,
scripts/install-litellm.sh) on the same small-request workload in front of the same vLLM. ``--pin`` gives vLLM
CPU 0 to itself (it busy-polls a core while serving) and everything else CPU 1, so that what the gateway adds
is not mixed with the wake-ups it loses to vLLM on a 2-core machine.

Every comparison is interleaved (A B A B ...) so drift on a shared 2-core machine hits both sides.
Numbers are printed as Markdown and kept as JSON under var/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import litellm_peer, wrk  # noqa: E402
from gateway.keys import generate  # noqa: E402
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION  # noqa: E402
from tests.support.procs import free_port, wait_http  # noqa: E402

OUT = ROOT / "var" / "bench"
MODEL = "qwen3-reranker-4b"
MAX_MODEL_LEN = 2048


def documents(count: int, tag: str = "") -> list[str]:
    colours = ["black", "white", "red", "blue", "grey", "green", "orange"]
    return [
        f"{tag}Trail running shoe {i}, size {36 + i % 12}, {colours[i % 7]}, breathable mesh, {120 + i} g"
        for i in range(count)
    ]


def score_body(docs: list[str], query: str = "breathable trail running shoes") -> dict[str, Any]:
    """What the gateway sends vLLM for the same request: same pairs, same instruction."""
    return {"model": MODEL, "queries": query, "documents": docs, "instruction": PRODUCT_SEARCH_INSTRUCTION}


def rerank_body(
    docs: list[str], query: str = "breathable trail running shoes", **extra: Any
) -> dict[str, Any]:
    return {"model": MODEL, "query": query, "documents": docs, **extra}


class Procs:
    """Processes started by this run, stopped (SIGTERM, then SIGKILL) at the end whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: list[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def processes() -> Iterator[Procs]:
    procs = Procs()
    try:
        yield procs
    finally:
        procs.stop_all()


def gateway(
    procs: Procs, name: str, *, upstream: str, keys: str, python_path: Path = ROOT, **env: str
) -> str:
    port = free_port()
    full = {
        **os.environ,
        "PYTHONPATH": str(python_path),
        "RERANK_MODEL_DIR": str(ROOT / "var" / "models" / "tiny"),
        "RERANK_API_KEYS": keys,
        "RERANK_UPSTREAM_URL": upstream,
        "RERANK_HOST": "127.0.0.1",
        "RERANK_PORT": str(port),
        "RERANK_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "RERANK_DTYPE": "float32",
        "RERANK_METRICS_PORT": str(free_port()),  # several gateways per run: the default port would clash
        **env,
    }
    proc = procs.start([sys.executable, "-m", "gateway"], env=full, log=OUT / f"{name}.log", cwd=python_path)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=60, proc=proc)
    GATEWAYS[url] = proc.pid
    return url


def stand_in_vllm(procs: Procs) -> str:
    """The fast stand-in vLLM (tests/support/fake_vllm.py) once it answers; its URL."""
    port = free_port()
    command = [sys.executable, "-m", "tests.support.fake_vllm", str(port)]
    procs.start(command, env=dict(os.environ), log=OUT / "stand-in.log")
    upstream = f"http://127.0.0.1:{port}"
    wait_http(f"{upstream}/health", timeout=10)
    return upstream


GATEWAYS: dict[str, int] = {}  # a gateway's URL -> its server process, whose workers' CPU time is read


def _workers_cpu_s(server_pid: int) -> float:
    """User + system CPU seconds of the server's worker processes (granian's children), from /proc."""
    children = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True, check=False)  # noqa: S603, S607
    ticks = 0
    for pid in children.stdout.split():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load(url: str, lua: Path, *, seconds: float, connections: int) -> Callable[[], wrk.Result]:
    """One wrk run against ``url``, to be called later (by ``interleave``). For our gateways the result
    also has the workers' CPU time per request: unlike throughput on a shared 2-core machine, it does not
    depend on what else got the cores during the run."""
    server = next((pid for base, pid in GATEWAYS.items() if url.startswith(base)), None)

    def run() -> wrk.Result:
        before = _workers_cpu_s(server) if server is not None else 0.0
        result = wrk.run(url, lua, seconds=seconds, connections=connections)
        if server is not None and result["requests"]:
            result["cpu_us_per_request"] = (_workers_cpu_s(server) - before) / result["requests"] * 1e6
        return result

    return run


def interleave(targets: dict[str, Callable[[], wrk.Result]], rounds: int) -> dict[str, wrk.Result]:
    runs: dict[str, list[wrk.Result]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            runs[name].append(target())
    return {name: wrk.merge(results) for name, results in runs.items()}


def check(url: str, body: Any, key: str | None = None, path: str = "") -> None:
    """One request before measuring: it must succeed (a benchmark of errors measures nothing)."""
    command = [
        "curl",
        "-fsS",
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps(body),
    ]
    if key is not None:
        command += ["-H", f"Authorization: Bearer {key}"]
    subprocess.run([*command, url + path], check=True, timeout=120)  # noqa: S603


def baseline_worktree(rev: str) -> Path:
    path = OUT / f"baseline-{rev}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True)  # noqa: S603, S607
    return path


def stand_in(ns: argparse.Namespace) -> dict[str, Any]:
    raw, line = generate("bench")
    docs = documents(5)
    results: dict[str, Any] = {"documents": 5}
    with processes() as procs:
        upstream = stand_in_vllm(procs)
        ours = gateway(
            procs, "gateway-standin", upstream=upstream, keys=line, RERANK_SCORE_CACHE_MAX_BYTES="0"
        )
        # The same code with its metrics off: what counting every request costs.
        unmetered = gateway(
            procs,
            "gateway-standin-no-metrics",
            upstream=upstream,
            keys=line,
            RERANK_SCORE_CACHE_MAX_BYTES="0",
            RERANK_METRICS_PORT="0",
        )
        base = gateway(
            procs,
            "gateway-baseline",
            upstream=upstream,
            keys=line,
            python_path=baseline_worktree(ns.baseline_rev),
            RERANK_SCORE_CACHE_MAX_BYTES="0",  # revisions with the cache would answer the repeats from it
        )
        direct_lua = wrk.script(OUT / "score5.lua", score_body(docs))
        rerank_lua = wrk.script(OUT / "rerank5.lua", rerank_body(docs), key=raw)
        for url in (ours, unmetered, base):
            check(url, rerank_body(docs), raw, "/v2/rerank")
        seconds = ns.seconds
        for url in (ours, unmetered, base):  # warm-up
            wrk.run(f"{url}/v2/rerank", rerank_lua, seconds=2, connections=8)
        for c in (1, 32):
            results[f"c{c}"] = interleave(
                {
                    "direct": load(f"{upstream}/score", direct_lua, seconds=seconds, connections=c),
                    "gateway": load(f"{ours}/v2/rerank", rerank_lua, seconds=seconds, connections=c),
                    "no_metrics": load(f"{unmetered}/v2/rerank", rerank_lua, seconds=seconds, connections=c),
                    "baseline": load(f"{base}/v2/rerank", rerank_lua, seconds=seconds, connections=c),
                },
                ns.rounds,
            )
    c1, c32 = results["c1"], results["c32"]
    results["added_p50_ms"] = round(c1["gateway"]["p50_ms"] - c1["direct"]["p50_ms"], 3)
    results["added_p99_ms"] = round(c1["gateway"]["p99_ms"] - c1["direct"]["p99_ms"], 3)
    results["no_metrics_added_p50_ms"] = round(c1["no_metrics"]["p50_ms"] - c1["direct"]["p50_ms"], 3)
    results["baseline_added_p50_ms"] = round(c1["baseline"]["p50_ms"] - c1["direct"]["p50_ms"], 3)
    results["c32_gateway_over_baseline"] = round(c32["gateway"]["rps"] / c32["baseline"]["rps"], 2)
    results["c32_gateway_over_no_metrics"] = round(c32["gateway"]["rps"] / c32["no_metrics"]["rps"], 2)
    for name in ("gateway", "no_metrics"):
        results[f"c32_cpu_{name}_over_baseline"] = round(
            c32[name]["cpu_us_per_request"] / c32["baseline"]["cpu_us_per_request"], 3
        )
    return results


def zipf_workload(queries: int, candidates: int, s: float) -> tuple[list[dict[str, Any]], list[float]]:
    bodies = [
        rerank_body(documents(candidates, tag=f"[q{q}] "), query=f"trail running shoes for route {q}")
        for q in range(queries)
    ]
    return bodies, [1 / (rank**s) for rank in range(1, queries + 1)]


def start_vllm(procs: Procs, log: str, *, pin: bool = False) -> str:
    """The real vLLM (tiny model, float32, CPU) once it answers; its URL. ``pin``: vLLM (and the processes
    it spawns) on CPU 0, everything this process starts later on CPU 1."""
    port = free_port()
    env = {
        **os.environ,
        "RERANK_MODEL_DIR": str(ROOT / "var" / "models" / "tiny"),
        "RERANK_DEVICE": "cpu",
        "RERANK_DTYPE": "float32",
        "RERANK_SERVED_MODEL_NAME": MODEL,
        "RERANK_VLLM_PORT": str(port),
        "RERANK_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "HF_HUB_OFFLINE": "1",
    }
    if pin:
        os.sched_setaffinity(0, {0})
    proc = procs.start([sys.executable, "-m", "model_setup", "serve"], env=env, log=OUT / log)
    if pin:
        os.sched_setaffinity(0, {1})
    upstream = f"http://127.0.0.1:{port}"
    wait_http(f"{upstream}/health", timeout=600, proc=proc)
    return upstream


def real_vllm(ns: argparse.Namespace) -> dict[str, Any]:
    raw, line = generate("bench")
    results: dict[str, Any] = {}
    with processes() as procs:
        upstream = start_vllm(procs, "vllm.log", pin=ns.pin)
        plain = gateway(procs, "gateway-vllm", upstream=upstream, keys=line, RERANK_SCORE_CACHE_MAX_BYTES="0")
        cached = gateway(procs, "gateway-vllm-cache", upstream=upstream, keys=line)
        seconds, rounds = ns.seconds, ns.rounds

        def pair(count: int, connections: int, secs: float) -> dict[str, wrk.Result]:
            docs = documents(count)
            direct_lua = wrk.script(OUT / f"score{count}.lua", score_body(docs))
            rerank_lua = wrk.script(OUT / f"rerank{count}.lua", rerank_body(docs, cache=False), key=raw)
            check(upstream, score_body(docs), path="/score")
            check(plain, rerank_body(docs), raw, "/v2/rerank")
            return interleave(
                {
                    "direct": load(f"{upstream}/score", direct_lua, seconds=secs, connections=connections),
                    "gateway": load(f"{plain}/v2/rerank", rerank_lua, seconds=secs, connections=connections),
                },
                rounds,
            )

        small = pair(5, 1, seconds)
        results["docs5_c1"] = small
        results["docs5_added_p50_ms"] = round(small["gateway"]["p50_ms"] - small["direct"]["p50_ms"], 3)
        for count, connections in ((100, 4), (1000, 2)):
            measured = pair(count, connections, seconds * (6 if count == 1000 else 1))
            results[f"docs{count}_c{connections}"] = measured
            results[f"docs{count}_throughput_ratio"] = round(
                measured["gateway"]["rps"] / measured["direct"]["rps"], 3
            )

        # A hot request: the same 50 candidates again and again, answered from the cache after the first.
        hot = documents(50, tag="[hot] ")
        hot_lua = wrk.script(OUT / "rerank-hot.lua", rerank_body(hot), key=raw)
        direct_hot = wrk.script(OUT / "score-hot.lua", score_body(hot))
        check(cached, rerank_body(hot), raw, "/v2/rerank")
        results["hot50_c1"] = interleave(
            {
                "direct": load(f"{upstream}/score", direct_hot, seconds=seconds, connections=1),
                "cached": load(f"{cached}/v2/rerank", hot_lua, seconds=seconds, connections=1),
            },
            rounds,
        )
        hot_c1 = results["hot50_c1"]
        results["hot50_speedup_p50"] = round(hot_c1["direct"]["p50_ms"] / hot_c1["cached"]["p50_ms"], 1)
        results["hot50_speedup_rps"] = round(hot_c1["cached"]["rps"] / hot_c1["direct"]["rps"], 1)

        # Zipf(s=1.1) over 1,000 queries, 50 candidates each: a fresh gateway per side, so both start cold.
        bodies, weights = zipf_workload(1000, 50, 1.1)
        zipf_lua = wrk.weighted_script(OUT / "zipf.lua", bodies, weights, key=raw, seed=11)
        uncached_bodies = [{**body, "cache": False} for body in bodies]
        zipf_off_lua = wrk.weighted_script(OUT / "zipf-off.lua", uncached_bodies, weights, key=raw, seed=11)
        zipf_seconds = seconds * 3
        cold = gateway(procs, "gateway-vllm-zipf", upstream=upstream, keys=line)
        results["zipf_c8"] = {
            "cache_off": wrk.run(f"{plain}/v2/rerank", zipf_off_lua, seconds=zipf_seconds, connections=8),
            "cache_on": wrk.run(f"{cold}/v2/rerank", zipf_lua, seconds=zipf_seconds, connections=8),
        }
        zipf = results["zipf_c8"]
        results["zipf_throughput_ratio"] = round(zipf["cache_on"]["rps"] / zipf["cache_off"]["rps"], 2)
        results["zipf_p50_ratio"] = round(zipf["cache_off"]["p50_ms"] / zipf["cache_on"]["p50_ms"], 2)

        if ns.litellm:
            results["litellm"] = peer(procs, upstream, raw, plain, ns)
    return results


def peer(procs: Procs, upstream: str, raw: str, plain: str, ns: argparse.Namespace) -> dict[str, Any]:
    """LiteLLM's proxy and our gateway, each against vLLM's own route for the same 5-document request."""
    subprocess.run([str(ROOT / "scripts" / "install-litellm.sh")], check=True)  # noqa: S603
    port = free_port()
    config = OUT / "litellm.yaml"
    config.write_text(litellm_peer.config_yaml(model_name=MODEL, vllm_url=upstream))
    master = "sk-bench-" + raw[-12:]
    proxy = litellm_peer.start(config_path=config, port=port, master_key=master, log_path=OUT / "litellm.log")
    procs.started.append(proxy)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}{litellm_peer.LIVENESS_PATH}", timeout=120, proc=proxy)
    docs = documents(5)
    body = litellm_peer.rerank_body(MODEL, "breathable trail running shoes", docs)
    check(url, body, master, litellm_peer.RERANK_PATH)
    check(upstream, body, path="/rerank")
    lite_lua = wrk.script(OUT / "litellm5.lua", body, key=master)
    vllm_rerank_lua = wrk.script(OUT / "vllm-rerank5.lua", body)
    ours_lua = wrk.script(OUT / "ours5.lua", rerank_body(docs, cache=False), key=raw)
    direct_lua = wrk.script(OUT / "score5.lua", score_body(docs))
    secs = ns.seconds
    out: dict[str, Any] = {"version": litellm_peer.LITELLM_VERSION, "config": config.read_text()}
    for connections in (1, 8):
        out[f"c{connections}"] = interleave(
            {
                "vllm_rerank": load(
                    f"{upstream}/rerank", vllm_rerank_lua, seconds=secs, connections=connections
                ),
                "litellm": load(
                    url + litellm_peer.RERANK_PATH, lite_lua, seconds=secs, connections=connections
                ),
                "vllm_score": load(f"{upstream}/score", direct_lua, seconds=secs, connections=connections),
                "gateway": load(f"{plain}/v2/rerank", ours_lua, seconds=secs, connections=connections),
            },
            ns.rounds,
        )
    c1, c8 = out["c1"], out["c8"]
    out["litellm_added_p50_ms"] = round(c1["litellm"]["p50_ms"] - c1["vllm_rerank"]["p50_ms"], 3)
    out["gateway_added_p50_ms"] = round(c1["gateway"]["p50_ms"] - c1["vllm_score"]["p50_ms"], 3)
    out["litellm_c8_throughput_ratio"] = round(c8["litellm"]["rps"] / c8["vllm_rerank"]["rps"], 3)
    out["gateway_c8_throughput_ratio"] = round(c8["gateway"]["rps"] / c8["vllm_score"]["rps"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=["stand-in", "vllm"])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-rev", default="01e366b", help="the gateway before the hot-path work")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy (vllm target)")
    parser.add_argument(
        "--pin", action="store_true", help="vllm target: vLLM alone on CPU 0, gateways and wrk on CPU 1"
    )
    ns = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = stand_in(ns) if ns.target == "stand-in" else real_vllm(ns)
    results["seconds_taken"] = round(time.time() - started)
    target = OUT / f"hot_path-{ns.target}{'-pinned' if ns.pin else ''}.json"
    target.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
