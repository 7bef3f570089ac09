"""A fleet as chart values (fleet.*): the chart renders a fleet file that model_setup.fleet reads as meant,
mounts it and each model's volume, drops the single-model variables, and renders nothing new without one."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_setup import fleet
from tests.helm.chart import (
    CHART,
    CI_VALUES,
    FULLNAME,
    VARIANTS,
    Doc,
    Manifests,
    render,
    render_error,
    render_notes,
)

pytestmark = pytest.mark.unit

Variant = Callable[[str], Manifests]

FLEET = yaml.safe_load((CI_VALUES / "fleet.yaml").read_text())["fleet"]
CONFIG_MAP = f"{FULLNAME}-fleet"
FLEET_DIR = "/etc/rerank/fleet"
FLEET_FILE = f"{FLEET_DIR}/fleet.toml"
SINGLE_MODEL_ENV = ("RERANK_MODEL_DIR", "RERANK_SERVED_MODEL_NAME", "RERANK_MODEL_SIZE")
SMALL, LARGE = "qwen3-reranker-0.6b", "qwen3-reranker-4b"


def fleet_file(manifests: Manifests) -> dict[str, Any]:
    """The fleet file as rendered into its ConfigMap, read as TOML (a TOML error fails the test)."""
    config_map = manifests.one("ConfigMap", CONFIG_MAP)
    assert list(config_map["data"]) == ["fleet.toml"]
    return tomllib.loads(config_map["data"]["fleet.toml"])


def parse(manifests: Manifests, root: Path) -> fleet.Fleet:
    """The rendered fleet file as the container reads it, with the pod's env. Each model_dir is a path in the
    pod; it moves under ``root``, where it gets the two files fleet.parse looks for. Nothing else is changed,
    so a key the chart renders wrongly is refused by fleet.parse's unknown-key check."""
    data = fleet_file(manifests)
    for table in data["models"]:
        snapshot = root / table["model_dir"].lstrip("/")
        snapshot.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "config.json"):
            (snapshot / name).write_text("{}")
        table["model_dir"] = str(snapshot)
    env = {name: entry["value"] for name, entry in manifests.env.items() if "value" in entry}
    return fleet.parse(data, env, where="the rendered fleet file")


def _with_models(*models: Doc, sets: dict[str, str] | None = None) -> Manifests:
    """The default values with these fleet.models."""
    return render(sets=sets, set_json=[f"fleet.models={json.dumps(list(models))}"])


def _annotations(manifests: Manifests) -> dict[str, str]:
    annotations: dict[str, str] = (
        manifests.deployment["spec"]["template"]["metadata"].get("annotations") or {}
    )
    return annotations


# The fleet file


def test_the_ci_fleet_is_read_as_declared(variant: Variant, tmp_path: Path) -> None:
    """helm/ci/fleet.yaml: two local models on ports 8001 and 8002 with their GPU shares and own settings, the
    cascade over them, the 4B as the default; each model_dir is where the model's volume is mounted."""
    manifests = variant("fleet")
    rendered_dirs = [table["model_dir"] for table in fleet_file(manifests)["models"]]
    assert rendered_dirs == [model["dir"] for model in FLEET["models"]]
    served = parse(manifests, tmp_path)
    summary = [(m.name, m.aliases, m.port, m.gpu_memory_utilization, m.local) for m in served.members]
    assert summary == [(SMALL, ("rerank-small",), 8001, 0.25, True), (LARGE, (), 8002, 0.6, True)]
    small, large = served.member(SMALL), served.member(LARGE)
    assert (small.max_pairs_in_flight, small.quantization) == (2048, None), "unset: the pod's default"
    assert (large.max_pairs_in_flight, large.quantization) == (None, "fp8")
    assert served.cascades == (fleet.Cascade("rerank-cascade", ("rerank-fast",), SMALL, LARGE, 50, 200),)
    assert served.default == LARGE


def test_every_model_setting_reaches_its_key_and_zero_or_empty_is_kept(tmp_path: Path) -> None:
    """dtype, maxModelLen, a remote's upstreamUrl; maxPairsInFlight 0 (no bound) and quantization "" (none,
    whatever model.quantization says) are settings, not omissions; a default may be an alias."""
    manifests = _with_models(
        {"name": SMALL, "aliases": ["small"], "dir": "/models/0.6b", "dtype": "bfloat16", "maxModelLen": 4096,
         "maxPairsInFlight": 0, "quantization": ""},
        {"name": "qwen3-reranker-8b", "dir": "/models/8b", "upstreamUrl": "http://rerank-8b-vllm:8001/"},
        sets={"model.quantization": "fp8", "fleet.default": "small"},
    )  # fmt: skip
    served = parse(manifests, tmp_path)
    small, remote = served.members
    assert small == fleet.Member(
        name=SMALL,
        aliases=("small",),
        model_dir=tmp_path / "models/0.6b",
        port=8001,
        gpu_memory_utilization=0.9,  # the one local model: the whole budget
        dtype="bfloat16",
        quantization="",
        max_model_len=4096,
        max_pairs_in_flight=0,
    )
    assert remote == fleet.Member(
        name="qwen3-reranker-8b",
        aliases=(),
        model_dir=tmp_path / "models/8b",
        upstream_url="http://rerank-8b-vllm:8001",
    )
    assert served.default == SMALL
    assert manifests.env_value("RERANK_QUANTIZATION") == "fp8", "the pod's default stays for the others"


def test_strings_are_toml_safe() -> None:
    """A dir with quotes, a backslash, a '#', HTML characters (which toJson escapes as \\u003c...) and
    non-ASCII reads back from the TOML unchanged. Control characters, which no escape makes safe in both,
    are the schema's to refuse (test_refusals.py)."""
    odd = "/models/a \"quoted\" \\ dir # not a comment <ü> & \u2028 'x'"
    data = fleet_file(_with_models({"name": SMALL, "dir": odd}))
    assert data["models"][0]["model_dir"] == odd


def test_unset_shares_are_left_to_the_container(tmp_path: Path) -> None:
    """Without shares the file says none, and fleet.py splits model.gpuMemoryUtilization (what the shares
    given leave of it) equally."""
    manifests = _with_models({"name": SMALL, "dir": "/a"}, {"name": LARGE, "dir": "/b"})
    assert "gpu_memory_utilization" not in fleet_file(manifests)["models"][0]
    assert [m.gpu_memory_utilization for m in parse(manifests, tmp_path).members] == [0.45, 0.45]


@pytest.mark.parametrize(
    ("budget", "shares", "fits"),
    [
        (0.9, [0.25, 0.6], True),
        (0.9, [0.3, 0.6], True),
        (0.9, [0.35, 0.6], False),
        (0.9, [0.4, None], True),  # 0.4 + 0.45
        (0.9, [0.6, None], True),  # 0.6 + what it leaves, 0.3
        (0.9, [0.895, None], False),  # leaves less than 0.01
        (0.5, [None, None, None], True),  # 3 x 0.16
        (0.5, [0.25, 0.3], False),
    ],
)
def test_the_chart_refuses_exactly_the_gpu_shares_the_container_would(
    budget: float, shares: list[float | None], fits: bool, tmp_path: Path
) -> None:
    """Local models' shares, given or the budget split equally, must fit model.gpuMemoryUtilization: the
    chart's sum refuses what fleet.py's would, and lets through what it takes."""
    models: list[Doc] = [{"name": f"m{i}", "dir": f"/models/m{i}"} for i in range(len(shares))]
    tables: list[Doc] = [{"name": model["name"], "model_dir": str(tmp_path)} for model in models]
    for model, table, share in zip(models, tables, shares, strict=True):
        if share is not None:
            model["gpuMemoryUtilization"] = table["gpu_memory_utilization"] = share
    for name in ("tokenizer.json", "config.json"):
        (tmp_path / name).write_text("{}")
    env = {"RERANK_GPU_MEMORY_UTILIZATION": str(budget)}
    values = [f"fleet.models={json.dumps(models)}", f"model.gpuMemoryUtilization={budget}"]
    if fits:
        expected = [m.gpu_memory_utilization for m in fleet.parse({"models": tables}, env).members]
        served = parse(render(set_json=values), tmp_path / "rendered")
        assert [m.gpu_memory_utilization for m in served.members] == expected
    else:
        with pytest.raises(fleet.FleetError, match="add up to"):
            fleet.parse({"models": tables}, env)
        message = render_error(set_json=values)
        assert "the local models' GPU shares add up to" in message
        assert f"model.gpuMemoryUtilization={budget:.2f}" in message


def test_cpu_mode_leaves_the_gpu_shares_out(tmp_path: Path) -> None:
    """vLLM's CPU build takes no GPU share: the file carries none, so no sum can be refused."""
    manifests = render(["fleet.yaml"], {"device": "cpu"}, ["model.gpuMemoryUtilization=0.5"])
    assert all("gpu_memory_utilization" not in table for table in fleet_file(manifests)["models"])
    assert [m.name for m in parse(manifests, tmp_path).members] == [SMALL, LARGE]


# The pod


def test_the_pod_reads_the_fleet_file_not_the_single_model_variables(variant: Variant) -> None:
    """RERANK_FLEET_FILE names the file in the ConfigMap mounted read-only; the single model's dir, name and
    size are gone; model.aliases (Cohere's names) and the GPU budget stay."""
    manifests = variant("fleet")
    assert manifests.env_value("RERANK_FLEET_FILE") == FLEET_FILE
    for name in SINGLE_MODEL_ENV:
        assert name not in manifests.env, name
    assert manifests.env_value("RERANK_MODEL_ALIASES") == "rerank-v3.5,rerank-multilingual-v3.0"
    assert manifests.env_value("RERANK_GPU_MEMORY_UTILIZATION") == "0.9"
    volume = next(v for v in manifests.pod_spec["volumes"] if v["name"] == "fleet")
    assert volume["configMap"] == {"name": CONFIG_MAP, "defaultMode": 0o444}  # no items: fleet.toml as is
    mount = next(m for m in manifests.container["volumeMounts"] if m["name"] == "fleet")
    assert (mount["mountPath"], mount["readOnly"]) == (FLEET_DIR, True)
    assert fleet_file(manifests)["models"], "the ConfigMap's one key is fleet.toml"


def test_each_model_volume_is_mounted_read_only_at_its_dir(variant: Variant) -> None:
    """A model's volume source becomes a pod volume mounted at its dir; a model without one mounts nothing."""
    manifests = variant("fleet")
    volumes = {v["name"]: v for v in manifests.pod_spec["volumes"]}
    mounts = {m["mountPath"]: m for m in manifests.container["volumeMounts"]}
    for model in FLEET["models"]:
        mount = mounts[model["dir"]]
        assert mount["readOnly"] is True
        source = {key: value for key, value in volumes[mount["name"]].items() if key != "name"}
        assert source == model["volume"]
    baked = _with_models({"name": SMALL, "dir": "/models/model"})
    assert "/models/model" not in {m["mountPath"] for m in baked.container["volumeMounts"]}
    assert {v["name"] for v in baked.pod_spec["volumes"]} == {"api-keys", "tmp", "cache", "dshm", "fleet"}


def test_a_fleet_change_rolls_the_pods() -> None:
    """checksum/fleet follows the file: a cascade's new topK changes it, an unrelated value does not."""
    one = render(["fleet.yaml"])
    same = render(["fleet.yaml"], {"gateway.logLevel": "debug"})
    other = render(["fleet.yaml"], set_json=["fleet.cascades[0].topK=20"])
    assert len(_annotations(one)["checksum/fleet"]) == 64
    assert _annotations(one)["checksum/fleet"] == _annotations(same)["checksum/fleet"]
    assert _annotations(one)["checksum/fleet"] != _annotations(other)["checksum/fleet"]


def test_a_remote_model_gets_egress_to_its_port() -> None:
    """The NetworkPolicy opens each remote URL's port (443 for https without one) to networkPolicy.upstreamTo;
    a fleet of local models opens nothing more than DNS."""
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rerank-8b"}}}
    manifests = render(
        ["fleet.yaml"],
        set_json=[
            'fleet.models[2]={"name": "m8b", "dir": "/models/8b", "upstreamUrl": "http://rerank-8b-vllm:8001"}',
            'fleet.models[3]={"name": "ext", "dir": "/models/ext", "upstreamUrl": "https://rerank.example.com"}',
            f"networkPolicy.upstreamTo=[{json.dumps(peer)}]",
        ],
    )
    egress = manifests.one("NetworkPolicy", FULLNAME)["spec"]["egress"]
    assert egress[1:] == [
        {"ports": [{"port": 8001, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}], "to": [peer]}
    ]
    local_only = render(["fleet.yaml"]).one("NetworkPolicy", FULLNAME)["spec"]["egress"]
    assert [rule["ports"][0]["port"] for rule in local_only] == [53]


# Without a fleet


@pytest.mark.parametrize("name", [name for name in VARIANTS if name != "fleet"])
def test_without_a_fleet_nothing_of_it_is_rendered(variant: Variant, name: str) -> None:
    """Empty fleet.models: the single-model chart, with no fleet ConfigMap, variable, volume or annotation."""
    manifests = variant(name)
    assert not any(doc["metadata"]["name"] == CONFIG_MAP for doc in manifests.of_kind("ConfigMap"))
    assert "RERANK_FLEET_FILE" not in manifests.env
    assert not [v["name"] for v in manifests.pod_spec["volumes"] if v["name"].startswith("fleet")]
    assert "checksum/fleet" not in _annotations(manifests)
    if name == "default":
        assert manifests.env_value("RERANK_MODEL_SIZE") == "4b"
        assert manifests.env_value("RERANK_SERVED_MODEL_NAME") == LARGE


def test_the_values_default_to_no_fleet() -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text())["fleet"] == {
        "default": "",
        "models": [],
        "cascades": [],
    }


# NOTES and docs


def test_notes_list_the_fleet_and_call_its_default(tmp_path: Path) -> None:
    notes = render_notes(["fleet.yaml"], workdir=tmp_path)
    assert f"naming none picks {LARGE}, which also answers to rerank-v3.5, rerank-multilingual-v3.0" in notes
    assert f"   {SMALL} (aliases rerank-small): local (0.25 of the GPU), /models/qwen3-reranker-0.6b" in notes
    assert f"   {LARGE}: local (0.6 of the GPU), /models/qwen3-reranker-4b" in notes
    assert (
        f"   rerank-cascade (aliases rerank-fast): cascade, {SMALL} scores every document and {LARGE} "
        "re-scores its best 50" in notes
    )
    assert f'"model": "{LARGE}"' in notes
    assert f'model="{LARGE}"' in notes


def test_the_docs_example_renders_into_the_fleet_it_describes(tmp_path: Path) -> None:
    """docs/fleet.md, "On Kubernetes": its values render, and the file holds the models and cascade shown."""
    text = (CHART.parent / "docs" / "fleet.md").read_text()
    part = text.split("## On Kubernetes", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", part, re.DOTALL)
    values: Doc = yaml.safe_load(block)
    manifests = render(set_json=[f"{key}={json.dumps(value)}" for key, value in values.items()])
    served = parse(manifests, tmp_path)
    assert [(m.name, m.gpu_memory_utilization) for m in served.members] == [(SMALL, 0.25), (LARGE, 0.6)]
    assert [(c.first, c.second, c.top_k) for c in served.cascades] == [(SMALL, LARGE, 50)]
    assert served.default == LARGE
