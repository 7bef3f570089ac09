"""What the metrics port shows during a load, next to what the load generator measured (docs/metrics.md).

    .venv/bin/python benchmarks/scrape.py [--seconds 30] [--connections 8]

The real vLLM (tiny model, float32, CPU) and one gateway with the score cache on serve a Zipf(s=1.1)
workload over 1,000 queries of 50 candidates (the hot-path benchmark's) from wrk. The metrics port is
scraped half-way (vLLM's queue under load) and after the run; quantiles come from the histogram buckets
the way PromQL's histogram_quantile computes them. Scrapes are kept under var/bench/.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks import wrk  # noqa: E402
from benchmarks.hot_path import OUT, check, gateway, processes, start_vllm, zipf_workload  # noqa: E402
from gateway.keys import generate  # noqa: E402
from gateway.observe.metrics import FLUSH_INTERVAL_S  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

ROUTE = "/v2/rerank"


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:  # noqa: S310  # our own port
        text: str = answer.read().decode()
    return text


def total(text: str, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def quantile(text: str, histogram: str, q: float, **labels: str) -> float:
    """histogram_quantile(q, ...) over the cumulative buckets: linear within the bucket that holds q."""
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"{histogram}_bucket" and labels.items() <= s.labels.items()
    )
    count = buckets[-1][1]
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = upper, cumulative
    return lower


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--connections", type=int, default=8)
    ns = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raw, line = generate("bench")
    with processes() as procs:
        upstream = start_vllm(procs, "vllm-scrape.log")
        metrics_port = free_port()
        url = gateway(
            procs, "gateway-scrape", upstream=upstream, keys=line, RERANK_METRICS_PORT=str(metrics_port)
        )
        metrics = f"http://127.0.0.1:{metrics_port}"
        bodies, weights = zipf_workload(1000, 50, 1.1)
        lua = wrk.weighted_script(OUT / "zipf.lua", bodies, weights, key=raw, seed=11)
        check(url, bodies[0], raw, ROUTE)
        time.sleep(2 * FLUSH_INTERVAL_S)  # the check request is in the workers' totals before we start
        before = scrape(metrics)
        command = ["wrk", "-t1", f"-c{ns.connections}", f"-d{ns.seconds:g}s", "--latency", "-s", str(lua)]
        load = subprocess.Popen([*command, url + ROUTE], stdout=subprocess.PIPE, text=True)  # noqa: S603
        time.sleep(ns.seconds / 2)
        middle = scrape(metrics)
        out, _ = load.communicate(timeout=ns.seconds + 120)
        time.sleep(2 * FLUSH_INTERVAL_S)  # the workers write their totals once a second
        after = scrape(metrics)
    for name, text in (("mid", middle), ("end", after)):
        (OUT / f"scrape-{name}.txt").write_text(text)
    sent = float(out.split(" requests in ")[0].split()[-1])

    def counted(text: str) -> float:
        return total(text, "rerank_requests_total", route=ROUTE)

    pairs = {
        kind: total(after, "rerank_score_cache_pairs_total", result=kind)
        for kind in ("hit", "coalesced", "miss")
    }
    results: dict[str, Any] = {
        "seconds": ns.seconds,
        "connections": ns.connections,
        "wrk_requests": sent,
        "counted_requests": counted(after) - counted(before),
        "wrk_latency": {
            line.split()[0]: line.split()[1]
            for line in out.splitlines()
            if line.strip().startswith(("50%", "99%"))
        },
        "total_p50_ms": round(1000 * quantile(after, "rerank_request_duration_seconds", 0.5, route=ROUTE), 3),
        "total_p99_ms": round(
            1000 * quantile(after, "rerank_request_duration_seconds", 0.99, route=ROUTE), 3
        ),
        "gateway_p50_ms": round(
            1000 * quantile(after, "rerank_gateway_duration_seconds", 0.5, route=ROUTE), 3
        ),
        "gateway_p99_ms": round(
            1000 * quantile(after, "rerank_gateway_duration_seconds", 0.99, route=ROUTE), 3
        ),
        "upstream_p50_ms": round(
            1000 * quantile(after, "rerank_upstream_duration_seconds", 0.5, route=ROUTE), 3
        ),
        "upstream_p99_ms": round(
            1000 * quantile(after, "rerank_upstream_duration_seconds", 0.99, route=ROUTE), 3
        ),
        "cache_pairs": pairs,
        "cache_hit_ratio": round(pairs["hit"] / max(sum(pairs.values()), 1), 3),
        "mid_vllm_num_requests_running": total(middle, "vllm:num_requests_running"),
        "mid_vllm_num_requests_waiting": total(middle, "vllm:num_requests_waiting"),
        "mid_vllm_kv_cache_usage_perc": total(middle, "vllm:kv_cache_usage_perc"),
        "mid_in_flight": total(middle, "rerank_requests_in_flight"),
        "vllm_prompt_tokens_total": total(after, "vllm:prompt_tokens_total"),
        "search_units_total": total(after, "rerank_search_units_total", key_id="bench"),
    }
    (OUT / "scrape.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
