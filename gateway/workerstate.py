"""The worker state the supervising process (gateway/workers.py) shares: one small JSON file, written
atomically on every change, read by each worker's ``/ready`` and by the metrics port."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_ENV = "RERANK_WORKERS_STATE_FILE"  # set by `python -m gateway serve` for its workers; not a setting


@dataclass
class WorkersState:
    configured: int
    alive: int = 0
    exits: int = 0  # unexpected worker exits since the server started
    backoff_s: float = 0.0  # the longest delay a pending respawn is waiting out; 0 when none is pending

    def write(self, path: Path) -> None:
        """Atomically (rename), so a reader never sees half a file."""
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self)))
        temporary.replace(path)


def read_state(path: Path | None = None) -> WorkersState | None:
    """The state the supervising process last wrote (by default the file its environment names); None when
    not run under it (an app built in-process) or before granian started its workers."""
    if path is None:
        if not (named := os.environ.get(STATE_ENV)):
            return None
        path = Path(named)
    try:
        return WorkersState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
