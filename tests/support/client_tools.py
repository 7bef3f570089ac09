"""Clients other than the Cohere SDK in our venv, run as a shop would run them: the framework rerankers in
their own venv (scripts/install-frameworks.sh) and the Cohere TypeScript SDK under the system's node
(scripts/install-node-clients.sh). Each runs as a subprocess against a gateway, given its base URL and key
in RERANK_BASE_URL and RERANK_KEY. A client that is not installed fails the test: scripts/test.sh installs
them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import ROOT

TOOLS = Path(os.environ.get("RERANK_TOOLS", ROOT / "var" / "tools"))
FRAMEWORKS_PYTHON = TOOLS / "frameworks" / "bin" / "python"
NODE_MODULES = TOOLS / "node" / "node_modules"
CLIENT_TIMEOUT_S = 180


def client_env(base_url: str, key: str) -> dict[str, str]:
    return {
        **os.environ,
        "RERANK_BASE_URL": base_url,
        "RERANK_KEY": key,
        # Nothing leaves the machine: Haystack reports usage to PostHog unless told not to; no tracing.
        "HAYSTACK_TELEMETRY_ENABLED": "False",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
    }


def run(command: list[str], env: dict[str, str], *, stdin: str = "", cwd: Path = ROOT) -> str:
    """The command's stdout; a failing command fails the test with its output."""
    done = subprocess.run(
        command,
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{command[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def frameworks_python() -> str:
    if not FRAMEWORKS_PYTHON.is_file():
        pytest.fail(f"no framework venv at {FRAMEWORKS_PYTHON}: run scripts/install-frameworks.sh")
    return str(FRAMEWORKS_PYTHON)


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: scripts/system-deps.sh installs Debian's nodejs")
    if not (NODE_MODULES / "cohere-ai").is_dir():
        pytest.fail(f"no cohere-ai under {NODE_MODULES}: run scripts/install-node-clients.sh")
    return found


def node_project(directory: Path) -> Path:
    """A directory whose scripts find packages in the installed node_modules, as in a shop's project."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "node_modules"
    if not link.exists():
        link.symlink_to(NODE_MODULES, target_is_directory=True)
    return directory
