"""scripts/run.sh stops at the first failing step with one line saying what to do."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import ROOT, free_port

pytestmark = pytest.mark.unit


def ready_venv(tmp_path: Path) -> Path:
    """A venv that setup.sh takes as set up (its stamp matches) and whose python is the suite's."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    inputs = (ROOT / "pyproject.toml").read_bytes() + (ROOT / "scripts" / "setup.sh").read_bytes()
    for flavour in ("cpu", "gpu"):  # whichever run.sh picks on this machine
        (venv / f".setup-{flavour}").write_text(hashlib.sha256(inputs).hexdigest())
    return venv


def test_a_model_that_cannot_be_fetched_stops_the_run(tmp_path: Path) -> None:
    """Offline (the hub unreachable), `run.sh owner/name` ends with the fetch error and one line that
    points at the network or the offline tiny model; it never goes on to start anything."""
    env = {
        **os.environ,
        "RERANK_VENV": str(ready_venv(tmp_path)),
        "RERANK_HUB_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: like a machine offline
        "MODEL_REVISION": "0" * 40,
        "RERANK_API_KEYS": "unused sha256:" + "0" * 64,
        "RERANK_DEMO": "off",
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "run.sh"), "example/offline-model"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[-1] == (
        "run: could not fetch example/offline-model (error above): check the network and that the model hub "
        "is reachable, or try the API offline with ./scripts/run.sh tiny"
    )
    assert any(line.startswith("model_setup fetch: error:") for line in lines[:-1]), done.stderr  # the cause
    assert "entrypoint" not in done.stderr
    assert "vllm_started" not in done.stderr
    assert not (ROOT / "var" / "models" / "offline-model").exists()
