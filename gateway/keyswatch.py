"""Keys reload without a restart: the keys file is re-read when it changes.

A Kubernetes Secret volume updates in place (its ``..data`` symlink is swapped), so adding or revoking a
shop's key needs no new pod, and no new pod means no minutes of model loading. The file's identity (device,
inode, size, modification time, following symlinks) is looked at before authenticating a request, at most
once per ``interval_s``; a revoked key therefore stops working within that interval of the change reaching
the file. A file that no longer parses keeps the keys in force and logs one error line (per broken version,
naming the line number, never the line). Requests already admitted keep the key they were admitted with.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway.keys import ApiKey, KeyRing

_log = structlog.get_logger("gateway.keys")
Signature = tuple[int, int, int, int] | None
# Told of every reload: "ok" or "error".
OnReload = Callable[[str], None]


def _signature(path: Path) -> Signature:
    try:
        stat = os.stat(path)  # follows symlinks: a Secret volume's swap changes the target's inode
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class KeyWatch:
    """The keys in force, re-read from ``file`` when it has changed; ``env_value`` keys are constant."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        file: Path | None,
        env_value: str | None,
        interval_s: float,
        on_reload: OnReload | None = None,
    ) -> None:
        self._ring = ring
        self._file = file
        self._env_value = env_value
        self._interval = interval_s
        self._on_reload = on_reload
        self._signature = _signature(file) if file is not None else None
        self._next_check = time.monotonic() + interval_s

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def authenticate(self, raw_key: str) -> ApiKey | None:
        if self._file is not None and self._interval > 0 and time.monotonic() >= self._next_check:
            self.check()
        return self._ring.authenticate(raw_key)

    def check(self) -> bool:
        """Re-read the file if it changed; True if new keys are now in force."""
        self._next_check = time.monotonic() + self._interval
        if self._file is None:  # keys from the environment only: nothing can change
            return False
        signature = _signature(self._file)
        if signature == self._signature:
            return False
        self._signature = signature  # a broken version is reported once, not on every check
        try:
            ring = KeyRing.load(file=self._file, env_value=self._env_value)
        except ValueError as exc:  # the message names a line number, never the line (it may hold a key)
            _log.error("api_keys_reload_failed", error=str(exc), keys_in_force=len(self._ring))
            self._notify("error")
            return False
        self._ring = ring
        _log.info("api_keys_reloaded", keys=len(ring))
        self._notify("ok")
        return True

    def _notify(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result)
