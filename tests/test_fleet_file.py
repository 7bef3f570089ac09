"""The fleet file (model_setup/fleet.py): what it accepts, the defaults it fills in, and the one line it gives
for each mistake; and the gateway's routing table built from it (gateway/models.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.models import Cascade, Scorer
from gateway.models import build as build_models
from gateway.settings import Settings
from model_setup.fleet import FleetError, Member, parse
from tests.support.entrypoint_run import ENTRYPOINT
from tests.support.procs import ROOT

pytestmark = pytest.mark.unit
ENV = {"RERANK_VLLM_PORT": "9001", "RERANK_PORT": "8000", "RERANK_GPU_MEMORY_UTILIZATION": "0.9"}


def fleet(model_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "models": [
            {"model_dir": str(model_dir), "aliases": ["small"], "name": "m-small"},
            {"model_dir": str(model_dir), "name": "m-large", "aliases": ["large"]},
        ],
        "cascades": [{"name": "m-cascade", "first": "m-small", "second": "m-large"}],
        **extra,
    }


def test_a_fleet_gets_ports_shares_and_cascade_bounds_by_default(model_dir: Path) -> None:
    served = parse(fleet(model_dir), ENV)
    small, large = served.members
    assert (small.port, large.port) == (9001, 9002)
    assert (small.gpu_memory_utilization, large.gpu_memory_utilization) == (0.45, 0.45)
    assert small.url == "http://127.0.0.1:9001"
    assert served.default == "m-small"  # the first model when none is declared
    (cascade,) = served.cascades
    assert (cascade.top_k, cascade.max_top_k) == (50, 200)
    assert served.names() == {
        "m-small": "m-small", "m-large": "m-large", "m-cascade": "m-cascade", "small": "m-small",
        "large": "m-large",
    }  # fmt: skip


def test_a_model_s_name_defaults_to_its_snapshot_s(model_dir: Path) -> None:
    served = parse({"models": [{"model_dir": str(model_dir)}]}, ENV)
    assert served.members[0].name == "qwen3-reranker-tiny"


def test_a_remote_model_starts_nothing(model_dir: Path) -> None:
    data = fleet(model_dir)
    data["models"][1] = {"model_dir": str(model_dir), "name": "m-large", "upstream_url": "http://big:8001/"}
    served = parse(data, ENV)
    assert [member.name for member in served.local] == ["m-small"]
    assert served.members[1].url == "http://big:8001"
    assert served.members[0].gpu_memory_utilization == 0.9  # the one local model gets the whole budget


def shares(model_dir: Path, *given: float | None) -> list[dict[str, Any]]:
    return [
        {"model_dir": str(model_dir), "name": f"m{i}"}
        | ({} if share is None else {"gpu_memory_utilization": share})
        for i, share in enumerate(given)
    ]


def test_models_without_a_share_split_what_the_others_leave(model_dir: Path) -> None:
    served = parse({"models": shares(model_dir, 0.6, None, None)}, ENV)
    assert [member.gpu_memory_utilization for member in served.members] == [0.6, 0.15, 0.15]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ((0.5, 0.5), "add up to 1.00, more than RERANK_GPU_MEMORY_UTILIZATION=0.90"),
        ((0.895, None), "add up to 0.90 and leave less than 0.01 of RERANK_GPU_MEMORY_UTILIZATION=0.90"),
    ],
)
def test_shares_past_the_budget_are_refused(
    model_dir: Path, given: tuple[float | None, ...], message: str
) -> None:
    with pytest.raises(FleetError, match=re.escape(message)):
        parse({"models": shares(model_dir, *given)}, ENV)
    # The gateway reads the file without the GPU check: the entrypoint's `model_setup fleet` makes it.
    assert len(parse({"models": shares(model_dir, *given)}, ENV, check_gpu=False).members) == 2


def test_a_local_model_s_vllm_gets_its_own_settings(model_dir: Path) -> None:
    member = Member(
        "m", (), model_dir, port=9005, gpu_memory_utilization=0.3, dtype="float32", vllm_args=("--x",)
    )
    env = member.vllm_env({"RERANK_VLLM_EXTRA_ARGS": "--enable-foo", "RERANK_DTYPE": "auto"})
    assert env["RERANK_VLLM_PORT"] == "9005"
    assert env["RERANK_SERVED_MODEL_NAME"] == "m"
    assert env["RERANK_DTYPE"] == "float32"
    assert env["RERANK_GPU_MEMORY_UTILIZATION"] == "0.3"
    assert env["RERANK_VLLM_EXTRA_ARGS"] == "--enable-foo --x"
    assert "RERANK_QUANTIZATION" not in env  # unset in the file: the environment's


def cascade(**fields: Any) -> dict[str, Any]:
    return {"cascades": [{"name": "c", "first": "m-small", "second": "m-large", **fields}]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modles": []}, "unknown key 'modles'"),
        ({"models": []}, "declare at least one model"),
        ({"default": "nobody"}, "default 'nobody' is no model's name or alias"),
        (cascade(second="x"), "second = 'x' is not the name of a model"),
        (cascade(second="m-small"), "first and second are the same"),
        (cascade(first="small"), "first = 'small' is not the name"),
        (cascade(top_k=9, max_top_k=5), "max_top_k (5) is below top_k (9)"),
        (cascade(name="small"), "the name 'small' is used twice"),
    ],
)
def test_each_mistake_is_one_line_naming_the_entry(
    model_dir: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(FleetError, match=re.escape(message)):
        parse(fleet(model_dir) | change, ENV)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"upstream_url": "http://user:secret@x", "name": "r"}, "upstream_url must not carry credentials"),
        ({"port": 8000}, "ports of their own, apart from RERANK_PORT=8000"),
        ({"port": 9001}, "ports of their own"),
        ({"upstream_url": "ftp://x", "name": "r"}, "upstream_url must be an http"),
        ({"upstream_url": "http://x", "name": "r", "port": 1}, "port is for a local model"),
        ({"dtype": 16}, "dtype must be a non-empty string"),
        ({"name": "has space"}, "is not a model name"),
        ({"max_model_len": 100}, "max_model_len must be between 256"),
        ({"model_dir": "/nonexistent"}, "model_dir /nonexistent has no tokenizer.json"),
    ],
)
def test_each_bad_model_is_refused(model_dir: Path, model: dict[str, Any], message: str) -> None:
    data = fleet(model_dir)
    data["models"][1] = {
        "model_dir": str(model_dir),
        "name": "m-large",
        "gpu_memory_utilization": 0.45,
    } | model
    with pytest.raises(FleetError, match=re.escape(message)):
        parse(data, ENV)


def test_the_gateway_routes_every_name_and_lists_the_fleet(model_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "fleet.toml"
    file.write_text(
        f'default = "large"\n[[models]]\nname = "m-small"\nmodel_dir = "{model_dir}"\n'
        f'[[models]]\nname = "m-large"\naliases = ["large"]\nmodel_dir = "{model_dir}"\ndtype = "float32"\n'
        '[[cascades]]\nname = "m-cascade"\nfirst = "m-small"\nsecond = "m-large"\ntop_k = 3\n'
    )
    settings = Settings(fleet_file=file, api_keys="shop sha256:" + "a" * 64)  # type: ignore[arg-type]
    models = build_models(settings, settings.fleet(), None)
    assert models.names[:3] == ("m-large", "rerank-v3.5", "rerank-multilingual-v3.0")
    assert isinstance(models.resolve(None), Scorer)
    assert models.resolve(None).name == "m-large"
    assert models.resolve("rerank-v3.5").name == "m-large"
    cascade = models.resolve("m-cascade")
    assert isinstance(cascade, Cascade)
    assert (cascade.first.name, cascade.second.name, cascade.top_k) == ("m-small", "m-large", 3)
    assert cascade.second.precision.dtype == "float32"
    assert cascade.first.precision.dtype == "auto"
    with pytest.raises(
        ApiError, match=re.escape("model 'm-huge' not found; available: m-large, rerank-v3.5")
    ):
        models.resolve("m-huge")
    # Same weights, other names: the score cache keeps their pairs apart.
    assert cascade.first.cache.keys("k", "i", "q", ["d"]) != cascade.second.cache.keys("k", "i", "q", ["d"])


def test_the_deployment_s_aliases_may_not_take_a_fleet_name(model_dir: Path, tmp_path: Path) -> None:
    file = tmp_path / "fleet.toml"
    file.write_text(f'[[models]]\nname = "m"\naliases = ["rerank-v3.5"]\nmodel_dir = "{model_dir}"\n')
    with pytest.raises(ValueError, match=re.escape("RERANK_MODEL_ALIASES names 'rerank-v3.5'")):
        Settings(fleet_file=file, api_keys="shop sha256:" + "a" * 64)  # type: ignore[arg-type]


def test_the_entrypoint_refuses_a_wrong_fleet_file_before_starting_anything(tmp_path: Path) -> None:
    file = tmp_path / "fleet.toml"
    file.write_text('[[models]]\nmodel_dir = "/nonexistent"\n')
    env = {
        "PATH": "/usr/bin:/bin",
        "RERANK_PYTHON": sys.executable,
        "RERANK_DEVICE": "cpu",
        "RERANK_FLEET_FILE": str(file),
        "RERANK_API_KEYS": "shop sha256:" + "a" * 64,
        "RERANK_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        ["/bin/sh", str(ENTRYPOINT)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 64, done.stderr
    assert "models[0]: model_dir /nonexistent has no tokenizer.json" in done.stderr.splitlines()[-1]
    assert "vllm_started" not in done.stderr
