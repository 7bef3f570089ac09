"""What counting one request costs: the gateway's in-memory counts (gateway/observe/metrics.py) against
prometheus-client's multiprocess mode (a locked mmap write per increment) with the same families and the
same observations, measured with pytest-benchmark in one run.

    ./scripts/test.sh tests/test_metrics_benchmark.py --benchmark-columns=min,median,mean,ops,rounds

The ratio is in docs/benchmarks.md ("Metrics overhead").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from pytest_benchmark.fixture import BenchmarkFixture

from gateway.observe.metrics import HELP, LATENCY_BUCKETS, SIZE_BUCKETS, Metrics
from gateway.record import RequestRecord

pytestmark = pytest.mark.unit

RECORD = RequestRecord(
    request_id="bench",
    method="POST",
    route="/v2/rerank",
    key_id="shop-a",
    model="qwen3-reranker-4b",
    status=200,
    duration_ms=0.6,
    upstream_ms=0.2,
    documents=5,
    chunks=5,
    search_units=1,
    limit="unlimited",
    cache_hits=2,
    cache_shared=0,
    cache_misses=3,
)


def ours(metrics: Metrics, in_flight: list[int]) -> Callable[[], None]:
    def once() -> None:
        in_flight[0] += 1  # what InFlight does around a request
        metrics.observe(RECORD)
        in_flight[0] -= 1

    return once


@pytest.fixture
def multiprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The same families in prometheus-client's multiprocess mode, as the gateway first had them."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    r = CollectorRegistry(auto_describe=False)
    requests = Counter("rerank_requests", HELP["rerank_requests"], ["route", "status", "key_id"], registry=r)
    timers = [
        Histogram(name, HELP[name], ["route"], buckets=LATENCY_BUCKETS, registry=r).labels("/v2/rerank")
        for name in (
            "rerank_request_duration_seconds",
            "rerank_upstream_duration_seconds",
            "rerank_gateway_duration_seconds",
        )
    ]
    sizes = [
        Histogram(name, HELP[name], buckets=SIZE_BUCKETS, registry=r)
        for name in ("rerank_request_documents", "rerank_request_chunks", "rerank_request_search_units")
    ]
    units = Counter("rerank_search_units", HELP["rerank_search_units"], ["key_id"], registry=r)
    name = "rerank_rate_limit_decisions"
    decisions = Counter(name, HELP[name], ["key_id", "decision", "limit"], registry=r)
    pairs = Counter("rerank_score_cache_pairs", HELP["rerank_score_cache_pairs"], ["result"], registry=r)
    name = "rerank_requests_in_flight"
    in_flight = Gauge(name, HELP[name], registry=r, multiprocess_mode="livesum")
    children = (
        requests.labels("/v2/rerank", "200", "shop-a"),
        *(pairs.labels(kind) for kind in ("hit", "coalesced", "miss")),
    )

    def once() -> None:
        in_flight.inc()
        children[0].inc()
        for timer, seconds in zip(timers, (0.0006, 0.0002, 0.0004), strict=True):
            timer.observe(seconds)
        for histogram, size in zip(sizes, (5, 5, 1), strict=True):
            histogram.observe(size)
        units.labels("shop-a").inc(1)
        decisions.labels("shop-a", "unlimited", "").inc()
        for child, n in zip(children[1:], (2, 0, 3), strict=True):
            child.inc(n)
        in_flight.dec()

    return once


def test_metrics_in_memory(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    benchmark.group = "metrics per request"
    in_flight = [0]
    metrics = Metrics(lambda: in_flight[0], tmp_path)
    benchmark(ours(metrics, in_flight))
    metrics.flush()
    assert "rerank_requests_total" in next(tmp_path.glob("worker-*.prom")).read_text()


def test_metrics_prometheus_multiprocess(
    benchmark: BenchmarkFixture, multiprocess: Callable[[], None], tmp_path: Path
) -> None:
    benchmark.group = "metrics per request"
    benchmark(multiprocess)
    assert list(tmp_path.glob("counter_*.db")), "the comparison did not run in multiprocess mode"


def test_in_memory_counts_flush_to_the_same_totals(tmp_path: Path) -> None:
    """The fast path loses nothing: after n requests and a flush the file holds n of everything."""
    metrics = Metrics(lambda: 0, tmp_path)
    for _ in range(1000):
        metrics.observe(RECORD)
    metrics.flush()
    text = next(tmp_path.glob("worker-*.prom")).read_text()
    labels = 'key_id="shop-a",model="qwen3-reranker-4b",route="/v2/rerank",status="200"'
    assert f"rerank_requests_total{{{labels}}} 1000.0" in text
    assert "rerank_request_documents_sum 5000.0" in text
    assert 'rerank_score_cache_pairs_total{result="miss"} 3000.0' in text
    bucket = (
        'rerank_gateway_duration_seconds_bucket{le="0.0005",model="qwen3-reranker-4b",route="/v2/rerank"}'
    )
    assert f"{bucket} 1000.0" in text
