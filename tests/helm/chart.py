"""Render the chart with the pinned Helm and look at what comes out: the helpers every chart test shares."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
CI_VALUES = CHART / "ci"
TOOLS = Path(os.environ.get("RERANK_TOOLS", ROOT / "var" / "tools"))
HELM = TOOLS / "bin" / "helm"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"
RELEASE = "rr"
NAMESPACE = "search"
FULLNAME = f"{RELEASE}-reranker"
METRICS_SERVICE = f"{FULLNAME}-metrics"
DASHBOARD = CHART / "dashboards" / "reranker.json"
HELM_TIMEOUT_S = 60

# Variants the issue names, each a list of values files under helm/ci (defaults: none).
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "gpu": ("gpu.yaml",),
    "cpu": ("cpu.yaml",),
    "ingress-hpa-redis": ("ingress-hpa-redis.yaml",),
    "digest": ("digest.yaml",),
    "full": ("full.yaml",),
    "metrics-off": ("metrics-off.yaml",),
    "fleet": ("fleet.yaml",),
}

Doc = dict[str, Any]


class RenderError(Exception):
    """``helm template`` refused the values; the message is Helm's stderr."""


@dataclass(frozen=True)
class Manifests:
    """One render: the documents in order, with lookups by kind and name."""

    docs: tuple[Doc, ...]

    def of_kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Doc:
        found = [doc for doc in self.of_kind(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.of_kind(kind))

    @property
    def deployment(self) -> Doc:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> Doc:
        spec: Doc = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Doc:
        containers: list[Doc] = self.pod_spec["containers"]
        assert len(containers) == 1, "one container per pod: the image supervises vLLM and the gateway"
        return containers[0]

    @property
    def env(self) -> dict[str, Doc]:
        """Container env by name (each entry as rendered: value or valueFrom)."""
        entries: list[Doc] = self.container.get("env", [])
        return {entry["name"]: entry for entry in entries}

    def env_value(self, name: str) -> str | None:
        entry = self.env.get(name)
        return None if entry is None else entry.get("value")

    @property
    def test_pod(self) -> Doc:
        pods = [doc for doc in self.of_kind("Pod") if _hook(doc) == "test"]
        assert len(pods) == 1, "one `helm test` pod"
        return pods[0]

    def pod_specs(self) -> Iterator[tuple[str, Doc]]:
        """Every pod spec the chart renders: the server's template and the test pod."""
        yield "Deployment", self.pod_spec
        yield "test Pod", self.test_pod["spec"]


def _hook(doc: Doc) -> str | None:
    annotations: Mapping[str, str] = doc["metadata"].get("annotations") or {}
    return annotations.get("helm.sh/hook")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned Helm with no cluster and no user configuration in reach."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(TOOLS / "helm-home"),
        "HELM_CACHE_HOME": str(TOOLS / "helm-home" / "cache"),
        "HELM_CONFIG_HOME": str(TOOLS / "helm-home" / "config"),
        "HELM_DATA_HOME": str(TOOLS / "helm-home" / "data"),
        "KUBECONFIG": os.devnull,
    }
    result = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, env=env, timeout=HELM_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RenderError(result.stderr.strip() or result.stdout.strip())
    return result


def values_args(
    files: Sequence[str] = (), sets: Mapping[str, str] | None = None, set_json: Sequence[str] = ()
) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["-f", str(CI_VALUES / name)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    for item in set_json:
        args += ["--set-json", item]
    return args


def render(
    files: Sequence[str] = (),
    sets: Mapping[str, str] | None = None,
    set_json: Sequence[str] = (),
    *,
    chart: Path = CHART,
    show_only: str | None = None,
) -> Manifests:
    """``helm template`` with the given values; raises RenderError with Helm's message when it refuses."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, *values_args(files, sets, set_json)]
    if show_only:
        args += ["--show-only", show_only]
    output = helm(*args).stdout
    return Manifests(tuple(doc for doc in yaml.safe_load_all(output) if doc))


def render_error(
    sets: Mapping[str, str] | None = None, set_json: Sequence[str] = (), files: Sequence[str] = ()
) -> str:
    """Helm's message for values the chart must refuse (fails the test if it renders)."""
    try:
        render(files, sets, set_json)
    except RenderError as exc:
        return str(exc)
    raise AssertionError(f"helm template accepted {dict(sets or {})} {list(set_json)} {list(files)}")


def pinned_sha256(name: str) -> str:
    """A checksum constant pinned in scripts/install-helm.sh."""
    match = re.search(rf'^{name}="([0-9a-f]{{64}})"$', INSTALL_HELM.read_text(), re.MULTILINE)
    assert match, f"{name} not pinned in {INSTALL_HELM}"
    return match.group(1)


def render_notes(files: Sequence[str] = (), sets: Mapping[str, str] | None = None, *, workdir: Path) -> str:
    """NOTES.txt as `helm install` would print it. `helm template` skips NOTES, so a copy of the chart gets a
    template that renders the same file through `tpl`, with the same values and named templates."""
    copy = workdir / "chart"
    shutil.copytree(CHART, copy)
    (copy / "notes-under-test.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "notes-under-test.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
    )
    manifests = render(files, sets, chart=copy, show_only="templates/notes-under-test.yaml")
    notes: str = manifests.docs[0]["notes"]
    return notes
