"""What the chart renders: a locked-down GPU Deployment, its probes, keys as a file, the optional objects."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from model_setup import fetch, naming
from tests.helm.chart import (
    CHART,
    DASHBOARD,
    FULLNAME,
    METRICS_SERVICE,
    NAMESPACE,
    RELEASE,
    VARIANTS,
    Doc,
    Manifests,
    render,
    render_error,
)

pytestmark = pytest.mark.unit

Variant = Callable[[str], Manifests]

KEY_A = "shop-a sha256:" + "a" * 64
KEY_B = "shop-b sha256:" + "b" * 64 + " rpm=60"
KEYS_FILE = "/etc/rerank/keys/keys"
CACHE_DIR = "/var/cache/rerank"
TMP_DIR, SHM_DIR = "/tmp", "/dev/shm"  # noqa: S108  # paths inside the pod, asserted, not used
# Volume types the restricted Pod Security Standard admits.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"
}  # fmt: skip


def _secret_text(secret: Doc, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def _checksum(manifests: Manifests, name: str = "checksum/api-keys") -> str:
    annotations: dict[str, str] = manifests.deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations[name]


# Security: the restricted Pod Security Standard, read-only root, no API token


@pytest.mark.parametrize("name", VARIANTS)
def test_every_pod_meets_the_restricted_profile(variant: Variant, name: str) -> None:
    """Server and test pods: non-root, no escalation, ALL capabilities dropped, RuntimeDefault seccomp,
    read-only root, no host namespaces or host paths, no service-account token."""
    manifests = variant(name)
    for what, spec in manifests.pod_specs():
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, what
        assert pod_sc.get("runAsUser", 10001) != 0, what
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, what
        assert spec["automountServiceAccountToken"] is False, what
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), f"{what}: {flag}"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{what}: volume {volume['name']} is {kinds}"
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            where = f"{what}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) == 10001, where
            assert sc.get("seccompProfile", pod_sc.get("seccompProfile")) == {"type": "RuntimeDefault"}, where
            assert not container.get("ports") or all("hostPort" not in p for p in container["ports"]), where


def test_service_account_never_mounts_a_token(variant: Variant) -> None:
    """The pod runs as its own ServiceAccount, which disables token automounting too; no service links."""
    manifests = variant("default")
    assert manifests.pod_spec["enableServiceLinks"] is False, "service env vars could collide with RERANK_*"
    account = manifests.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert manifests.pod_spec["serviceAccountName"] == account["metadata"]["name"] == FULLNAME


@pytest.mark.parametrize("name", VARIANTS)
def test_writable_paths_are_emptydirs_with_limits(variant: Variant, name: str) -> None:
    """The pod's tmp, cache and shm (memory) dirs are size-limited emptyDirs; caches go to the cache dir."""
    manifests = variant(name)
    volumes = {v["name"]: v for v in manifests.pod_spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in manifests.container["volumeMounts"]}
    for path in (TMP_DIR, CACHE_DIR, SHM_DIR):
        assert "sizeLimit" in volumes[mounts[path]]["emptyDir"], path
    assert volumes[mounts[SHM_DIR]]["emptyDir"]["medium"] == "Memory"
    assert manifests.env_value("RERANK_CACHE_DIR") == CACHE_DIR
    assert manifests.env_value("XDG_CACHE_HOME") == CACHE_DIR
    assert manifests.env_value("HF_HOME") == f"{CACHE_DIR}/hf"
    assert manifests.env_value("VLLM_CACHE_ROOT") == f"{CACHE_DIR}/vllm"
    assert manifests.env_value("TRITON_CACHE_DIR") == f"{CACHE_DIR}/triton"


def test_shm_size_is_a_value() -> None:
    manifests = render(sets={"shm.sizeLimit": "8Gi"})
    dshm = next(v for v in manifests.pod_spec["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


# GPU scheduling


def test_gpu_mode_requests_and_limits_gpus(variant: Variant) -> None:
    """Default (GPU mode): one nvidia.com/gpu in requests and limits, the GPU taint tolerated, cuda env."""
    manifests = variant("default")
    resources = manifests.container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in manifests.pod_spec[
        "tolerations"
    ]
    assert manifests.env_value("RERANK_DEVICE") == "cuda"
    assert manifests.env_value("RERANK_GPU_MEMORY_UTILIZATION") == "0.9"


def test_gpu_node_selection_values_reach_the_pod(variant: Variant) -> None:
    """gpu.count, runtimeClassName, nodeSelector, tolerations, affinity and spreading reach the pod."""
    gpu = variant("gpu")
    assert gpu.container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert gpu.container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert gpu.pod_spec["runtimeClassName"] == "nvidia"
    assert gpu.pod_spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    full = variant("full")
    tolerations = full.pod_spec["tolerations"]
    assert {
        "key": "dedicated",
        "operator": "Equal",
        "value": "inference",
        "effect": "NoSchedule",
    } in tolerations
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    assert "podAntiAffinity" in full.pod_spec["affinity"]
    assert full.pod_spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert full.pod_spec["priorityClassName"] == "inference"


def test_cpu_mode_asks_for_no_gpu(variant: Variant) -> None:
    """CPU mode neither requests GPUs nor tolerates GPU nodes, and sets no GPU-only settings."""
    manifests = variant("cpu")
    resources = manifests.container["resources"]
    assert "nvidia.com/gpu" not in resources["requests"]
    assert "nvidia.com/gpu" not in resources.get("limits", {})
    assert "tolerations" not in manifests.pod_spec
    assert manifests.env_value("RERANK_DEVICE") == "cpu"
    assert "RERANK_GPU_MEMORY_UTILIZATION" not in manifests.env
    assert manifests.env_value("VLLM_CPU_KVCACHE_SPACE") == "2"


# Probes and draining


def test_probes_cover_model_load_readiness_and_liveness(variant: Variant) -> None:
    """startupProbe on /ready with a 30-minute budget, readiness on /ready, liveness on /health, all on http;
    the entrypoint waits for vLLM exactly as long as the startup probe allows."""
    container = variant("default").container
    startup, ready, live = container["startupProbe"], container["readinessProbe"], container["livenessProbe"]
    assert startup["httpGet"] == {"path": "/ready", "port": "http"}
    assert ready["httpGet"] == {"path": "/ready", "port": "http"}
    assert live["httpGet"] == {"path": "/health", "port": "http"}
    budget = startup["failureThreshold"] * startup["periodSeconds"]
    assert budget == 30 * 60
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RERANK_VLLM_START_TIMEOUT_S"] == str(budget)


def test_startup_budget_is_configurable() -> None:
    manifests = render(sets={"startupProbe.failureThreshold": "360", "startupProbe.periodSeconds": "20"})
    startup = manifests.container["startupProbe"]
    assert (startup["failureThreshold"], startup["periodSeconds"]) == (360, 20)
    assert manifests.env_value("RERANK_VLLM_START_TIMEOUT_S") == "7200"


def test_prestop_sleep_and_grace_period_let_requests_drain(variant: Variant) -> None:
    """preStop sleeps (endpoints drop the pod first), then SIGTERM; the grace period leaves time to drain."""
    manifests = variant("default")
    assert manifests.container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "10"]}}
    assert manifests.env_value("RERANK_DRAIN_TIMEOUT_S") == "20"
    assert manifests.pod_spec["terminationGracePeriodSeconds"] == 60
    full = variant("full")
    assert full.container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    assert full.pod_spec["terminationGracePeriodSeconds"] == 90


# API keys: a Secret mounted as a file, a checksum that rolls the pods


def test_keys_from_values_are_a_secret_mounted_as_a_file() -> None:
    """apiKeys.lines become the keys file in a chart Secret, mounted read-only; never env, never envFrom."""
    manifests = render(sets={"apiKeys.lines[0]": KEY_A, "apiKeys.lines[1]": KEY_B})
    secret = manifests.one("Secret", f"{FULLNAME}-api-keys")
    lines = [line for line in _secret_text(secret, "keys").splitlines() if not line.startswith("#")]
    assert lines == [KEY_A, KEY_B]
    assert not any(s["metadata"]["name"].endswith("generated-key") for s in manifests.of_kind("Secret"))
    _assert_keys_mounted(manifests, secret_name=f"{FULLNAME}-api-keys", secret_key="keys")


def test_existing_keys_secret_is_mounted_and_no_secret_is_rendered() -> None:
    manifests = render(sets={"apiKeys.existingSecret": "shop-keys", "apiKeys.existingSecretKey": "keys.txt"})
    assert not manifests.has("Secret")
    _assert_keys_mounted(manifests, secret_name="shop-keys", secret_key="keys.txt")


def _assert_keys_mounted(manifests: Manifests, *, secret_name: str, secret_key: str) -> None:
    volume = next(v for v in manifests.pod_spec["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret_name
    assert volume["secret"]["items"] == [{"key": secret_key, "path": "keys"}]
    assert volume["secret"]["defaultMode"] == 0o440
    mount = next(m for m in manifests.container["volumeMounts"] if m["name"] == "api-keys")
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/rerank/keys", True)
    assert manifests.env_value("RERANK_API_KEYS_FILE") == KEYS_FILE
    assert "RERANK_API_KEYS" not in manifests.env
    assert "envFrom" not in manifests.container
    for entry in manifests.env.values():
        ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
        assert ref.get("name") != secret_name, f"{entry['name']} reads the keys Secret into the environment"
        assert "sha256:" not in str(entry.get("value", ""))


def test_without_keys_one_key_is_generated_and_its_digest_admitted(variant: Variant) -> None:
    """Defaults: a random rk_ key in <fullname>-generated-key, its sha256 digest line in the keys file."""
    manifests = variant("default")
    raw = _secret_text(manifests.one("Secret", f"{FULLNAME}-generated-key"), "key")
    assert raw.startswith("rk_")
    assert len(raw) >= 40
    keys_file = _secret_text(manifests.one("Secret", f"{FULLNAME}-api-keys"), "keys")
    assert f"helm-generated sha256:{hashlib.sha256(raw.encode()).hexdigest()}" in keys_file.splitlines()
    again = _secret_text(render().one("Secret", f"{FULLNAME}-generated-key"), "key")
    assert again != raw, "each fresh install generates its own key"


def test_key_changes_roll_no_pods_unless_asked() -> None:
    """The gateway re-reads the mounted keys file, so by default no checksum ties the pods to the keys;
    apiKeys.rollPodsOnChange=true brings back checksum/api-keys, which changes with the keys (or the Secret
    referenced) and not with unrelated values."""
    annotations = render(sets={"apiKeys.lines[0]": KEY_A}).deployment["spec"]["template"]["metadata"]
    assert "checksum/api-keys" not in (annotations.get("annotations") or {})
    roll = {"apiKeys.rollPodsOnChange": "true"}
    one = render(sets={"apiKeys.lines[0]": KEY_A, **roll})
    same_keys = render(sets={"apiKeys.lines[0]": KEY_A, "gateway.logLevel": "debug", **roll})
    new_keys = render(sets={"apiKeys.lines[0]": KEY_A, "apiKeys.lines[1]": KEY_B, **roll})
    assert _checksum(one) == _checksum(same_keys)
    assert _checksum(one) != _checksum(new_keys)
    existing = render(sets={"apiKeys.existingSecret": "keys-v1", **roll})
    assert _checksum(existing) != _checksum(render(sets={"apiKeys.existingSecret": "keys-v2", **roll}))
    assert len(_checksum(one)) == 64


def test_redis_secret_checksum_rolls_pods() -> None:
    url = "redis://redis.cache:6379/0"
    one = render(sets={"redis.url": url})
    assert _checksum(one, "checksum/redis") != _checksum(
        render(sets={"redis.url": url + "1"}), "checksum/redis"
    )


# Gateway settings and rate limits


def test_gateway_settings_come_from_values(variant: Variant) -> None:
    manifests = variant("full")
    expected = {
        "RERANK_SERVED_MODEL_NAME": "search-reranker",
        "RERANK_MODEL_SIZE": "4b",
        "RERANK_MODEL_ALIASES": "rerank-v3.5,rerank-english-v3.0",
        "RERANK_DTYPE": "bfloat16",
        "RERANK_QUANTIZATION": "fp8",
        "RERANK_MAX_MODEL_LEN": "8192",
        "RERANK_GPU_MEMORY_UTILIZATION": "0.85",
        "RERANK_MODEL_DIR": "/models/qwen3-reranker-4b",
        "RERANK_LOG_LEVEL": "warning",
        "RERANK_MAX_DOCUMENTS": "500",
        "RERANK_WORKERS": "2",
        "RERANK_MAX_PAIRS_IN_FLIGHT": "1024",
        "RERANK_QUEUE_MAX_REQUESTS": "64",
        "RERANK_QUEUE_TIMEOUT_S": "1.5",
        "RERANK_HEADER_READ_TIMEOUT_S": "50",
        "RERANK_BODY_READ_TIMEOUT_S": "30",
        "RERANK_DEFAULT_INSTRUCTION": "Given a shopper's search query, judge whether the product matches it",
        "RERANK_DEFAULT_RPM": "120",
        "RERANK_DEFAULT_UNITS_PER_MINUTE": "5000",
        "RERANK_DEFAULT_CONCURRENCY": "4",
        "RERANK_RATE_LIMIT_STORE": "redis",
        "RERANK_REDIS_FAILURE_MODE": "closed",
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    assert {name: manifests.env_value(name) for name in expected} == expected
    model = next(m for m in manifests.container["volumeMounts"] if m["name"] == "model")
    assert (model["mountPath"], model["readOnly"]) == ("/models/qwen3-reranker-4b", True)


# The model's size and name


@pytest.mark.parametrize("size", fetch.SIZES)
def test_a_size_declares_the_model_and_names_it(size: str) -> None:
    """model.size renders the check the entrypoint makes and the name model_setup would give that model."""
    manifests = render(sets={"model.size": size})
    assert manifests.env_value("RERANK_MODEL_SIZE") == size
    assert manifests.env_value("RERANK_SERVED_MODEL_NAME") == naming.model_name(size)


def test_the_default_is_the_4b_the_default_image_holds(variant: Variant) -> None:
    manifests = variant("default")
    assert (manifests.env_value("RERANK_MODEL_SIZE"), manifests.env_value("RERANK_SERVED_MODEL_NAME")) == (
        "4b",
        "qwen3-reranker-4b",
    )
    assert yaml.safe_load((CHART / "values.yaml").read_text())["model"]["size"] == fetch.DEFAULT_SIZE


def test_without_a_size_the_snapshot_names_itself_and_nothing_is_checked(variant: Variant) -> None:
    """The entrypoint then names the model (model_setup served-name); a given name still wins."""
    env = variant("cpu").env
    assert "RERANK_SERVED_MODEL_NAME" not in env
    assert "RERANK_MODEL_SIZE" not in env
    named = render(sets={"model.size": "", "model.servedModelName": "search-reranker"})
    assert named.env_value("RERANK_SERVED_MODEL_NAME") == "search-reranker"
    assert "RERANK_MODEL_SIZE" not in named.env


def test_the_schema_offers_exactly_the_sizes_fetch_knows() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["model"]["properties"]["size"]["enum"] == ["", *fetch.SIZES]
    message = render_error({"model.size": "3b"})
    assert "values don't meet the specifications of the schema" in message
    assert "model.size" in message


def test_unset_gateway_settings_keep_the_gateway_defaults(variant: Variant) -> None:
    """Null values leave the variable out, so the gateway's own default applies; one process counts limits."""
    env = variant("default").env
    for name in (
        "RERANK_MAX_DOCUMENTS",
        "RERANK_DEFAULT_INSTRUCTION",
        "RERANK_MODEL_DIR",
        "RERANK_DEFAULT_RPM",
        "RERANK_QUANTIZATION",
    ):
        assert name not in env
    assert env["RERANK_RATE_LIMIT_STORE"]["value"] == "memory"
    assert "RERANK_REDIS_URL" not in env


@pytest.mark.parametrize(
    ("name", "secret", "key"),
    [("full", f"{FULLNAME}-redis", "url"), ("ingress-hpa-redis", "reranker-redis", "url")],
)
def test_redis_url_comes_from_a_secret(variant: Variant, name: str, secret: str, key: str) -> None:
    """RERANK_REDIS_URL is a secretKeyRef (chart Secret from redis.url, or redis.existingSecret)."""
    manifests = variant(name)
    assert manifests.env["RERANK_REDIS_URL"] == {
        "name": "RERANK_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
    }
    if name == "full":
        assert (
            _secret_text(manifests.one("Secret", secret), key)
            == "rediss://:ci-password@redis.cache.svc:6380/0"
        )
    else:
        assert not any(s["metadata"]["name"] == secret for s in manifests.of_kind("Secret"))


# Image


def test_image_defaults_to_the_app_version_never_latest(variant: Variant) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    manifests = variant("default")
    assert manifests.container["image"] == f"ghcr.io/product-rerank/reranker:{app_version}"
    assert manifests.test_pod["spec"]["containers"][0]["image"] == manifests.container["image"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    assert (defaults["tag"], defaults["digest"]) == ("", "")
    assert app_version != "latest"


def test_digest_wins_over_tag(variant: Variant) -> None:
    manifests = variant("digest")
    digest = "sha256:c325a86ae13f417df8a7ca0ae25c63fe8d6072f0669045e9e23b336edb5abc89"
    assert manifests.container["image"] == f"ghcr.io/product-rerank/reranker@{digest}"
    assert ":0.1.0" not in manifests.container["image"]


# Service, Ingress, HPA, PDB, NetworkPolicy, ServiceMonitor


def test_service_selects_the_server_pods_only(variant: Variant) -> None:
    """The API Service has the http port only; its selector matches the server pods, not the test pod."""
    manifests = variant("default")
    service = manifests.one("Service", FULLNAME)
    selector: dict[str, str] = service["spec"]["selector"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = manifests.deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert selector == manifests.deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= manifests.test_pod["metadata"]["labels"].items()


def test_optional_objects_are_off_by_default(variant: Variant) -> None:
    """Off: Ingress, HPA, ServiceMonitor, dashboard. On: the workload, its policies and the metrics port."""
    manifests = variant("default")
    for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "ConfigMap"):
        assert not manifests.has(kind), kind
    for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"):
        assert manifests.has(kind), kind
    assert manifests.one("Service", METRICS_SERVICE)
    assert manifests.deployment["spec"]["replicas"] == 1
    assert manifests.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_ingress_routes_to_the_service_with_tls(variant: Variant) -> None:
    manifests = variant("full")
    ingress = manifests.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "rerank-tls", "hosts": ["rerank.example.com"]}]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "rerank.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"number": 8000}}


def _pods_metric(name: str, average: str) -> Doc:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": average}},
    }


def _cpu_metric(utilization: int) -> Doc:
    return {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": utilization}},
    }


@pytest.mark.parametrize(
    ("name", "min_replicas", "metrics"),
    [
        ("full", 2, [_pods_metric("vllm_num_requests_waiting", "50")]),
        ("ingress-hpa-redis", 2, [_pods_metric("rerank_requests_in_flight", "8")]),
        ("metrics-off", 1, [_cpu_metric(80)]),
    ],
    ids=["waiting-requests", "raw-metrics", "cpu-fallback"],
)
def test_hpa_scales_the_deployment_which_then_sets_no_replicas(
    variant: Variant, name: str, min_replicas: int, metrics: list[Doc]
) -> None:
    """vLLM's queue (full), a raw metrics list (ingress-hpa-redis) or, with neither, CPU (metrics-off)."""
    manifests = variant(name)
    hpa = manifests.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert hpa["spec"]["minReplicas"] == min_replicas
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert "replicas" not in manifests.deployment["spec"]
    assert hpa["spec"]["metrics"] == metrics


HPA_ON = {"autoscaling.enabled": "true", "redis.url": "redis://redis:6379/0"}


def test_hpa_on_waiting_requests_replaces_cpu_and_comes_before_raw_metrics() -> None:
    """waitingRequests renders one Pods metric with the configured name and AverageValue target; raw
    autoscaling.metrics follow it; the CPU target is gone (the HPA would otherwise also scale on CPU)."""
    waiting = {
        **HPA_ON,
        "autoscaling.waitingRequests.enabled": "true",
        "autoscaling.waitingRequests.metricName": "reranker_waiting",
        "autoscaling.waitingRequests.targetAverage": "2500m",
    }
    hpa = render(sets=waiting).one("HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"] == [_pods_metric("reranker_waiting", "2500m")]
    in_flight = '{"type": "Pods", "pods": {"metric": {"name": "rerank_requests_in_flight"}, ' + (
        '"target": {"type": "AverageValue", "averageValue": "8"}}}'
    )
    both = render(sets=waiting, set_json=[f"autoscaling.metrics=[{in_flight}]"])
    assert both.one("HorizontalPodAutoscaler")["spec"]["metrics"] == [
        _pods_metric("reranker_waiting", "2500m"),
        _pods_metric("rerank_requests_in_flight", "8"),
    ]


def test_hpa_falls_back_to_cpu_when_no_metric_is_configured() -> None:
    """Defaults: waitingRequests off and no metrics list, so the HPA scales on CPU utilisation."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]
    assert defaults["waitingRequests"]["enabled"] is False
    assert defaults["metrics"] == []
    hpa = render(sets=HPA_ON).one("HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"] == [_cpu_metric(70)]
    number = render(
        sets={**HPA_ON, "autoscaling.waitingRequests.enabled": "true"},
        set_json=["autoscaling.waitingRequests.targetAverage=4"],
    )
    assert number.one("HorizontalPodAutoscaler")["spec"]["metrics"] == [
        _pods_metric("vllm_num_requests_waiting", "4")
    ], "a number is rendered as a quantity string"


def test_pdb_takes_min_available_when_given(variant: Variant) -> None:
    pdb = variant("full").one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdb["spec"]
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == variant("full").deployment["spec"]["selector"]["matchLabels"]
    )


def _server_policy(manifests: Manifests) -> Doc:
    return manifests.one("NetworkPolicy", FULLNAME)


METRICS_PORTS = {"full": 9400, "metrics-off": None}


@pytest.mark.parametrize("name", VARIANTS)
def test_network_policy_admits_only_the_gateway_and_metrics_ports(variant: Variant, name: str) -> None:
    """Ingress: a rule for TCP 8000 and, with metrics on, one for the metrics port; nothing else.
    Egress: DNS (53 UDP+TCP), and Redis's port only with Redis. No rule without ports, so nothing is open
    to every port."""
    manifests = variant(name)
    policy = _server_policy(manifests)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == manifests.deployment["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    metrics_port = METRICS_PORTS.get(name, 9090)
    expected_ingress = [[{"port": 8000, "protocol": "TCP"}]]
    if metrics_port is not None:
        expected_ingress.append([{"port": metrics_port, "protocol": "TCP"}])
    assert [rule["ports"] for rule in spec["ingress"]] == expected_ingress
    egress_ports = [rule["ports"] for rule in spec["egress"]]
    assert egress_ports[0] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    redis = manifests.env_value("RERANK_RATE_LIMIT_STORE") == "redis"
    expected_redis = {"full": 6380}.get(name, 6379)
    assert egress_ports[1:] == ([[{"port": expected_redis, "protocol": "TCP"}]] if redis else [])


def test_network_policy_peers_are_values_and_admit_the_test_pod(variant: Variant) -> None:
    """API peers are ingressFrom plus the `helm test` pod; metrics peers are exactly metricsFrom (Prometheus),
    so neither side reaches the other's port through the chart's rules."""
    manifests = variant("full")
    spec = _server_policy(manifests)["spec"]
    peers = spec["ingress"][0]["from"]
    assert peers[:-1] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    test_labels = manifests.test_pod["metadata"]["labels"]
    assert peers[-1]["podSelector"]["matchLabels"].items() <= test_labels.items()
    assert spec["ingress"][1]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    assert spec["egress"][0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert spec["egress"][1]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cache"}}}
    ]


def test_default_network_policy_admits_any_source_on_the_ports(variant: Variant) -> None:
    """Empty ingressFrom and metricsFrom: any source on each port (NOTES says to restrict them)."""
    spec = _server_policy(variant("default"))["spec"]
    assert len(spec["ingress"]) == 2
    assert all("from" not in rule for rule in spec["ingress"])


def test_network_policy_can_be_turned_off() -> None:
    assert not render(sets={"networkPolicy.enabled": "false"}).has("NetworkPolicy")


def test_service_monitor_scrapes_metrics_on_the_service(variant: Variant) -> None:
    """The ServiceMonitor (not in kubernetes-validate's schemas, so checked here) selects the metrics Service,
    not the API Service, and scrapes GET /metrics on its port named metrics."""
    manifests = variant("full")
    monitor = manifests.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    selector = spec["selector"]["matchLabels"].items()
    assert selector <= manifests.one("Service", METRICS_SERVICE)["metadata"]["labels"].items()
    assert not selector <= manifests.one("Service", FULLNAME)["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    defaults = render(sets={"serviceMonitor.enabled": "true"}).one("ServiceMonitor")["spec"]["endpoints"]
    assert defaults == [{"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]


# Metrics port


@pytest.mark.parametrize(("name", "port"), [("default", 9090), ("full", 9400)])
def test_metrics_have_a_port_of_their_own(variant: Variant, name: str, port: int) -> None:
    """The container names the metrics port and tells the gateway which it is (RERANK_METRICS_PORT)."""
    manifests = variant(name)
    assert manifests.container["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": port, "protocol": "TCP"},
    ]
    assert manifests.env_value("RERANK_METRICS_PORT") == str(port)


@pytest.mark.parametrize("name", ["default", "full"])
def test_metrics_service_is_separate_from_the_api_service(variant: Variant, name: str) -> None:
    """<fullname>-metrics carries only the metrics port and selects the server pods; the API Service (the
    Ingress's backend) carries only the API port."""
    manifests = variant(name)
    port = manifests.env_value("RERANK_METRICS_PORT")
    service = manifests.one("Service", METRICS_SERVICE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": int(str(port)), "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == manifests.deployment["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    api_ports = [p["name"] for p in manifests.one("Service", FULLNAME)["spec"]["ports"]]
    assert api_ports == ["http"]
    if name == "full":
        assert service["metadata"]["annotations"] == {"example.com/scraped-by": "prometheus"}


def test_metrics_stay_on_a_cluster_ip_when_the_api_is_public() -> None:
    """A LoadBalancer or NodePort API Service does not take the per-key metrics with it."""
    manifests = render(sets={"service.type": "LoadBalancer"})
    assert manifests.one("Service", FULLNAME)["spec"]["type"] == "LoadBalancer"
    assert manifests.one("Service", METRICS_SERVICE)["spec"]["type"] == "ClusterIP"


def test_metrics_off_removes_the_port_and_tells_the_gateway(variant: Variant) -> None:
    """metrics.enabled=false: RERANK_METRICS_PORT=0 (the image's default is 9090), no container port, no
    metrics Service, ServiceMonitor or NetworkPolicy rule."""
    manifests = variant("metrics-off")
    assert manifests.env_value("RERANK_METRICS_PORT") == "0"
    assert [p["name"] for p in manifests.container["ports"]] == ["http"]
    assert [s["metadata"]["name"] for s in manifests.of_kind("Service")] == [FULLNAME]
    assert not manifests.has("ServiceMonitor")
    assert not manifests.has("ConfigMap")
    assert len(_server_policy(manifests)["spec"]["ingress"]) == 1


def test_service_monitor_without_metrics_fails_and_explains() -> None:
    message = render_error({"metrics.enabled": "false", "serviceMonitor.enabled": "true"})
    assert "serviceMonitor.enabled=true" in message
    assert "needs metrics.enabled=true" in message


# Grafana dashboard


def test_dashboard_config_map_carries_the_chart_file_for_the_sidecar(variant: Variant) -> None:
    """full.yaml: the sidecar label (grafana_dashboard: "1"), extra labels and the folder annotation, in
    Grafana's namespace; the data is the chart's dashboard file, unchanged and valid JSON."""
    config_map = variant("full").one("ConfigMap", f"{FULLNAME}-dashboard")
    metadata = config_map["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["example.com/team"] == "search"
    assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert metadata["annotations"] == {"grafana_folder": "Search"}
    assert list(config_map["data"]) == ["reranker.json"]
    assert config_map["data"]["reranker.json"] == DASHBOARD.read_text().rstrip("\n")
    assert json.loads(config_map["data"]["reranker.json"])["uid"] == "product-rerank"


def test_dashboard_sidecar_label_is_configurable() -> None:
    """Another sidecar's label key and value; the release namespace by default."""
    manifests = render(
        sets={
            "grafanaDashboard.enabled": "true",
            "grafanaDashboard.sidecarLabel": "example.com/dashboard",
            "grafanaDashboard.sidecarLabelValue": "search",
        }
    )
    metadata = manifests.one("ConfigMap", f"{FULLNAME}-dashboard")["metadata"]
    assert metadata["labels"]["example.com/dashboard"] == "search"
    assert "grafana_dashboard" not in metadata["labels"]
    assert "namespace" not in metadata, "rendered into the release namespace like every other object"
    assert "annotations" not in metadata


def test_dashboard_without_metrics_fails_and_explains() -> None:
    message = render_error({"metrics.enabled": "false", "grafanaDashboard.enabled": "true"})
    assert "grafanaDashboard.enabled=true" in message
    assert "needs metrics.enabled=true" in message


def _readme_monitoring_yaml() -> list[Any]:
    """The YAML blocks of README.md's "Monitoring and autoscaling" part, in order."""
    text = (CHART.parent / "README.md").read_text()
    part = text.split("### Monitoring and autoscaling", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", part, re.DOTALL)]


def test_readme_monitoring_example_renders_and_its_adapter_rule_serves_the_hpa() -> None:
    """The README's values render (with Redis, which any scale-out needs) into what it says, and the
    prometheus-adapter rule beside them serves exactly the metric name the HPA asks for."""
    blocks = _readme_monitoring_yaml()
    assert len(blocks) == 2, "the values example, then the adapter rule"
    values: Doc = blocks[0]
    rules: list[Doc] = blocks[1]
    manifests = render(
        sets={"redis.url": "redis://redis:6379/0"},
        set_json=[f"{key}={json.dumps(value)}" for key, value in values.items()],
    )
    assert manifests.has("ServiceMonitor")
    assert manifests.one("ConfigMap")["metadata"]["namespace"] == "monitoring"
    assert _server_policy(manifests)["spec"]["ingress"][1]["from"] == values["networkPolicy"]["metricsFrom"]
    metric = manifests.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric == [_pods_metric("vllm_num_requests_waiting", "100")]
    (rule,) = rules
    assert rule["seriesQuery"] == 'vllm:num_requests_waiting{namespace!="",pod!=""}'
    assert re.fullmatch(rule["name"]["matches"], "vllm:num_requests_waiting")
    assert rule["name"]["as"] == metric[0]["pods"]["metric"]["name"]
    assert rule["resources"] == {
        "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    }
    assert rule["metricsQuery"] == "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"


# helm test


def test_helm_test_pod_calls_ready_through_the_service(variant: Variant) -> None:
    """A hook pod (helm.sh/hook: test) that GETs /ready on the Service and exits non-zero otherwise."""
    pod = variant("default").test_pod
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    script = container["command"][-1]
    assert f"http://{FULLNAME}:8000/ready" in script
    assert container["command"][:2] == ["python3", "-c"]
    compile(script, "helm-test", "exec")
    assert container["resources"]["limits"]


def test_helm_test_pod_has_its_own_network_policy(variant: Variant) -> None:
    """With NetworkPolicy on, the test pod may only reach the server's port and DNS."""
    manifests = variant("default")
    policy = manifests.one("NetworkPolicy", f"{FULLNAME}-test-ready")
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= manifests.test_pod["metadata"]["labels"].items()
    )
    assert "ingress" not in policy["spec"]
    to_server = policy["spec"]["egress"][0]
    assert to_server["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert (
        to_server["to"][0]["podSelector"]["matchLabels"]
        == manifests.deployment["spec"]["selector"]["matchLabels"]
    )


def test_names_follow_the_release(variant: Variant) -> None:
    """Everything is named after the release and labelled as part of it."""
    for doc in variant("full").docs:
        assert doc["metadata"]["name"].startswith(FULLNAME), doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
