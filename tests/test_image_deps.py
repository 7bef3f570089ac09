"""The image's Python layer resolves: exactly what the Containerfile installs (vLLM at its pinned version with
CUDA, the gateway's dependencies and the gpu extra from pyproject.toml, for the image's CPython on Ubuntu
22.04 x86_64) goes through pip's resolver against PyPI, so a dependency conflict fails CI instead of the next
image build.

pip runs with ``--dry-run`` and ``--use-feature=fast-deps``: each wheel's metadata is read with HTTP range
requests, no wheel is downloaded (asserted), and nothing is installed. This machine's pip configuration (a
local wheelhouse, constraints) is left out: the image build sees plain PyPI. A check that cannot reach PyPI
fails; it is never skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.support.procs import ROOT

# Not in the `unit` tier: it needs PyPI, a server of its own.

CONTAINERFILE = (ROOT / "Containerfile").read_text()
# What the deps stage runs; if it changes, this check has to learn the new form first.
INSTALL = 'uv pip install --python /opt/venv/bin/python "vllm==${VLLM_VERSION}" -r pyproject.toml --extra gpu'
GLIBC_MINOR = 35  # Ubuntu 22.04, the CUDA base below: manylinux_2_17 ... manylinux_2_35 wheels run there


def arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", CONTAINERFILE, re.MULTILINE)
    assert match, f"ARG {name} not in the Containerfile"
    return match.group(1)


def image_requirements() -> list[str]:
    assert INSTALL in CONTAINERFILE, "the Containerfile installs its Python layer differently now"
    assert "ubuntu22.04" in arg("BASE_IMAGE"), "a new base image needs its glibc in GLIBC_MINOR"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        f"vllm=={arg('VLLM_VERSION')}",
        *project["dependencies"],
        *project["optional-dependencies"]["gpu"],
    ]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(requirements: list[str], report: Path) -> subprocess.CompletedProcess[str]:
    major, minor = arg("PYTHON_VERSION").split(".")[:2]
    platforms = [f"manylinux_2_{v}_x86_64" for v in range(GLIBC_MINOR, 16, -1)] + ["manylinux2014_x86_64"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no config file at all: plain PyPI, no local constraints
    if "PIP_CERT" in os.environ:  # how this network reaches PyPI, not what it resolves
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--verbose",
        "--use-feature=fast-deps", "--report", str(report), "--only-binary=:all:",
        *(f"--platform={p}" for p in platforms),
        "--implementation=cp", f"--python-version={major}.{minor}",
        f"--abi=cp{major}{minor}", "--abi=abi3", "--abi=none",
        *requirements,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)


def test_the_containerfile_requirements_resolve_for_cuda_on_linux(tmp_path: Path) -> None:
    requirements = image_requirements()
    run = resolve(requirements, tmp_path / "report.json")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Downloading" not in run.stdout, "a wheel was downloaded; only metadata should be"
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    versions = {
        canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]
    }
    assert versions["vllm"] == arg("VLLM_VERSION")
    assert any(name.startswith("nvidia-") for name in versions), "vLLM's CUDA build brings NVIDIA's libraries"
    assert "torch" in versions
    for requirement in requirements:  # every direct requirement is in the resolution
        name = canonical(re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0])
        assert name in versions, name


def test_a_conflict_fails_the_check(tmp_path: Path) -> None:
    """The check can fail: vLLM pins its torch (2.13.0 for 0.32.0); another one beside it cannot resolve."""
    run = resolve([f"vllm=={arg('VLLM_VERSION')}", "torch==2.12.1"], tmp_path / "report.json")
    assert run.returncode != 0
    assert "ResolutionImpossible" in run.stdout + run.stderr
