"""Keys reload without a restart: the keys file is re-read when it changes.

A Kubernetes Secret volume updates in place (its ``..data`` symlink is swapped), so adding or revoking a
shop's key needs no new pod, and no new pod means no minutes of model loading. A task in each worker looks at
the file's identity (device, inode, size, modification time, following symlinks) every ``interval_s``, with
or without traffic: a revoked key stops working, and a broken file is reported, within that interval of the
change reaching the file. A file that no longer parses keeps the keys in force and logs one error line (per
broken version, naming the line number, never the line). Requests already admitted keep the key they were
admitted with.
"""

from __future__ import annotations

import asyncio
import os
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

    def authenticate(self, raw_key: str) -> ApiKey | None:
        return self._ring.authenticate(raw_key)

    async def watch(self) -> None:
        """Check the file every ``interval_s`` until cancelled (the worker's lifespan runs it)."""
        file = self._file
        if file is None or self._interval <= 0:  # keys from the environment, or reloading is off
            return
        while True:
            await asyncio.sleep(self._interval)
            self._reload_if_changed(file)

    def _reload_if_changed(self, file: Path) -> None:
        signature = _signature(file)
        if signature == self._signature:
            return
        self._signature = signature  # a broken version is reported once, not on every check
        try:
            ring = KeyRing.load(file=file, env_value=self._env_value)
        except ValueError as exc:  # the message names a line number, never the line (it may hold a key)
            _log.error("api_keys_reload_failed", error=str(exc), keys_in_force=len(self._ring))
            self._notify("error")
            return
        self._ring = ring
        _log.info("api_keys_reloaded", keys=len(ring))
        self._notify("ok")

    def _notify(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result)
