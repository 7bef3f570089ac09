"""A model snapshot laid out as a git-lfs repository, shaped like a hub's: a local hub for offline builds.

``python -m model_setup publish SNAPSHOT REPO`` commits the snapshot's files (weights and ``tokenizer.json``
as LFS objects, as the hubs store them) and prints the commit, so ``model_setup fetch --repo file://REPO
--revision <sha>`` (and the image's model stage) fetch it exactly as they fetch from a hub. The commit is
deterministic: the same files give the same SHA, so an image rebuild keeps its cached model layer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from model_setup.fetch import MANIFEST_NAME, FetchError

LFS_PATTERNS = ("*.safetensors", "tokenizer.json")
# A fixed identity and date: the commit SHA depends on the files alone.
_COMMIT_ENV: Mapping[str, str] = {
    "GIT_AUTHOR_NAME": "model_setup",
    "GIT_AUTHOR_EMAIL": "model-setup@localhost",
    "GIT_COMMITTER_NAME": "model_setup",
    "GIT_COMMITTER_EMAIL": "model-setup@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


def _git(*args: str, cwd: Path) -> str:
    result = subprocess.run(  # noqa: S603  # fixed program, our arguments
        ["git", *args],  # noqa: S607  # git from PATH, as an operator runs it
        cwd=cwd,
        env={**os.environ, **_COMMIT_ENV, "GIT_CONFIG_NOSYSTEM": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(f"git {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout.strip()


def publish(snapshot: Path, repo: Path, *, branch: str = "main") -> str:
    """Commit ``snapshot``'s files into a fresh repository at ``repo``; returns the commit SHA."""
    files = sorted(p for p in snapshot.iterdir() if p.is_file() and p.name != MANIFEST_NAME)
    if not any(p.name == "config.json" for p in files):
        raise FetchError(f"{snapshot} has no config.json: not a model snapshot")
    if repo.exists():
        shutil.rmtree(repo)  # rebuilt from the snapshot every time; the SHA stays the same
    repo.mkdir(parents=True)
    _git("init", "--quiet", f"--initial-branch={branch}", cwd=repo)
    _git("lfs", "install", "--local", cwd=repo)
    (repo / ".gitattributes").write_text(
        "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
    )
    for path in files:
        shutil.copyfile(path, repo / path.name)
    _git("add", "--all", cwd=repo)
    _git("commit", "--quiet", "--no-gpg-sign", "-m", f"snapshot of {snapshot.name}", cwd=repo)
    return _git("rev-parse", "HEAD", cwd=repo)
