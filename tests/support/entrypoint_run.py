"""Run entrypoint.sh as a container would (own session, optionally another UID); watch its process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.procs import ROOT

ENTRYPOINT = ROOT / "entrypoint.sh"
# A container runtime starts PID 1 with every signal at its default. A shell started with SIGINT ignored (by a
# suite launched in the background: `cmd &` in a script ignores SIGINT and SIGQUIT) may not trap it (POSIX),
# so the entrypoint is started through this, whatever started the suite.
DEFAULT_SIGNALS = (
    sys.executable, "-S", "-c",
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGQUIT): signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])",
)  # fmt: skip


def children_of(pid: int) -> dict[int, int]:
    """All live descendants of ``pid`` as {pid: parent pid}, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(stat.parent.name)] = int(fields[1])
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found[child] = parent
                frontier.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class EntrypointRun:
    """One run of entrypoint.sh; ``close()`` leaves no process of it behind, whatever happened."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, prefix: Sequence[str] = ()) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:  # a fresh log per run: tests look for lines in it
            self.proc = subprocess.Popen(
                [*prefix, *DEFAULT_SIGNALS, "/bin/sh", str(ENTRYPOINT)],
                env=dict(env),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._seen: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> dict[int, int]:
        found = children_of(self.proc.pid)
        self._seen |= set(found)
        return found

    def signal(self, signum: int) -> None:
        self.descendants()  # remember the tree: close() checks it is gone
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def leftovers(self, grace: float = 5.0) -> list[str]:
        """Processes of this run still alive after ``grace`` seconds (a SIGKILLed process takes a moment
        to release gigabytes of memory); the entrypoint must take its children down with it."""
        deadline = time.monotonic() + grace
        while True:
            alive = [pid for pid in sorted(self._seen) if _running(pid)]
            if not alive or time.monotonic() > deadline:
                return [f"{pid}: {cmdline(pid)[:120]}" for pid in alive]
            time.sleep(0.1)

    def close(self) -> None:
        self.descendants()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in [pid for pid in self._seen if _running(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for_line(run: EntrypointRun, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in run.log_text():
            return
        if run.proc.poll() is not None:
            raise RuntimeError(f"entrypoint exited {run.proc.returncode} before logging {needle!r}")
        time.sleep(0.1)
    raise TimeoutError(f"no {needle!r} in the entrypoint log within {timeout:.0f}s")
