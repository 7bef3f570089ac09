"""The metrics port: one scrape with every worker's values, vLLM's own ``vllm:*`` families and build info.

It runs in the supervising process (``python -m gateway serve``), beside granian's workers rather than in
one of them, so a scrape always sees all workers (the files they write, metrics.py) and the API port never
serves ``/metrics``. vLLM stays on loopback: its families are read from it at scrape
time and passed on unchanged in name and labels, so vLLM's published dashboards work on this scrape.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway import package_version
from gateway.observe.metrics import WORKER_FILE
from gateway.workerstate import read_state
from model_setup.fetch import FetchError, read_manifest
from model_setup.serving import Precision

VLLM_PREFIX = "vllm:"
VLLM_SCRAPE_TIMEOUT_S = 2.0  # well inside Prometheus's default 10 s scrape timeout

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class VllmMetrics(Collector):
    """The ``vllm:*`` families of each vLLM of this pod (model name -> its URL), read from its /metrics on
    each scrape and merged family by family (vLLM labels its samples with ``model_name``);
    ``rerank_vllm_metrics_up{model}`` says whether each read worked (a scrape during vLLM's start-up or an
    outage still returns the gateway's own)."""

    def __init__(self, upstreams: Mapping[str, str], timeout_s: float = VLLM_SCRAPE_TIMEOUT_S) -> None:
        self._urls = {model: url.rstrip("/") + "/metrics" for model, url in upstreams.items()}
        self._timeout = timeout_s
        # vLLM is on loopback: an HTTP(S)_PROXY in the environment must not route the call elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "rerank_vllm_metrics_up", "1 if vLLM's own metrics were read for this scrape.", labels=["model"]
        )
        merged: dict[str, Metric] = {}
        for model, url in self._urls.items():
            try:
                with self._opener.open(url, timeout=self._timeout) as answer:
                    text = answer.read().decode("utf-8")
                families = [f for f in text_string_to_metric_families(text) if f.name.startswith(VLLM_PREFIX)]
            except (OSError, ValueError, urllib.error.URLError):
                up.add_metric([model], 0)
                continue
            for family in families:
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                into.samples += family.samples
            up.add_metric([model], 1)
        yield from merged.values()
        yield up


class BuildInfo(Collector):
    """One sample per model: what is running."""

    def __init__(self, models: Sequence[tuple[str, Path, Precision]]) -> None:
        package = package_version()
        self._labels = [
            [package, served_model, _revision(model_dir), precision.dtype, precision.quantization or "none"]
            for served_model, model_dir, precision in models
        ]

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "rerank_build_info",
            "Always 1; the labels say what is running: gateway version, served model name, model revision, "
            "vLLM's dtype and the quantisation (vLLM's online scheme or the checkpoint's own); one per "
            "model.",
            labels=["version", "served_model", "model_revision", "dtype", "quantization"],
        )
        for labels in self._labels:
            info.add_metric(labels, 1)
        yield info


def _revision(model_dir: Path) -> str:
    try:
        return str(read_manifest(model_dir).get("revision") or "unknown")
    except FetchError:  # a directory not made by model_setup (tests' tiny model has a manifest)
        return "unknown"


class Workers(Collector):
    """Every worker's families (metrics.py writes one file per worker), summed sample by sample. A gauge
    counts only for workers still alive; a counter keeps what a stopped worker counted, so totals never
    go down while the server runs."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for path in sorted(self._directory.glob(WORKER_FILE.format(pid="*"))):
            alive = _alive(int(path.stem.removeprefix("worker-")))
            try:
                text = path.read_text()
            except FileNotFoundError:  # renamed over at this instant: the next scrape has it
                continue
            for family in text_string_to_metric_families(text):
                if family.type == "gauge" and not alive:
                    continue
                merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                sums = values.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    sums[key] = sums.get(key, 0.0) + sample.value
        for name, family in merged.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


class WorkerProcesses(Collector):
    """What the supervisor (gateway/workers.py) reports: workers configured and alive, their exits."""

    def __init__(self, state_file: Path) -> None:
        self._state_file = state_file

    def collect(self) -> Iterator[Metric]:
        state = read_state(self._state_file)
        if state is None:  # granian has not started its workers yet
            return
        workers = GaugeMetricFamily(
            "rerank_gateway_workers", "Gateway worker processes: configured, and alive now.", labels=["state"]
        )
        workers.add_metric(["configured"], state.configured)
        workers.add_metric(["alive"], state.alive)
        yield workers
        exits = CounterMetricFamily(
            "rerank_gateway_worker_exits", "Gateway workers that died unexpectedly; each one is respawned."
        )
        exits.add_metric([], state.exits)
        yield exits
        backoff = GaugeMetricFamily(
            "rerank_gateway_worker_respawn_backoff_seconds",
            "Delay of a pending respawn of a worker that keeps dying young; 0 when none is pending.",
        )
        backoff.add_metric([], state.backoff_s)
        yield backoff


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the number: ours is gone
        return False
    return True


def registry(workers_dir: Path, collectors: Iterable[Collector]) -> CollectorRegistry:
    """What a scrape of the metrics port collects: the workers' values plus ``collectors``."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(Workers(workers_dir))
    for collector in collectors:
        scrape.register(collector)
    return scrape


def _only_metrics(metrics: WsgiApp) -> WsgiApp:
    """``/metrics`` and nothing else, so the port's surface is what its name says.

    Always the classic text format, which keeps vLLM's names as they are: prometheus-client 0.26's
    OpenMetrics encoder, which Prometheus asks for first, writes ``vllm:num_requests_waiting`` samples as
    ``vllm_num_requests_waiting``.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            environ.pop("HTTP_ACCEPT", None)
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: the metrics port serves /metrics\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each (wsgiref writes one to stderr by default)."""


def serve(host: str, port: int, scrape: CollectorRegistry) -> threading.Thread:
    """Binds now (so a taken port fails the start) and serves from a daemon thread."""
    server = make_server(
        host, port, _only_metrics(make_wsgi_app(scrape)), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True)
    thread.start()
    return thread
