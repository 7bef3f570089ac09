"""What the chart refuses to render, and that it says why: template `fail`s and values.schema.json."""

from __future__ import annotations

import json

import pytest

from tests.helm.chart import render, render_error

pytestmark = pytest.mark.unit

SCHEMA = "values don't meet the specifications of the schema"
KEY = "shop-a sha256:" + "a" * 64


@pytest.mark.parametrize(
    "sets",
    [
        {"replicaCount": "2"},
        {"autoscaling.enabled": "true"},
        {"gateway.workers": "2"},
    ],
    ids=["replicas", "autoscaling", "workers"],
)
def test_scaling_out_without_redis_fails_and_explains(sets: dict[str, str]) -> None:
    """Per-process counters would multiply every key's limits: the chart names the cause and the fix."""
    message = render_error(sets)
    setting = next(iter(sets))
    assert f"{setting}=" in message
    assert "needs Redis for rate limits" in message
    assert "redis.url or redis.existingSecret" in message


@pytest.mark.parametrize(
    "sets",
    [
        {"replicaCount": "3", "redis.url": "redis://redis:6379/0"},
        {"autoscaling.enabled": "true", "redis.existingSecret": "redis-url"},
        {"gateway.workers": "4", "redis.existingSecret": "redis-url"},
    ],
    ids=["replicas-url", "autoscaling-secret", "workers-secret"],
)
def test_scaling_out_with_redis_renders(sets: dict[str, str]) -> None:
    manifests = render(sets=sets)
    assert manifests.env_value("RERANK_RATE_LIMIT_STORE") == "redis"


@pytest.mark.parametrize("sets", [{"gpu.count": "0"}, {"gpu.count": "null"}], ids=["zero", "unset"])
def test_gpu_mode_without_gpus_fails_and_explains(sets: dict[str, str]) -> None:
    message = render_error(sets)
    assert "GPU mode (device=cuda) needs GPU resources" in message
    assert "gpu.count" in message
    assert "device=cpu" in message


def test_gpu_count_is_ignored_in_cpu_mode() -> None:
    manifests = render(sets={"device": "cpu", "gpu.count": "0"})
    assert "nvidia.com/gpu" not in manifests.container["resources"]["requests"]


def test_gpus_in_resources_are_refused_in_favour_of_gpu_count() -> None:
    """Two sources for the GPU count would render duplicate keys; the chart points at gpu.count."""
    message = render_error({"resources.limits.nvidia\\.com/gpu": "1"})
    assert "resources must not list nvidia.com/gpu" in message
    assert "gpu.count" in message


@pytest.mark.parametrize(
    "key", ["resources.requests.cpu", "resources.requests.memory", "resources.limits.memory"]
)
def test_resources_are_required(key: str) -> None:
    message = render_error({key: "null"})
    assert "resources are required" in message


def test_no_keys_and_no_generation_fails() -> None:
    message = render_error({"apiKeys.generate": "false"})
    assert "no API keys" in message
    assert "apiKeys.lines" in message


def test_keys_from_two_sources_fail() -> None:
    message = render_error({"apiKeys.lines[0]": KEY, "apiKeys.existingSecret": "keys"})
    assert "either apiKeys.lines or apiKeys.existingSecret" in message


def test_model_volume_needs_a_mount_path() -> None:
    message = render_error({"model.volume.persistentVolumeClaim.claimName": "model"})
    assert "model.dir" in message


def test_grace_period_must_outlast_the_prestop_sleep_and_the_drain() -> None:
    message = render_error({"preStopSleepSeconds": "20", "drainTimeoutSeconds": "40"})
    assert (
        "terminationGracePeriodSeconds (60) must exceed preStopSleepSeconds + drainTimeoutSeconds (60)"
        in message
    )


def test_redis_port_must_match_the_url() -> None:
    message = render_error({"redis.url": "redis://redis:6380/0"})
    assert "port 6380" in message
    assert "redis.port" in message


def test_metrics_port_must_differ_from_the_api_port() -> None:
    message = render_error({"metrics.port": "8000"})
    assert "metrics.port must differ from 8000" in message


def test_autoscaling_on_waiting_requests_needs_metrics() -> None:
    """The HPA's Pods metric comes from scraping the metrics port: without it the HPA could never scale."""
    sets = {
        "autoscaling.enabled": "true",
        "redis.url": "redis://r:6379",
        "autoscaling.waitingRequests.enabled": "true",
        "metrics.enabled": "false",
    }
    message = render_error(sets)
    assert "autoscaling.waitingRequests.enabled=true" in message
    assert "needs metrics.enabled=true" in message


def test_everything_that_needs_metrics_is_named_at_once() -> None:
    message = render_error(
        {"metrics.enabled": "false", "serviceMonitor.enabled": "true", "grafanaDashboard.enabled": "true"}
    )
    assert (
        "serviceMonitor.enabled=true (it scrapes the metrics port) and grafanaDashboard.enabled=true"
        in message
    )


def test_autoscaling_bounds_must_be_ordered() -> None:
    message = render_error(
        {"autoscaling.enabled": "true", "redis.url": "redis://r:6379", "autoscaling.minReplicas": "5"}
    )
    assert "minReplicas must not exceed" in message


# values.schema.json


@pytest.mark.parametrize(
    ("sets", "set_json", "expected"),
    [
        ({"replicas": "2"}, [], "(root): Additional property replicas is not allowed"),
        ({"gpuCount": "1"}, [], "(root): Additional property gpuCount is not allowed"),
        ({"gateway.maxDocs": "5"}, [], "gateway: Additional property maxDocs is not allowed"),
        ({}, ['replicaCount="2"'], "replicaCount: Invalid type. Expected: integer, given: string"),
        ({}, ["networkPolicy.enabled=1"], "networkPolicy.enabled: Invalid type. Expected: boolean"),
        ({}, ['service.port="http"'], "service.port: Invalid type. Expected: integer"),
        ({}, ['model.aliases="rerank-v3.5"'], "model.aliases: Invalid type. Expected: array"),
        ({"device": "gpu"}, [], "device: device must be one of the following"),
        ({"model.quantization": "int4"}, [], "model.quantization: model.quantization must be one of the"),
        (
            {"gateway.logLevel": "verbose"},
            [],
            "gateway.logLevel: gateway.logLevel must be one of the following",
        ),
        ({"image.digest": "sha256:1234"}, [], "image.digest: Does not match pattern"),
        (
            {"redis.failureMode": "maybe"},
            [],
            "redis.failureMode: redis.failureMode must be one of the following",
        ),
        ({"redis.url": "localhost:6379"}, [], "redis.url: Does not match pattern"),
        (
            {"startupProbe.failureThreshold": "0"},
            [],
            "startupProbe.failureThreshold: Must be greater than or equal to 1",
        ),
        ({"startupProbe.httpGet.path": "/"}, [], "startupProbe: Additional property httpGet is not allowed"),
        ({"gateway.maxDocuments": "20000"}, [], "gateway.maxDocuments: Must be less than or equal to 10000"),
        ({"metrics.port": "80"}, [], "metrics.port: Must be greater than or equal to 1024"),
        ({"metrics.path": "/m"}, [], "metrics: Additional property path is not allowed"),
        (
            {"autoscaling.waitingRequests.metricName": "vllm:num_requests_waiting"},
            [],
            "autoscaling.waitingRequests.metricName: Does not match pattern",
        ),
        (
            {"autoscaling.waitingRequests.targetAverage": "lots"},
            [],
            "autoscaling.waitingRequests.targetAverage: Does not match pattern",
        ),
        ({}, ["autoscaling.waitingRequests.targetAverage=0"], "targetAverage: Must be greater than 0"),
        ({}, ['networkPolicy.metricsFrom="monitoring"'], "networkPolicy.metricsFrom: Invalid type"),
        ({"grafanaDashboard.folder": "Search"}, [], "grafanaDashboard: Additional property folder"),
        ({"grafanaDashboard.sidecarLabel": "bad label"}, [], "grafanaDashboard.sidecarLabel: Does not match"),
    ],
    ids=[
        "unknown-top-level",
        "unknown-top-level-2",
        "unknown-nested",
        "replicas-as-string",
        "bool-as-int",
        "port-as-string",
        "aliases-as-string",
        "device-enum",
        "quantization-enum",
        "log-level-enum",
        "short-digest",
        "failure-mode-enum",
        "redis-url-scheme",
        "probe-threshold-zero",
        "probe-handler-is-fixed",
        "documents-over-ceiling",
        "privileged-metrics-port",
        "metrics-path-is-fixed",
        "metric-name-with-colon",
        "target-not-a-quantity",
        "target-zero",
        "metrics-peers-not-a-list",
        "dashboard-unknown-key",
        "sidecar-label-with-space",
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(
    sets: dict[str, str], set_json: list[str], expected: str
) -> None:
    message = render_error(sets, set_json)
    assert SCHEMA in message
    assert expected in message


@pytest.mark.parametrize(
    "line",
    [
        "rk_8kq0TLrP3KXbR0pZ0iK4vD5l2pY8n7GJ3w9lFzX2Qb8",  # a raw key pasted instead of its digest line
        "shop-a " + "a" * 64,  # digest without the sha256: prefix
        "shop-a sha256:" + "A" * 64,  # upper-case hex
        "shop-a sha256:" + "a" * 64 + " burst=5",  # unknown limit
        "shop-a sha256:" + "a" * 64 + " rpm=0",  # limits are positive
    ],
    ids=["raw-key", "no-prefix", "upper-hex", "unknown-limit", "zero-limit"],
)
def test_schema_rejects_malformed_key_lines(line: str) -> None:
    message = render_error(set_json=[f'apiKeys.lines=["{line}"]'])
    assert SCHEMA in message
    assert "apiKeys.lines.0: Does not match pattern" in message


def test_schema_accepts_key_lines_with_limits() -> None:
    line = "shop-a sha256:" + "a" * 64 + " rpm=600 units_per_minute=none concurrency=8"
    render(set_json=[f'apiKeys.lines=["{line}"]'])


def test_the_shared_score_cache_tier_needs_redis() -> None:
    message = render_error({"scoreCache.redisTtlSeconds": "600"})
    assert "shared score-cache tier" in message
    assert "redis.url or redis.existingSecret" in message


def test_score_cache_settings_reach_the_gateway() -> None:
    defaults = render(sets={})
    assert defaults.env_value("RERANK_SCORE_CACHE_MAX_BYTES") == str(64 * 1024 * 1024)
    assert defaults.env_value("RERANK_SCORE_CACHE_SCOPE") == "key"
    assert defaults.env_value("RERANK_SCORE_CACHE_REDIS_TTL_S") is None, "the shared tier is opt-in"
    shared = render(
        sets={"scoreCache.redisTtlSeconds": "600", "scoreCache.scope": "global", "redis.existingSecret": "r"}
    )
    assert shared.env_value("RERANK_SCORE_CACHE_REDIS_TTL_S") == "600"
    assert shared.env_value("RERANK_SCORE_CACHE_SCOPE") == "global"
    assert SCHEMA in render_error({"scoreCache.scope": "tenant"})


# The fleet (fleet.*): what the container would refuse at start-up, refused with the values named

FLEET = ("fleet.yaml",)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            {"fleet.cascades[0].first": "qwen3-reranker-8b"},
            'fleet.cascades[0] (rerank-cascade): first is "qwen3-reranker-8b", which is no model\'s name in '
            "fleet.models (qwen3-reranker-0.6b, qwen3-reranker-4b)",
        ),
        ({"fleet.cascades[0].second": "rerank-small"}, "a cascade names its models by name, not alias"),
        (
            {"fleet.cascades[0].second": "qwen3-reranker-0.6b"},
            "first and second are both qwen3-reranker-0.6b",
        ),
        (
            {"fleet.cascades[0].maxTopK": "10"},
            "fleet.cascades[0] (rerank-cascade): maxTopK (10) is below topK",
        ),
        (
            {"fleet.models[1].aliases[0]": "rerank-small"},
            'fleet.models[1] (qwen3-reranker-4b): the name "rerank-small" is already a name or alias of '
            "model qwen3-reranker-0.6b",
        ),
        (
            {"fleet.cascades[0].aliases[0]": "qwen3-reranker-4b"},
            'the name "qwen3-reranker-4b" is already a name or alias of model qwen3-reranker-4b',
        ),
        (
            {"fleet.models[0].aliases[0]": "rerank-v3.5"},
            'model.aliases has "rerank-v3.5", already a name or alias of model qwen3-reranker-0.6b',
        ),
        (
            {"fleet.default": "qwen3-reranker-8b"},
            'fleet.default is "qwen3-reranker-8b", which is no name or alias',
        ),
        (
            {"fleet.models[0].dir": ""},
            "fleet.models[0] (qwen3-reranker-0.6b) has a volume but no dir: set dir to the snapshot path",
        ),
        (
            {"fleet.models[1].dir": "/models/qwen3-reranker-0.6b/"},
            "fleet.models[1] (qwen3-reranker-4b) mounts its volume at /models/qwen3-reranker-0.6b/, which "
            "model qwen3-reranker-0.6b's volume already uses",
        ),
        (
            {"fleet.models[0].dir": "/tmp"},  # noqa: S108  # the pod's path, refused, never used
            "mounts its volume at /tmp, which the chart's tmp emptyDir already uses",
        ),
        (
            {"fleet.models[1].upstreamUrl": "http://rerank-4b-vllm:8001"},
            "fleet.models[1] (qwen3-reranker-4b) has an upstreamUrl, so it runs elsewhere and takes none of "
            "this pod's GPU: unset its gpuMemoryUtilization",
        ),
        (
            {"model.dir": "/models/model"},
            "model.dir is for the single model; with fleet.models it would be ignored",
        ),
        ({"model.servedModelName": "search"}, "model.servedModelName is for the single model"),
    ],
    ids=[
        "cascade-unknown-model",
        "cascade-by-alias",
        "cascade-one-model",
        "cascade-max-below-top",
        "alias-twice",
        "cascade-alias-is-a-model",
        "model-aliases-clash",
        "default-unknown",
        "volume-without-dir",
        "two-volumes-one-dir",
        "volume-on-a-chart-path",
        "remote-with-gpu-share",
        "single-model-dir",
        "single-model-name",
    ],
)
def test_fleet_mistakes_fail_and_explain(sets: dict[str, str], expected: str) -> None:
    assert expected in render_error(sets, files=FLEET)


def test_fleet_gpu_shares_must_fit_the_pod_budget() -> None:
    """0.25 + 0.6 fits 0.9, not 0.8: model.gpuMemoryUtilization is what all the pod's vLLMs may take."""
    message = render_error(set_json=["model.gpuMemoryUtilization=0.8"], files=FLEET)
    assert (
        "the local models' GPU shares add up to 0.85 (qwen3-reranker-0.6b 0.25, qwen3-reranker-4b 0.6), more "
        "than model.gpuMemoryUtilization=0.80" in message
    )
    render(FLEET, set_json=["model.gpuMemoryUtilization=0.85"])


def test_a_fleet_model_needs_a_dir() -> None:
    message = render_error(set_json=['fleet.models[0]={"name": "qwen3-reranker-0.6b"}'], files=FLEET)
    assert "fleet.models[0] (qwen3-reranker-0.6b) has no dir: set it to the snapshot's path" in message


@pytest.mark.parametrize(
    "set_json",
    ['fleet.default="x"', 'fleet.cascades=[{"name": "c", "first": "a", "second": "b"}]'],
    ids=["default", "cascade"],
)
def test_fleet_settings_without_models_fail(set_json: str) -> None:
    """Without models they would be ignored: say so rather than serve the single model."""
    assert "fleet.cascades and fleet.default need fleet.models" in render_error(set_json=[set_json])


@pytest.mark.parametrize(
    ("set_json", "expected"),
    [
        ("fleet.models[0].gpuShare=0.2", "fleet.models.0: Additional property gpuShare is not allowed"),
        ('fleet.models[0].name="qwen3 reranker"', "fleet.models.0.name: Does not match pattern"),
        (
            "fleet.models[0].gpuMemoryUtilization=1.5",
            "fleet.models.0.gpuMemoryUtilization: Must be less than",
        ),
        (
            'fleet.models[0].upstreamUrl="rerank-8b:8001"',
            "fleet.models.0.upstreamUrl: Does not match pattern",
        ),
        (
            'fleet.models[0].quantization="int4"',
            "fleet.models.0.quantization: fleet.models.0.quantization must be",
        ),
        ('fleet.models[0].dir="models/0.6b"', "fleet.models.0.dir: Does not match pattern"),
        ('fleet.models[0].dir="/models/a\\tb"', "fleet.models.0.dir: Does not match pattern"),
        (
            "fleet.models[0].maxModelLen=100",
            "fleet.models.0.maxModelLen: Must be greater than or equal to 256",
        ),
        (
            'fleet.cascades[0]={"name": "c", "first": "qwen3-reranker-0.6b"}',
            "fleet.cascades.0: second is required",
        ),
        ("fleet.cascades[0].topK=0", "fleet.cascades.0.topK: Must be greater than or equal to 1"),
        (
            "fleet.models=" + json.dumps([{"name": f"m{i}", "dir": f"/m{i}"} for i in range(9)]),
            "fleet.models: Array must have at most 8 items",
        ),
    ],
    ids=[
        "unknown-key",
        "name-with-space",
        "share-over-one",
        "url-without-scheme",
        "quantization-enum",
        "relative-dir",
        "control-character-in-dir",
        "short-max-model-len",
        "cascade-without-second",
        "top-k-zero",
        "nine-models",
    ],
)
def test_schema_rejects_malformed_fleets(set_json: str, expected: str) -> None:
    message = render_error(set_json=[set_json], files=FLEET)
    assert SCHEMA in message
    assert expected in message
