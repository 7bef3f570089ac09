"""The gateway's Prometheus metrics, counted once per request from the record its log line is made of.

granian serves from worker processes (even with one worker), and the metrics port lives in the supervising
process (scrape.py), so values must cross processes. prometheus-client's multiprocess mode does that with a
locked mmap write per increment: about 33 us per request for the families below, a fifth of the gateway's
own cost per request (docs/benchmarks.md, "Metrics overhead"). Instead each worker counts in plain Python
(about 4 us) and, once a second and when it stops, writes its totals with prometheus-client's own
exposition (``write_to_textfile``, atomic) to ``<RERANK_METRICS_DIR>/worker-<pid>.prom``; the metrics port
sums the files on each scrape. A scrape is at most a second behind.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.record import RequestRecord
from gateway.upstream import FAILURE_LABELS

# Seconds, from 100 us: the gateway's own share of a request is well under a millisecond when it does its job.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
CACHE_RESULTS = ("hit", "coalesced", "miss")
SHED_REASONS = ("queue_full", "queue_timeout", "evicted")
RELOAD_RESULTS = ("ok", "error")
NO_KEY = "-"  # key_id of a request that presented no valid key (no key id can start with "-")
NO_MODEL = "-"  # model of a request that named no served model (a 404, a route without one)
FLUSH_INTERVAL_S = 1.0
WORKER_FILE = "worker-{pid}.prom"

HELP = {
    "rerank_requests": "Requests answered, by route, HTTP status, API key id (- when no valid key) and "
    "model entry (- when none was resolved).",
    "rerank_request_duration_seconds": "Time from a request's first byte to its answer, in the gateway.",
    "rerank_upstream_duration_seconds": "Time a request waited on vLLM (requests that called it).",
    "rerank_gateway_duration_seconds": "The gateway's own share of a request: total minus upstream time.",
    "rerank_request_documents": "Documents per rerank request.",
    "rerank_request_chunks": "Query-document pairs (document chunks) per rerank request.",
    "rerank_request_search_units": "Search units billed per successful rerank request.",
    "rerank_search_units": "Search units billed, by API key id.",
    "rerank_rate_limit_decisions": "Rate-limit decisions by key id: admitted, unlimited (no limits), "
    "refused (limit says which: rpm, units, concurrency), fail_open or fail_closed (Redis did not answer).",
    "rerank_requests_in_flight": "Requests the gateway is working on now, all workers together.",
    "rerank_upstream_failures": "Failed calls to vLLM by kind and model: timeout, unavailable, pool_full "
    "(every connection busy), rejected (vLLM said 4xx), error (vLLM said 5xx), bad_answer (unusable answer).",
    "rerank_model_input_tokens": "Prompt tokens scored, by the model that scored them (a cascade's "
    "requests count for both its models), cache hits included: the GPU work each model was asked for.",
    "rerank_score_cache_pairs": "Query-document pairs by where their score came from: hit (a cache tier), "
    "coalesced (another request's vLLM call for the same pair), miss (this request's vLLM call).",
    "rerank_quota_refunds": "Admitted requests whose charge (the request and its search units) was given "
    "back to their key because vLLM failed (5xx) or the load was shed; the log line names the key.",
    "rerank_api_keys_reloads": "Re-reads of the keys file after it changed: ok (new keys in force) or error "
    "(the file did not parse; the keys in force stay).",
    "rerank_shed_requests": "Requests refused for overload before reaching vLLM, by reason: queue_full, "
    "queue_timeout (no capacity in time), evicted (a request of better priority took its queue place).",
    "rerank_queue_wait_seconds": "Time a request waited for capacity to vLLM (requests that called it).",
    "rerank_upstream_pairs_in_flight": "Query-document pairs at vLLM now, all workers, by model.",
    "rerank_queued_requests": "Requests waiting for capacity to vLLM now, all workers, by model.",
}


class _Histogram:
    """Bucket counts (not cumulative; the last is +Inf) and the sum: one bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le is inclusive, as Prometheus defines it
        self.total += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        family.add_metric(labels, buckets, self.total)


def _counter(name: str, labels: list[str], values: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, HELP[name], labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


class Metrics(Collector):
    """One worker's counts, and the collector that turns them into families. Labels stay bounded: routes
    come from the route table (unknown paths are ``unmatched``), key ids from the keys file, kinds from
    fixed lists, ``models`` (every model served, counted from zero) from the fleet. The gauges are read when
    the totals are written: ``in_flight`` is the worker's count of requests in progress
    (gateway/inflight.py), ``pairs_in_flight`` and ``queued`` its load-shedding state per model
    (gateway/shedding.py)."""

    def __init__(
        self,
        in_flight: Callable[[], int],
        directory: Path | None = None,
        *,
        models: Sequence[str] = (),
        pairs_in_flight: Callable[[], dict[str, int]] = dict,
        queued: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self._in_flight = in_flight
        self._per_model = {
            "rerank_upstream_pairs_in_flight": pairs_in_flight,
            "rerank_queued_requests": queued,
        }
        self._file = directory / WORKER_FILE.format(pid=os.getpid()) if directory is not None else None
        self._requests: dict[tuple[str, ...], float] = {}
        self._latency: dict[tuple[str, str], tuple[_Histogram, _Histogram, _Histogram]] = {}
        self._documents = _Histogram(SIZE_BUCKETS)
        self._chunks = _Histogram(SIZE_BUCKETS)
        self._search_units = _Histogram(SIZE_BUCKETS)
        self._units_by_key: dict[tuple[str, ...], float] = {}
        self._rate_limit: dict[tuple[str, ...], float] = {}
        # Zero from the start, so that rate() and alerts see the first failure.
        self._upstream_failures: dict[tuple[str, ...], float] = {
            (kind, model): 0 for kind in FAILURE_LABELS for model in models
        }
        self._tokens: dict[tuple[str, ...], float] = {(model,): 0 for model in models}
        self._cache_pairs = [0, 0, 0]
        self._refunds = 0
        self._shed: dict[tuple[str, ...], float] = {(reason,): 0 for reason in SHED_REASONS}
        self._reloads: dict[tuple[str, ...], float] = {(result,): 0 for result in RELOAD_RESULTS}
        self._queue_wait = _Histogram(LATENCY_BUCKETS)

    def observe(self, record: RequestRecord) -> None:
        """Everything one finished request contributes; called by the request log after its line."""
        key_id = record.key_id or NO_KEY
        route = record.route
        counted = (route, str(record.status), key_id, record.model or NO_MODEL)
        self._requests[counted] = self._requests.get(counted, 0) + 1
        timed = (route, record.model or NO_MODEL)
        timers = self._latency.get(timed)
        if timers is None:
            timers = (_Histogram(LATENCY_BUCKETS), _Histogram(LATENCY_BUCKETS), _Histogram(LATENCY_BUCKETS))
            self._latency[timed] = timers
        total, upstream, gateway = timers
        total.observe(record.duration_ms / 1000)
        if record.upstream_ms > 0:
            upstream.observe(record.upstream_ms / 1000)
        gateway.observe(max(record.duration_ms - record.upstream_ms, 0.0) / 1000)
        if record.documents is not None:
            self._documents.observe(record.documents)
        if record.chunks is not None:
            self._chunks.observe(record.chunks)
        if record.search_units is not None and record.status < 400:
            self._search_units.observe(record.search_units)
            self._units_by_key[(key_id,)] = self._units_by_key.get((key_id,), 0) + record.search_units
        if record.limit is not None:
            decision, _, kind = record.limit.partition(":")
            decided = (key_id, "refused" if decision == "limited" else decision, kind)
            self._rate_limit[decided] = self._rate_limit.get(decided, 0) + 1
        self._observe_models(record)
        if record.queue_ms is not None:
            self._queue_wait.observe(record.queue_ms / 1000)
        if record.shed is not None:
            self._shed[(record.shed,)] = self._shed.get((record.shed,), 0) + 1
        if record.refunded:
            self._refunds += 1
        if record.cache_misses is not None:
            pairs = self._cache_pairs
            pairs[0] += record.cache_hits or 0
            pairs[1] += record.cache_shared or 0
            pairs[2] += record.cache_misses

    def _observe_models(self, record: RequestRecord) -> None:
        """What the request asked of each model: its tokens, and a failed call to one's vLLM."""
        if record.upstream_error is not None:
            failed = (record.upstream_error, record.upstream_model or NO_MODEL)
            self._upstream_failures[failed] = self._upstream_failures.get(failed, 0) + 1
        if record.tokens_by_model is not None:
            for model, tokens in record.tokens_by_model.items():
                self._tokens[(model,)] = self._tokens.get((model,), 0) + tokens

    def key_reloaded(self, result: str) -> None:
        """The keys file was re-read (gateway/keyswatch.py): ``ok`` or ``error``."""
        self._reloads[(result,)] = self._reloads.get((result,), 0) + 1

    def collect(self) -> Iterator[Metric]:
        yield _counter("rerank_requests", ["route", "status", "key_id", "model"], self._requests)
        names = ("rerank_request_duration_seconds", "rerank_upstream_duration_seconds",
                 "rerank_gateway_duration_seconds")  # fmt: skip
        for position, name in enumerate(names):
            latency = HistogramMetricFamily(name, HELP[name], labels=["route", "model"])
            for (route, model), timers in self._latency.items():
                timers[position].add_to(latency, [route, model])
            yield latency
        for name, histogram in (
            ("rerank_request_documents", self._documents),
            ("rerank_request_chunks", self._chunks),
            ("rerank_request_search_units", self._search_units),
            ("rerank_queue_wait_seconds", self._queue_wait),
        ):
            sizes = HistogramMetricFamily(name, HELP[name], labels=[])
            histogram.add_to(sizes, [])
            yield sizes
        yield _counter("rerank_search_units", ["key_id"], self._units_by_key)
        yield _counter("rerank_rate_limit_decisions", ["key_id", "decision", "limit"], self._rate_limit)
        yield _counter("rerank_upstream_failures", ["kind", "model"], self._upstream_failures)
        yield _counter("rerank_model_input_tokens", ["model"], self._tokens)
        pairs: dict[tuple[str, ...], float] = {
            (result,): float(n) for result, n in zip(CACHE_RESULTS, self._cache_pairs, strict=True)
        }
        yield _counter("rerank_score_cache_pairs", ["result"], pairs)
        yield _counter("rerank_quota_refunds", [], {(): self._refunds})
        yield _counter("rerank_shed_requests", ["reason"], self._shed)
        yield _counter("rerank_api_keys_reloads", ["result"], self._reloads)
        yield GaugeMetricFamily(
            "rerank_requests_in_flight", HELP["rerank_requests_in_flight"], value=self._in_flight()
        )
        for name, read in self._per_model.items():
            gauge = GaugeMetricFamily(name, HELP[name], labels=["model"])
            for model, value in read().items():
                gauge.add_metric([model], value)
            yield gauge

    def flush(self) -> None:
        """This worker's totals to its file (atomically: written aside, then renamed over the old one)."""
        if self._file is None:
            return
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        write_to_textfile(str(self._file), registry)
