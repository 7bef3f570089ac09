"""The built image, run as a shop runs it: podman with the settings in scripts/podman/containers.conf."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.procs import ROOT, free_port

PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "scripts" / "podman" / "containers.conf")}
READY_BUDGET_S = 420.0  # vLLM's cold start in a fresh container (torch compile), on a busy 2-core machine
_names = itertools.count()


def podman(
    *args: str, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=PODMAN_ENV, input=input, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")
    return result


def build_image(log: Path) -> tuple[str, float]:
    """scripts/image.sh build cpu, as the README says; the image reference and the seconds it took."""
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [str(ROOT / "scripts" / "image.sh"), "build", "cpu"],
            env=PODMAN_ENV, stdout=subprocess.PIPE, stderr=out, text=True, timeout=2400, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"scripts/image.sh build cpu failed:\n{log.read_text()[-4000:]}")
    return result.stdout.strip().splitlines()[-1], time.monotonic() - started


@dataclass
class Container:
    name: str
    http_port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def wait(self, timeout: float) -> int:
        """The container's exit status, once it has exited."""
        result = podman("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout

    def wait_ready(self, budget: float = READY_BUDGET_S) -> None:
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited before /ready:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.name} not ready within {budget:.0f}s:\n{self.logs()[-4000:]}")

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False)


def run_container(
    image: str,
    *,
    keys_file: Path,
    user: str = "10001:0",
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> Container:
    """`podman run -d` as a shop runs the image: read-only root, tmpfs /tmp, the keys file mounted
    read-only, the API and metrics ports published on loopback."""
    container = Container(f"rerank-test-{os.getpid()}-{next(_names)}", free_port(), free_port())
    settings = {
        "RERANK_API_KEYS_FILE": "/run/secrets/rerank-keys",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the tiny model needs little
        **(env or {}),
    }
    podman(
        "run", "--detach", "--name", container.name, "--user", user,
        "--read-only", "--tmpfs", "/tmp:rw,size=2g,mode=1777", "--shm-size", "1g",  # noqa: S108  # in the container
        "--volume", f"{keys_file}:/run/secrets/rerank-keys:ro",
        "--publish", f"127.0.0.1:{container.http_port}:8000",
        "--publish", f"127.0.0.1:{container.metrics_port}:9090",
        *(arg for name, value in settings.items() for arg in ("--env", f"{name}={value}")),
        *options, image,
    )  # fmt: skip
    return container
