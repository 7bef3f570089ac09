"""The chart lints clean and every rendered object is valid Kubernetes for the oldest and newest versions we
support (kubernetes-validate's strict schemas, which reject unknown fields)."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from types import ModuleType

import pytest

from tests.helm.chart import CHART, CI_VALUES, VARIANTS, Manifests, helm, values_args

pytestmark = pytest.mark.unit

KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")
# Custom resources whose CRDs kubernetes-validate does not ship. Each is asserted field by field in
# test_render.py instead (ServiceMonitor: test_service_monitor_scrapes_metrics_on_the_service).
NOT_IN_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    """The validator library; missing means the test set-up did not run: fail, never skip."""
    try:
        module = importlib.import_module(
            "kubernetes_validate"
        )  # untyped; a dev dependency of these tests only
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate (see README)")
    return module


@pytest.mark.parametrize("values_file", [None, *sorted(p.name for p in CI_VALUES.glob("*.yaml"))])
def test_helm_lint_strict(values_file: str | None) -> None:
    """`helm lint --strict` passes on the defaults and every CI values file (full.yaml has every feature)."""
    result = helm(
        "lint", "--strict", str(CHART), *values_args([values_file] if values_file else []), check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_every_ci_values_file_is_a_variant() -> None:
    """So that adding a values file under helm/ci also adds it to the render and validation tests."""
    covered = {name for files in VARIANTS.values() for name in files}
    assert covered == {p.name for p in CI_VALUES.glob("*.yaml")}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", VARIANTS)
def test_every_manifest_validates_strictly(
    kubernetes_validate: ModuleType, variant: Callable[[str], Manifests], name: str, version: str
) -> None:
    manifests = variant(name)
    checked = 0
    for doc in manifests.docs:
        if (doc["apiVersion"], doc["kind"]) in NOT_IN_SCHEMAS:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {where} is invalid for Kubernetes {version}: {exc.message} at {exc.path}")
        checked += 1
    assert checked >= 7, (
        "expected at least Deployment, Service, ServiceAccount, Secrets, PDB, NetworkPolicies"
    )


def test_validator_skips_only_what_it_has_no_schema_for(kubernetes_validate: ModuleType) -> None:
    """The skip list stays honest: kinds in it really are unknown to the validator, and nothing else is."""
    for api_version, kind in NOT_IN_SCHEMAS:
        doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_strict_validation_rejects_unknown_fields(
    kubernetes_validate: ModuleType, variant: Callable[[str], Manifests]
) -> None:
    """Strict mode is really on: a misspelt field in the rendered Deployment would be caught."""
    doc = copy.deepcopy(variant("default").deployment)
    doc["spec"]["template"]["spec"]["containers"][0]["readonlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


def test_kube_version_floor_is_enforced() -> None:
    """Chart.yaml's kubeVersion stops installs on clusters older than the oldest version validated here."""
    result = helm("template", "rr", str(CHART), "--kube-version", "1.28.0", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr
