"""scripts/run.sh stops at the first failing step with one line saying what to do; a size and a source choose
what it fetches, and the model is served under its own name."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.lfs_repo import make_modelscope_repo, standard_files
from tests.support.procs import ROOT, free_port

pytestmark = pytest.mark.unit


def ready_venv(tmp_path: Path) -> Path:
    """A venv that setup.sh takes as set up (its stamp matches) and whose python is the suite's."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    inputs = (ROOT / "pyproject.toml").read_bytes() + (ROOT / "scripts" / "setup.sh").read_bytes()
    for flavour in ("cpu", "gpu"):  # whichever run.sh picks on this machine
        (venv / f".setup-{flavour}").write_text(hashlib.sha256(inputs).hexdigest())
    return venv


def run_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """run.sh as a developer runs it, with a ready venv, keys, no demo page and no inherited model choice."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "MODEL_"))}
    base.update(
        RERANK_VENV=str(ready_venv(tmp_path)),
        RERANK_API_KEYS="unused sha256:" + "0" * 64,
        RERANK_DEMO="off",
        RERANK_LOG_FORMAT="json",
        PYTHON=sys.executable,
    )
    return subprocess.run(
        [str(ROOT / "scripts" / "run.sh"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


OFFLINE = f"http://127.0.0.1:{free_port()}"  # nothing listens: like a machine offline


@pytest.mark.parametrize(
    ("env", "cloning"),
    [
        ({}, f"cloning {OFFLINE}/Qwen/Qwen3-Reranker-8B (LFS pointers only)"),
        (
            {"MODEL_SOURCE": "modelscope"},
            f"cloning {OFFLINE}/models/Qwen/Qwen3-Reranker-8B.git, branch master",
        ),
        (
            {"RERANK_MODEL_SOURCE": "modelscope"},
            f"cloning {OFFLINE}/models/Qwen/Qwen3-Reranker-8B.git, branch",
        ),
    ],
)
def test_a_size_and_a_source_choose_the_repository(tmp_path: Path, env: dict[str, str], cloning: str) -> None:
    """`run.sh 8b` fetches Qwen/Qwen3-Reranker-8B, from Hugging Face's layout or ModelScope's."""
    done = run_sh(tmp_path, "8b", RERANK_HUB_URL=OFFLINE, MODEL_REVISION="v1.0" if env else "0" * 40, **env)
    assert done.returncode == 1, done.stderr
    assert f"model_setup fetch: {cloning}" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("run: could not fetch 8b (error above)")
    assert not (ROOT / "var" / "models" / "qwen3-reranker-8b").exists()
    assert not (ROOT / "var" / "models" / "modelscope" / "qwen3-reranker-8b").exists()


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"MODEL": "someone/some-reranker"}, "no pinned revision for someone/some-reranker: pass --revision"),
        ({"MODEL_SOURCE": "modelscope"}, "no pinned ModelScope revision for Qwen/Qwen3-Reranker-8B: "),
        ({"MODEL_SOURCE": "hf-mirror", "MODEL_REVISION": "0" * 40}, "--source must be one of huggingface"),
    ],
)
def test_a_model_without_a_revision_or_a_wrong_source_stops_before_any_download(
    tmp_path: Path, env: dict[str, str], error: str
) -> None:
    # The 8B is pinned on Hugging Face, not on ModelScope; an unknown repository on neither.
    rest = {name: value for name, value in env.items() if name != "MODEL"}
    done = run_sh(tmp_path, env.get("MODEL", "8b"), RERANK_HUB_URL=OFFLINE, **rest)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert error in lines[-2]
    assert "cloning" not in done.stderr


def test_an_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    done = run_sh(tmp_path, "9b")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "--repo '9b' is neither a size (0.6b, 4b, 8b)" in lines[-2]
    assert lines[-1] == (
        "run: '9b' is neither 'tiny', 'tiny-fleet', a directory, a size nor a hub repository (owner/name)"
    )


def test_tiny_fleet_serves_two_tiny_models_and_a_cascade_offline(tmp_path: Path) -> None:
    """`run.sh tiny-fleet` writes both tiny models and its fleet file, and the entrypoint verifies both
    snapshots and plans a vLLM for each on its own port; the run then stops at a wrong gateway setting,
    before anything starts."""
    done = run_sh(tmp_path, "tiny-fleet", RERANK_MAX_DOCUMENTS="0")
    assert done.returncode == 64, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    planned = next(event for event in events if event["event"] == "fleet_verified")
    assert planned["message"] == "local models: tiny-small on port 8001, tiny-large on port 8002"
    commands = [event["message"] for event in events if event["event"] == "vllm_command"]
    assert len(commands) == 2
    assert "--served-model-name tiny-small" in commands[0]
    assert "--port 8002" in commands[1]
    assert "RERANK_MAX_DOCUMENTS" in events[-1]["message"]
    assert "vllm_started" not in done.stderr
    fleet = (ROOT / "var" / "run" / "tiny-fleet.toml").read_text()
    assert 'first = "tiny-small"' in fleet
    assert 'second = "tiny-large"' in fleet


def test_a_modelscope_model_is_fetched_once_and_served_under_its_own_name(tmp_path: Path) -> None:
    """Through ModelScope's layout at a tag into var/models/modelscope/<name>, verified by the entrypoint and
    named after its repository; the run then stops at a wrong vLLM setting, before anything starts."""
    hub = tmp_path / "modelscope"
    repo = make_modelscope_repo(hub, "test-org/Run-Sh-Modelscope-Test", standard_files(), tag="v1.0")
    dest = ROOT / "var" / "models" / "modelscope" / "run-sh-modelscope-test"
    shutil.rmtree(dest, ignore_errors=True)
    try:
        done = run_sh(
            tmp_path, "test-org/Run-Sh-Modelscope-Test", MODEL_SOURCE="modelscope", MODEL_REVISION="v1.0",
            RERANK_HUB_URL=hub.as_uri(), RERANK_MAX_MODEL_LEN="lots",
        )  # fmt: skip
        assert done.returncode == 64, done.stderr
        events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        verified = next(event for event in events if event["event"] == "model_verified")
        assert f"test-org/Run-Sh-Modelscope-Test @ {repo.revision} (tag v1.0)" in verified["message"]
        assert verified["message"].endswith("; served as run-sh-modelscope-test")
        assert "vLLM settings: " in events[-1]["message"]
        assert "vllm_started" not in done.stderr
        manifest = json.loads((dest / ".rerank-model.json").read_text())
        assert (manifest["source"], manifest["tag"], manifest["url"]) == ("modelscope", "v1.0", repo.url)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_a_model_that_cannot_be_fetched_stops_the_run(tmp_path: Path) -> None:
    """Offline (the hub unreachable), `run.sh owner/name` ends with the fetch error and one line that
    points at the network or the offline tiny model; it never goes on to start anything."""
    env = {
        **os.environ,
        "RERANK_VENV": str(ready_venv(tmp_path)),
        "RERANK_HUB_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: like a machine offline
        "MODEL_REVISION": "0" * 40,
        "RERANK_API_KEYS": "unused sha256:" + "0" * 64,
        "RERANK_DEMO": "off",
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "run.sh"), "example/offline-model"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[-1] == (
        "run: could not fetch example/offline-model (error above); "
        "to try the API offline: ./scripts/run.sh tiny"
    )
    assert any(line.startswith("model_setup fetch: error:") for line in lines[:-1]), done.stderr  # the cause
    assert "entrypoint" not in done.stderr
    assert "vllm_started" not in done.stderr
    assert not (ROOT / "var" / "models" / "offline-model").exists()
