"""Metrics as an operator gets them: the metrics port of a running gateway in front of the real vLLM,
scraped by a real Prometheus (Debian's package), linted by promtool, summed across two workers."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.metrics import FLUSH_INTERVAL_S, HELP, LATENCY_BUCKETS
from tests.support.procs import Service, free_port, wait_http
from tests.support.stack import Gateway, GatewayStarter, Keys, Redis, Vllm, gateway_env

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
SCRAPE_INTERVAL_S = 1
V2 = {"model": "qwen3-reranker-4b", "query": "usb-c charger", "documents": ["65 W USB-C charger", "lamp"]}


def scrape(metrics_url: str) -> str:
    response = httpx.get(f"{metrics_url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def settled(metrics_url: str, sample: str, expected: float, **labels: str) -> str:
    """A scrape in which ``sample`` has reached ``expected``: workers write their totals once a second
    (gateway/observe/metrics.py), so a scrape right after a request may be up to a second behind."""
    deadline = time.monotonic() + 5 * FLUSH_INTERVAL_S
    while True:
        text = scrape(metrics_url)
        if value(text, sample, **labels) >= expected or time.monotonic() > deadline:
            return text
        time.sleep(FLUSH_INTERVAL_S / 4)


def value(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples named ``sample`` whose labels include ``labels`` (0 when there are none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def rerank(url: str, key: str, body: dict[str, Any] = V2) -> httpx.Response:
    return httpx.post(f"{url}/v2/rerank", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_the_api_port_does_not_serve_metrics(gateway: Gateway) -> None:
    """Per-key usage is other tenants' business: an API client finds no /metrics."""
    response = httpx.get(f"{gateway.url}/metrics", timeout=10)
    assert response.status_code == 404
    assert "rerank_requests_total" not in response.text
    assert set(response.json()) == {"id", "message"}


def test_the_metrics_port_serves_metrics_and_nothing_else(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.metrics_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "rerank_build_info{" in response.text
    for path in ("/", "/v2/rerank", "/metrics/x"):
        assert httpx.get(f"{gateway.metrics_url}{path}", timeout=10).status_code == 404


def test_requests_are_counted_by_route_status_and_key(gateway: Gateway, api_keys: Keys) -> None:
    time.sleep(FLUSH_INTERVAL_S * 1.5)  # earlier tests' requests are all in the files
    before = scrape(gateway.metrics_url)
    for _ in range(3):
        assert rerank(gateway.url, api_keys["shop-b"]).status_code == 200
    assert rerank(gateway.url, "rk_not-a-key").status_code == 401
    unauthorized = {"route": "/v2/rerank", "status": "401", "key_id": "-"}
    expected = value(before, "rerank_requests_total", **unauthorized) + 1
    after = settled(gateway.metrics_url, "rerank_requests_total", expected, **unauthorized)

    def delta(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    ok = {"route": "/v2/rerank", "status": "200", "key_id": "shop-b"}
    assert delta("rerank_requests_total", **ok) == 3
    assert delta("rerank_requests_total", route="/v2/rerank", status="401", key_id="-") == 1
    assert delta("rerank_search_units_total", key_id="shop-b") == 3
    assert delta("rerank_request_documents_sum") == 3 * len(V2["documents"])
    assert delta("rerank_upstream_duration_seconds_count", route="/v2/rerank") == 3
    assert delta("rerank_gateway_duration_seconds_count", route="/v2/rerank") == 4
    assert delta("rerank_rate_limit_decisions_total", key_id="shop-b", decision="unlimited") == 3
    # Buckets fine enough to see the gateway's sub-millisecond overhead.
    bounds = {
        float(s.labels["le"])
        for f in text_string_to_metric_families(after)
        for s in f.samples
        if s.name == "rerank_gateway_duration_seconds_bucket"
    }
    assert bounds == {*LATENCY_BUCKETS, float("inf")}
    assert {0.0001, 0.00025, 0.0005, 0.00075} <= bounds
    assert value(after, "rerank_requests_in_flight") == 0
    build = {
        "served_model": "qwen3-reranker-4b",
        "model_revision": "random-seed-0",
        "dtype": "float32",
        "quantization": "none",
    }
    assert value(after, "rerank_build_info", **build) == 1


def test_every_gateway_family_has_its_help_text(gateway: Gateway, api_keys: Keys) -> None:
    """Summing the workers' files keeps each family's type and help."""
    assert rerank(gateway.url, api_keys["shop-a"]).status_code == 200
    text = settled(gateway.metrics_url, "rerank_rate_limit_decisions_total", 1)  # every family has samples
    families = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    for name, help_text in HELP.items():
        assert families[name] == help_text, name


def test_vllm_families_are_re_exported_unchanged(gateway: Gateway, vllm: Vllm) -> None:
    """Same names, types and label names as vLLM serves them on loopback, so its dashboards work."""
    own = httpx.get(f"{vllm.url}/metrics", timeout=10).text
    ours = scrape(gateway.metrics_url)

    def shape(text: str) -> dict[str, tuple[str, frozenset[str]]]:
        return {
            f.name: (f.type, frozenset(label for s in f.samples for label in s.labels))
            for f in text_string_to_metric_families(text)
            if f.name.startswith("vllm:")
        }

    assert "vllm:num_requests_waiting" in shape(own)
    assert shape(ours) == shape(own)
    assert value(ours, "rerank_vllm_metrics_up") == 1


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    command = [PROMTOOL, "check", "metrics"]
    return subprocess.run(command, input=text, capture_output=True, text=True, check=False)


def test_promtool_passes_the_gateway_families_and_objects_only_to_vllm_names(gateway: Gateway) -> None:
    """vLLM names its families `vllm:*`, which promtool's lint rejects ("should not contain ':'"); kept
    unchanged on purpose. Everything else on the scrape passes `promtool check metrics`."""
    text = scrape(gateway.metrics_url)
    ours = "\n".join(line for line in text.splitlines() if "vllm:" not in line) + "\n"
    lint = promtool(ours)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    whole = promtool(text)
    complaints = [line for line in (whole.stdout + whole.stderr).splitlines() if line.strip()]
    assert complaints, "vLLM's families are missing from the scrape"
    assert all(line.startswith("vllm:") for line in complaints), complaints


def test_upstream_failures_are_counted_by_kind(api_keys: Keys, start_gateway: GatewayStarter) -> None:
    """A gateway whose vLLM is not there: the 503 is counted as a request and as an upstream failure."""
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway("metrics-dead-upstream", dead)
    assert rerank(gateway.url, api_keys["shop-a"]).status_code == 503
    text = settled(gateway.metrics_url, "rerank_upstream_failures_total", 1, kind="unavailable")
    assert value(text, "rerank_upstream_failures_total", kind="unavailable") == 1
    assert value(text, "rerank_requests_total", status="503", key_id="shop-a") == 1
    # The scrape still answers, and says why vLLM's families are absent.
    assert value(text, "rerank_vllm_metrics_up") == 0


def test_counters_sum_across_two_workers(
    vllm: Vllm, api_keys: Keys, redis_server: Redis, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    """Requests sent == requests counted, with both workers having served some."""
    gateway = start_gateway(
        "metrics-two-workers",
        vllm.url,
        RERANK_WORKERS="2",
        RERANK_RATE_LIMIT_STORE="redis",
        RERANK_REDIS_URL=redis_server.url,
        TMPDIR=str(tmp_path),  # where the gateway makes its workers' directory, so the test can look
    )
    sent = 60
    try:
        # A fresh connection per request, so the kernel spreads them over both workers' accept queues.
        def one(_: int) -> int:
            with httpx.Client(timeout=60) as client:
                body = {**V2, "query": f"charger {_}"}
                headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
                return client.post(f"{gateway.url}/v2/rerank", json=body, headers=headers).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(sent)))
        assert statuses == [200] * sent
        counted = {"route": "/v2/rerank", "key_id": "shop-a"}
        text = settled(gateway.metrics_url, "rerank_requests_total", sent, **counted)
        assert value(text, "rerank_requests_total", **counted) == sent
        assert value(text, "rerank_request_duration_seconds_count", route="/v2/rerank") == sent
        assert value(text, "rerank_requests_in_flight") == 0
        writers = {path.name for path in tmp_path.glob("rerank-gateway-*/metrics/worker-*.prom")}
        assert len(writers) == 2, f"expected both workers to have counted: {writers}"
    finally:
        gateway.service.stop()  # before teardown: what follows is about what the gateway leaves behind
    assert not list(tmp_path.glob("rerank-gateway-*")), "the workers' directory outlived the gateway"


# --- a real Prometheus ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(gateway: Gateway, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which(PROMETHEUS) is None:
        pytest.fail(f"{PROMETHEUS} is missing: scripts/test.sh installs Debian's prometheus (system-deps.sh)")
    work = tmp_path_factory.mktemp("prometheus")
    target = gateway.metrics_url.removeprefix("http://")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL_S}s\n"
        "scrape_configs:\n"
        "  - job_name: rerank\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    command = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    service = Service("prometheus", command, {}, artifacts / "prometheus.log")
    service.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", timeout=30, proc=service.proc)
        yield url
    finally:
        service.stop()


def promql(prometheus: str, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_requests_by_key_and_vllm_series(
    prometheus: str, gateway: Gateway, api_keys: Keys
) -> None:
    sent = 4
    for _ in range(sent):
        assert rerank(gateway.url, api_keys["shop-a"]).status_code == 200
    time.sleep(FLUSH_INTERVAL_S * 1.5)  # in the worker's file now
    counted = scrape(gateway.metrics_url)
    expected = value(counted, "rerank_requests_total", key_id="shop-a")  # earlier tests' requests count too
    assert expected >= sent
    by_key: dict[str, float] = {}
    deadline = time.monotonic() + 20 * SCRAPE_INTERVAL_S
    while time.monotonic() < deadline:
        by_key = {r["metric"].get("key_id", ""): float(r["value"][1])
                  for r in promql(prometheus, "sum by (key_id) (rerank_requests_total)")}  # fmt: skip
        if by_key.get("shop-a", 0) >= expected:
            break
        time.sleep(SCRAPE_INTERVAL_S / 2)
    assert by_key.get("shop-a", 0) >= expected, by_key
    waiting = promql(prometheus, "vllm:num_requests_waiting")
    assert waiting, "no vllm: series in Prometheus"
    assert waiting[0]["metric"]["job"] == "rerank"
    up = promql(prometheus, 'up{job="rerank"}')
    assert [float(r["value"][1]) for r in up] == [1.0]


@pytest.mark.unit
def test_a_taken_metrics_port_stops_the_start_with_a_clear_line(
    model_dir: Path, api_keys: Keys, artifacts: Path
) -> None:
    """Failing loudly beats serving without metrics nobody notices are missing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = gateway_env(
            model_dir,
            api_keys,
            "http://127.0.0.1:1",
            RERANK_PORT=str(free_port()),
            RERANK_METRICS_HOST="127.0.0.1",
            RERANK_METRICS_PORT=str(port),
        )
        run = subprocess.run(
            [sys.executable, "-m", "gateway", "serve"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in run.stderr
    assert "RERANK_METRICS_PORT" in run.stderr
