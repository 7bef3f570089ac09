"""The Grafana dashboard the chart ships (helm/dashboards/reranker.json): it works in any Grafana (a
Prometheus data-source variable), it has the panels operators look at first, and its queries are real
PromQL (parsed by Prometheus's own parser, `promtool check rules`) over metrics the gateway and vLLM
really expose."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.observe.metrics import Metrics
from gateway.observe.scrape import BuildInfo, VllmMetrics
from model_setup.serving import Precision
from tests.helm.chart import DASHBOARD

pytestmark = pytest.mark.unit

PROMTOOL = Path("/usr/bin/promtool")  # Debian's prometheus package (scripts/system-deps.sh)
PROMTOOL_TIMEOUT_S = 60
# kubectl's and GitOps tools' client-side apply copy the object into an annotation, and annotations are
# limited to 256 KiB in all; a ConfigMap itself may hold 1 MiB. Keep the dashboard well under both.
SIZE_BUDGET = 256 * 1024
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's interval variables, replaced by durations so Prometheus's parser sees what Grafana would send.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# The dashboard's own query variables: every selector filters on them, as a regex (multi-value and "All").
FILTERS = {"namespace": 'namespace=~"$namespace"', "job": 'job=~"$job"'}
# vLLM's families the dashboard may use, by type: vLLM's own names, which the gateway's scrape re-exports
# unchanged (gateway/observe/scrape.py). Each is checked against the installed vLLM's source below.
VLLM_FAMILIES = {
    "vllm:num_requests_waiting": "gauge",
    "vllm:num_requests_running": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:prompt_tokens": "counter",
}
VLLM_LOGGERS = ("v1", "metrics", "loggers.py")  # where vLLM declares its Prometheus families

Json = dict[str, Any]


def sample_names(family: str, kind: str) -> set[str]:
    """The series names a family of this type puts on the scrape (the scrape has no _created)."""
    if kind == "counter":
        return {f"{family}_total"}
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_count", f"{family}_sum"}
    return {family}


@cache
def gateway_series() -> frozenset[str]:
    """What the gateway's metrics port serves of its own: its instruments, build info and vLLM's up gauge,
    taken from the collectors themselves (vLLM unreachable here, so only the up gauge comes from it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Metrics(lambda: 0))
    registry.register(BuildInfo([("qwen3-reranker-4b", Path("/nonexistent"), Precision("auto", ""))]))
    registry.register(VllmMetrics({"qwen3-reranker-4b": "http://127.0.0.1:1"}, timeout_s=1))
    names: set[str] = set()
    for family in registry.collect():
        names |= sample_names(family.name, family.type)
    return frozenset(names)


def load() -> Json:
    dashboard: Json = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: Json) -> Iterator[Json]:
    """Every panel that shows data (rows hold none; a collapsed row keeps its panels inside it)."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard: Json) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    return [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def variable_queries(dashboard: Json) -> list[tuple[str, str]]:
    """(where, series selector) for every query variable: label_values(<selector>, <label>)."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
            assert match, f"variable {variable['name']}: expected label_values(<selector>, <label>)"
            assert variable["definition"] == variable["query"]
            found.append((f"variable {variable['name']}", match.group(1)))
    return found


def queries(dashboard: Json) -> list[tuple[str, str]]:
    return panel_queries(dashboard) + variable_queries(dashboard)


def as_prometheus_sees_it(expr: str) -> str:
    """Grafana's substitutions: intervals become durations, the dashboard's variables their "All" regex."""
    for variable, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    for name in FILTERS:
        expr = expr.replace(f"${name}", ".*")
    return expr


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\{([^}]*)\}")


def metric_names(expr: str) -> list[str]:
    """The metric names an expression selects, once per selector, bare or with matchers: what is left once
    strings, matchers, ranges, grouping labels, function calls, keywords and numbers are taken out."""
    assert "__name__" not in expr, "select metrics by name, so this check can see them"
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return [
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if not match.group(2) and match.group(1).lower() not in _KEYWORDS
    ]


def test_metric_name_extraction_sees_bare_and_filtered_selectors() -> None:
    """The helper the checks below rely on: names with and without matchers, not functions or labels."""
    expr = 'sum by (le, route) (rate(a_bucket{x="b{c}"}[5m] offset 1m)) / on (pod) group_left b'
    expr += " + 1e-9 * vllm:c"
    assert metric_names(expr) == ["a_bucket", "b", "vllm:c"]


def test_dashboard_is_json_small_enough_for_a_config_map() -> None:
    size = len(DASHBOARD.read_bytes())
    assert size < SIZE_BUDGET, f"{DASHBOARD.name} is {size} bytes"
    dashboard = load()
    assert dashboard["uid"] == "product-rerank"
    assert dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None, "Grafana assigns ids; a fixed one collides"


def test_data_source_is_a_variable_so_any_grafana_works() -> None:
    """A `datasource` variable of type prometheus, used by every panel and every query, never a fixed uid."""
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in FILTERS:
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*", "All must match every value (and an absent label)"
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_are_laid_out_and_uniquely_identified() -> None:
    dashboard = load()
    every = list(dashboard["panels"]) + [p for row in dashboard["panels"] for p in row.get("panels", [])]
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [panel["title"] for panel in panels(dashboard)]
    assert len(titles) == len(set(titles))
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("request rate by route and status", r"sum by \(route, status\) \(rate\(rerank_requests_total\{"),
        ("p50 latency", r"histogram_quantile\(0\.5, .*rerank_request_duration_seconds_bucket\{"),
        ("p99 latency", r"histogram_quantile\(0\.99, .*rerank_request_duration_seconds_bucket\{"),
        ("gateway overhead p50", r"histogram_quantile\(0\.5, .*rerank_gateway_duration_seconds_bucket\{"),
        ("gateway overhead p99", r"histogram_quantile\(0\.99, .*rerank_gateway_duration_seconds_bucket\{"),
        ("vLLM waiting requests", r"vllm:num_requests_waiting\{"),
        ("vLLM running requests", r"vllm:num_requests_running\{"),
        (
            "rate-limit refusals by key and limit",
            r'sum by \(key_id, limit\) \(rate\(rerank_rate_limit_decisions_total\{[^}]*decision="refused"',
        ),
        (
            "cache hit ratio",
            r'rerank_score_cache_pairs_total\{[^}]*result="hit"[^}]*\}[^/]*/ '
            r"sum\(rate\(rerank_score_cache_pairs_total",
        ),
        ("in-flight requests", r"rerank_requests_in_flight\{"),
        ("upstream failures by kind", r"sum by \(kind\) \(rate\(rerank_upstream_failures_total\{"),
        ("requests shed by reason", r"sum by \(reason\) \(rate\(rerank_shed_requests_total\{"),
        ("quota refunds", r"rate\(rerank_quota_refunds_total\{"),
        ("pairs at vLLM", r"rerank_upstream_pairs_in_flight\{"),
        ("queued requests", r"rerank_queued_requests\{"),
        ("queue wait p99", r"histogram_quantile\(0\.99, .*rerank_queue_wait_seconds_bucket\{"),
    ],
)
def test_dashboard_shows(what: str, pattern: str) -> None:
    exprs = [expr for _, expr in queries(load())]
    assert any(re.search(pattern, expr) for expr in exprs), f"no panel shows {what}"


def test_every_panel_query_filters_on_the_namespace_and_job_variables() -> None:
    """Every selector carries the namespace and job filters, so one Grafana can show one release at a time;
    none is bare (the extraction finds as many names as there are selectors with matchers)."""
    for where, expr in panel_queries(load()):
        selectors = _SELECTOR.findall(_STRING.sub(lambda m: re.sub(r"[{}]", "", m.group(0)), expr))
        assert len(selectors) == len(metric_names(expr)), f"{where}: a selector without matchers: {expr}"
        for name, matchers in selectors:
            for matcher in FILTERS.values():
                assert matcher in matchers, f"{where}: {name} lacks {matcher}"
    assert dict(variable_queries(load())) == {
        "variable namespace": "rerank_build_info",
        "variable job": 'rerank_build_info{namespace=~"$namespace"}',
    }, "the job list follows the chosen namespace"


def test_every_metric_is_one_the_gateway_or_vllm_exposes() -> None:
    """Names come from the gateway's own collectors and vLLM's families listed above: a renamed metric or a
    typo shows up here rather than as an empty panel."""
    vllm = {name for family, kind in VLLM_FAMILIES.items() for name in sample_names(family, kind)}
    known = gateway_series() | vllm
    used = {name for _, expr in queries(load()) for name in metric_names(expr)}
    assert used, "no metric found in the dashboard"
    assert used <= known, f"not exposed by the gateway or vLLM: {sorted(used - known)}"
    assert {"rerank_requests_total", "rerank_request_duration_seconds_bucket"} <= gateway_series()


def test_vllm_families_exist_in_the_installed_vllm() -> None:
    """The vLLM names above are declared by the vLLM this project installs (its CPU build here; the image's
    CUDA build is the same source)."""
    spec = importlib.util.find_spec("vllm")
    assert spec, "vllm is not installed in this environment"
    assert spec.origin
    source = Path(spec.origin).parent.joinpath(*VLLM_LOGGERS).read_text()
    for family in VLLM_FAMILIES:
        assert f'name="{family}"' in source, f"{family} is not declared in vLLM's {'/'.join(VLLM_LOGGERS)}"


def promtool_check_rules(exprs: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Each expression as a recording rule, checked by Prometheus's own rule loader and PromQL parser."""
    assert PROMTOOL.is_file(), f"{PROMTOOL} not found: install Debian's prometheus (scripts/system-deps.sh)"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)],
            }
        ]
    }
    path = workdir / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """After Grafana's substitutions no `$` is left and promtool parses every expression."""
    found = queries(load())
    exprs = [as_prometheus_sees_it(expr) for _, expr in found]
    for (where, _), expr in zip(found, exprs, strict=True):
        assert "$" not in expr, f"{where}: a variable Prometheus would not understand: {expr}"
    result = promtool_check_rules(exprs, tmp_path)
    output = result.stdout + result.stderr
    for i, (where, _) in enumerate(found):  # name the panel, not the rule number promtool reports
        output = output.replace(f'"dashboard:query_{i}"', f'"dashboard:query_{i}" ({where})')
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_rejects_what_prometheus_could_not_parse(tmp_path: Path) -> None:
    """The check above is not vacuous: an unbalanced parenthesis and an unknown function both fail."""
    for broken in ("sum(rate(rerank_requests_total[5m])", "rates(rerank_requests_total[5m])"):
        assert promtool_check_rules([broken], tmp_path).returncode != 0, broken
