"""The name a snapshot is served under when ``RERANK_SERVED_MODEL_NAME`` is unset, and the size check.

One rule, read by vLLM's options (``--served-model-name``), the gateway's settings (``/v1/models``, the
``model`` field) and the entrypoint: the lower-cased last part of the repository the snapshot's manifest
names (``Qwen/Qwen3-Reranker-0.6B`` -> ``qwen3-reranker-0.6b``; a git URL's last path segment without
``.git``), so a model answers under its own name whichever source it came from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from model_setup.fetch import SIZES, FetchError, read_manifest

# Manifests whose repository is no repository: the tiny test model records "tiny".
_NAMED: Final = {"tiny": "qwen3-reranker-tiny"}
_UNSAFE: Final = re.compile(r"[^a-z0-9._-]+")


def model_name(repo: str) -> str:
    """The served name of a size, hub name or git URL (what a snapshot of it is served as)."""
    repo = SIZES.get(repo.lower(), repo)
    if repo in _NAMED:
        return _NAMED[repo]
    last = repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return _UNSAFE.sub("-", last.lower()).strip("-.")


def served_name(model_dir: Path) -> str:
    """The name of the model in ``model_dir``, from its manifest. Raises FetchError."""
    repo = read_manifest(model_dir).get("repo")
    name = model_name(repo) if isinstance(repo, str) else ""
    if not name:
        raise FetchError(
            f"the manifest in {model_dir} names no repository to serve the model as: set "
            "RERANK_SERVED_MODEL_NAME"
        )
    return name


def check_size(model_dir: Path, size: str) -> None:
    """The snapshot is the model of ``size`` (from any source or mirror that keeps its name)."""
    expected = SIZES.get(size.lower())
    if expected is None:
        raise FetchError(f"the model size must be one of {', '.join(SIZES)}, not {size!r}")
    repo = read_manifest(model_dir).get("repo")
    if not isinstance(repo, str) or model_name(repo) != model_name(expected):
        raise FetchError(
            f"{model_dir} holds {repo or 'a model its manifest does not name'}, not the {size.lower()} model "
            f"({expected}) the size declares: "
            "declare the size of the model the image holds (the chart's model.size), or none"
        )
