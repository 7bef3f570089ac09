"""Chart-test fixtures: the pinned Helm (the test set-up installs it, never these tests) and each variant
rendered once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache

import pytest

from tests.helm.chart import HELM, INSTALL_HELM, VARIANTS, Manifests, pinned_sha256, render


@pytest.fixture(scope="session", autouse=True)
def pinned_helm() -> None:
    """Helm missing or not the pinned build means the set-up did not run: fail every chart test, not skip."""
    if not HELM.is_file():
        pytest.fail(
            f"helm not found at {HELM}: run {INSTALL_HELM.relative_to(INSTALL_HELM.parents[1])} "
            "(scripts/test.sh does; RERANK_TOOLS moves the tools directory)",
            pytrace=False,
        )
    digest = hashlib.sha256(HELM.read_bytes()).hexdigest()
    if digest != pinned_sha256("HELM_SHA256"):
        pytest.fail(f"{HELM} is not the Helm build pinned in {INSTALL_HELM.name}: re-run it", pytrace=False)


@pytest.fixture(scope="session")
def variant() -> Callable[[str], Manifests]:
    """Rendered manifests of a named variant (helm/ci values files), each rendered once per session."""

    @cache
    def get(name: str) -> Manifests:
        return render(VARIANTS[name])

    return get
