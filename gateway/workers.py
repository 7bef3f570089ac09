"""Keep the gateway's worker processes alive: granian's server, with a respawn loop that backs off.

granian alone either stops every worker when one dies (``respawn_failed_workers=False``: one OOM-killed
worker takes the port down and the pod reloads the model) or, with respawning on, exits on a second failure
of a worker within 5.5 s. Here a dead worker is replaced while the others keep serving, the master never
exits for it, and a worker that keeps dying is respawned after a delay that doubles up to a cap: each exit
is logged (``worker_exited``) and counted, and the state (workers configured and alive, exits, the current
delay) is written to a small file that ``/ready`` reads and the metrics port exports.

Only ``_serve_loop`` of granian's multiprocess server is replaced; pyproject.toml holds granian to 2.8.x
and tests/test_workers.py (and the image's test) kill real workers, so a release that changes this loop
fails there before it ships.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from granian.server.mp import MPServer

from gateway.workerstate import WorkersState

STABLE_S = 30.0  # a worker that served this long before dying starts its backoff afresh
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0

log = logging.getLogger("gateway.workers")


def next_delay(previous_s: float | None, lived_s: float) -> float:
    """No delay for a worker's first death or one after it served a while; then 1 s, doubling to the cap,
    for each further death of a worker that died young (a crash loop)."""
    if previous_s is None or lived_s >= STABLE_S:
        return 0.0
    return min(MAX_DELAY_S, max(FIRST_DELAY_S, previous_s * 2))


class Supervisor(MPServer):
    """granian's multiprocess server with a respawn loop that never gives up and backs off instead."""

    def __init__(self, *args: Any, state_file: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state_file = state_file
        self.state = WorkersState(configured=self.workers)
        self._delays: dict[int, float] = {}  # worker index -> its last respawn delay
        self._due: dict[int, float] = {}  # worker index -> monotonic time of its pending respawn

    def _publish(self) -> None:
        self.state.alive = sum(1 for worker in self.wrks if worker.inner.is_alive())
        now = time.monotonic()
        self.state.backoff_s = round(max((due - now for due in self._due.values()), default=0.0), 1)
        self.state.write(self.state_file)

    def _exited(self, idx: int) -> None:
        worker = self.wrks[idx]
        lived = time.monotonic() - worker.birth
        delay = next_delay(self._delays.get(idx), lived)
        self._delays[idx] = delay
        self._due[idx] = time.monotonic() + delay
        self.state.exits += 1
        log.error(
            "worker_exited",
            extra={
                "worker": idx + 1, "pid": worker.inner.pid, "exit_code": worker.inner.exitcode,
                "lived_s": round(lived, 1), "respawn_in_s": delay, "crash_loop": delay > 0,
            },
        )  # fmt: skip

    def _serve_loop(self, spawn_target: Callable[..., Any], target_loader: Callable[..., Any]) -> None:
        self._publish()
        while True:
            timeout = max(0.0, min(self._due.values()) - time.monotonic()) if self._due else None
            self.main_loop_interrupt.wait(timeout)
            # Clear before taking the list: a worker dying from here on sets the event again.
            self.main_loop_interrupt.clear()
            if self.interrupt_signal:
                break
            while self.interrupt_children:
                self._exited(self.interrupt_children.pop(0))
            for idx in [i for i, due in self._due.items() if due <= time.monotonic()]:
                del self._due[idx]
                self._respawn_workers([idx], spawn_target, target_loader)
            if self.reload_signal:  # SIGHUP: granian's graceful reload of every worker
                self._reload(spawn_target, target_loader)  # type: ignore[no-untyped-call]
            self._publish()
