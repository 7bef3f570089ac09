"""Real processes for the suite: vLLM (CPU) and the gateway, started and stopped like an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
# float32 keeps vLLM within 1e-6 of the transformers reference (bf16, `auto` on this CPU, moves scores ~1e-3).
TEST_DTYPE = "float32"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


class Service:
    """A subprocess with its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        log.close()

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def vllm_service(
    model_dir: Path, port: int, log_path: Path, *, served_name: str, max_model_len: int
) -> Service:
    env = {
        **os.environ,
        "RERANK_MODEL_DIR": str(model_dir),
        "RERANK_DEVICE": "cpu",
        "RERANK_DTYPE": TEST_DTYPE,
        "RERANK_SERVED_MODEL_NAME": served_name,
        "RERANK_VLLM_PORT": str(port),
        "RERANK_MAX_MODEL_LEN": str(max_model_len),
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the tiny model needs little
        "HF_HUB_OFFLINE": "1",
        # GET /load: requests inside vLLM's API server, which tests read while its engine is paused.
        "RERANK_VLLM_EXTRA_ARGS": "--enable-server-load-tracking",
    }
    return Service("vllm", [sys.executable, "-m", "model_setup", "serve"], env, log_path)


ENGINE_TITLES = ("VLLM::EngineCore", "VLLM::Worker")


@contextlib.contextmanager
def engine_paused(api_server: int) -> Iterator[Callable[[], None]]:
    """vLLM's engine processes stopped (SIGSTOP) while its API server keeps taking requests: a queue that
    stays as it is for as long as a test needs to look at it, on however busy a machine. Yields `resume`;
    resumed at the end in any case."""
    engines = [pid for pid in descendants(api_server) if _title(pid).startswith(ENGINE_TITLES)]
    assert engines, f"no vLLM engine process under {api_server}"
    stopped = True

    def resume() -> None:
        nonlocal stopped
        if stopped:
            for pid in engines:
                os.kill(pid, signal.SIGCONT)
            stopped = False

    for pid in engines:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield resume
    finally:
        resume()


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (children of any of its threads, and theirs)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            children += map(int, (task / "children").read_text().split())
    return [grandchild for child in children for grandchild in (child, *descendants(child))]


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def gateway_service(port: int, log_path: Path, env: Mapping[str, str]) -> Service:
    full = {
        **os.environ,
        "RERANK_PORT": str(port),
        "RERANK_HOST": "127.0.0.1",
        "RERANK_METRICS_PORT": str(free_port()),  # the default (9090) would collide between gateways
        **env,
    }
    return Service("gateway", [sys.executable, "-m", "gateway"], full, log_path)


def start_gateway(name: str, artifacts: Path, env: Mapping[str, str]) -> tuple[Service, str]:
    """A gateway on a free port, logging to ``<artifacts>/gateway-<name>.log`` (``gateway.log`` for the
    session's, name ""), once it answers /health; stopped again if it does not."""
    port = free_port()
    service = gateway_service(port, artifacts / (f"gateway-{name}.log" if name else "gateway.log"), env)
    service.start()
    assert service.proc is not None
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=30, proc=service.proc)
    except Exception:
        service.stop()
        raise
    return service, url


def workers_of(master: int) -> dict[int, int]:
    """Worker number -> pid, from the master's children and their titles ("... worker-N")."""
    found = {}
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in map(int, children):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        if " worker-" in title:
            found[int(title.rsplit("worker-", 1)[1].strip("\0 "))] = pid
    return found
