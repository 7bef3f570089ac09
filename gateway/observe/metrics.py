"""The gateway's Prometheus instruments, fed once per request from the record its log line is made of.

granian serves from worker processes even with one worker, so values always cross processes: every worker
writes them to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) and the metrics
port in the supervising process (scrape.py) sums the files on each scrape. ``serve`` sets the directory
before any worker starts; without it (tests, other servers) the values live in this process.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as prometheus_multiprocess

from gateway.requestlog import RequestRecord

# Seconds, from 100 us: the gateway's own share of a request is well under a millisecond when it does its job.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
UPSTREAM_FAILURES = ("timeout", "unavailable", "pool_full", "rejected", "error", "bad_answer")
SHED_REASONS = ("queue_full", "queue_timeout", "evicted")
NO_KEY = "-"  # key_id of a request that presented no valid key (no key id can start with "-")

# Every family's help text, by family name. The scrape (scrape.py) puts them back on the summed families:
# prometheus-client's multiprocess files keep values, not help.
HELP = {
    "rerank_requests": "Requests answered, by route, HTTP status and API key id (- when no valid key).",
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
    "rerank_upstream_failures": "Failed calls to vLLM by kind: timeout, unavailable, pool_full (every "
    "connection busy), rejected (vLLM said 4xx), error (vLLM said 5xx), bad_answer (unusable answer).",
    "rerank_quota_refunds": "Admitted requests whose charge (the request and its search units) was given "
    "back to their key because vLLM failed (5xx) or the load was shed; the log line names the key.",
    "rerank_api_keys_reloads": "Re-reads of the keys file after it changed: ok (new keys in force) or error "
    "(the file did not parse; the keys in force stay).",
    "rerank_shed_requests": "Requests refused for overload before reaching vLLM, by reason: queue_full, "
    "queue_timeout (no capacity in time), evicted (a request of better priority took its queue place).",
    "rerank_queue_wait_seconds": "Time a request waited for capacity to vLLM (requests that called it).",
    "rerank_upstream_pairs_in_flight": "Query-document pairs at vLLM now, all workers.",
    "rerank_queued_requests": "Requests waiting for capacity to vLLM now, all workers.",
    "rerank_score_cache_pairs": "Query-document pairs by where their score came from: hit (a cache tier), "
    "coalesced (another request's vLLM call for the same pair), miss (this request's vLLM call).",
}


def _counter(name: str, labels: list[str], registry: CollectorRegistry) -> Counter:
    return Counter(name, HELP[name], labels, registry=registry)


def _histogram(
    name: str, labels: list[str], buckets: tuple[float, ...], registry: CollectorRegistry
) -> Histogram:
    return Histogram(name, HELP[name], labels, buckets=buckets, registry=registry)


class Metrics:
    """One worker's instruments. Labels stay bounded: routes come from the route table (unknown paths are
    ``unmatched``), key ids from the keys file, kinds from fixed lists."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.requests = _counter("rerank_requests", ["route", "status", "key_id"], r)
        self.request_seconds = _histogram("rerank_request_duration_seconds", ["route"], LATENCY_BUCKETS, r)
        self.upstream_seconds = _histogram("rerank_upstream_duration_seconds", ["route"], LATENCY_BUCKETS, r)
        self.gateway_seconds = _histogram("rerank_gateway_duration_seconds", ["route"], LATENCY_BUCKETS, r)
        self.documents = _histogram("rerank_request_documents", [], SIZE_BUCKETS, r)
        self.chunks = _histogram("rerank_request_chunks", [], SIZE_BUCKETS, r)
        self.search_units = _histogram("rerank_request_search_units", [], SIZE_BUCKETS, r)
        self.search_units_by_key = _counter("rerank_search_units", ["key_id"], r)
        self.rate_limit = _counter("rerank_rate_limit_decisions", ["key_id", "decision", "limit"], r)
        self.upstream_failures = _counter("rerank_upstream_failures", ["kind"], r)
        self.cache_pairs = _counter("rerank_score_cache_pairs", ["result"], r)
        self.refunds = _counter("rerank_quota_refunds", [], r)
        self.key_reloads = _counter("rerank_api_keys_reloads", ["result"], r)
        self.shed = _counter("rerank_shed_requests", ["reason"], r)
        self.queue_wait = _histogram("rerank_queue_wait_seconds", [], LATENCY_BUCKETS, r)
        self.pairs_in_flight = Gauge(
            "rerank_upstream_pairs_in_flight",
            HELP["rerank_upstream_pairs_in_flight"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "rerank_queued_requests", HELP["rerank_queued_requests"], registry=r, multiprocess_mode="livesum"
        )
        self.in_flight = Gauge(
            "rerank_requests_in_flight",
            HELP["rerank_requests_in_flight"],
            registry=r,
            multiprocess_mode="livesum",
        )
        # labels() validates and locks on every call; the hot path looks its children up here instead.
        self._request_children: dict[tuple[str, int, str], Counter] = {}
        self._route_children: dict[str, tuple[Histogram, Histogram, Histogram]] = {}
        for kind in UPSTREAM_FAILURES:  # zero from the start, so rate() and alerts see the first failure
            self.upstream_failures.labels(kind)
        for result in ("ok", "error"):
            self.key_reloads.labels(result)
        for reason in SHED_REASONS:
            self.shed.labels(reason)
        self._cache_children = tuple(self.cache_pairs.labels(kind) for kind in ("hit", "coalesced", "miss"))

    def observe(self, record: RequestRecord) -> None:
        """Everything one finished request contributes; called by the request log after its line."""
        key_id = record.key_id or NO_KEY
        counter_key = (record.route, record.status, key_id)
        counter = self._request_children.get(counter_key)
        if counter is None:
            counter = self.requests.labels(record.route, str(record.status), key_id)
            self._request_children[counter_key] = counter
        counter.inc()
        timers = self._route_children.get(record.route)
        if timers is None:
            route = record.route
            timers = (
                self.request_seconds.labels(route),
                self.upstream_seconds.labels(route),
                self.gateway_seconds.labels(route),
            )
            self._route_children[route] = timers
        total, upstream, gateway = timers
        total.observe(record.duration_ms / 1000)
        if record.upstream_ms > 0:
            upstream.observe(record.upstream_ms / 1000)
        gateway.observe(max(record.duration_ms - record.upstream_ms, 0.0) / 1000)
        if record.documents is not None:
            self.documents.observe(record.documents)
        if record.chunks is not None:
            self.chunks.observe(record.chunks)
        if record.search_units is not None and record.status < 400:
            self.search_units.observe(record.search_units)
            self.search_units_by_key.labels(key_id).inc(record.search_units)
        if record.limit is not None:
            decision, _, kind = record.limit.partition(":")
            self.rate_limit.labels(key_id, "refused" if decision == "limited" else decision, kind).inc()
        if record.upstream_error is not None:
            self.upstream_failures.labels(record.upstream_error).inc()
        if record.queue_ms is not None:
            self.queue_wait.observe(record.queue_ms / 1000)
        if record.shed is not None:
            self.shed.labels(record.shed).inc()
        if record.refunded:
            self.refunds.inc()
        if record.cache_misses is not None:
            hits, coalesced, misses = self._cache_children
            hits.inc(record.cache_hits or 0)
            coalesced.inc(record.cache_shared or 0)
            misses.inc(record.cache_misses)

    def key_reloaded(self, result: str) -> None:
        self.key_reloads.labels(result).inc()

    @staticmethod
    def close() -> None:
        """A worker that stops takes its in-flight gauge with it (its counters stay in the sums)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
