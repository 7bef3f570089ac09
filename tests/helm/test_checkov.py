"""checkov on the chart: no failed check, and every accepted finding carries a written reason in the chart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import CHART, CI_VALUES, HELM, TOOLS, VARIANTS

# Not in the `unit` tier although it needs no server: checkov's scans take about 20 s of CPU, and the tier
# is kept under a minute.

CONFIG = CHART / ".checkov.yaml"
CHECKOV_TIMEOUT_S = 300
# Where the test set-up puts checkov: its own virtualenv under the tools directory (checkov pins old versions
# of packaging and networkx that must not leak into the project's environment), else this interpreter's venv.
CHECKOV_CANDIDATES = (TOOLS / "checkov" / "bin" / "checkov", Path(sys.executable).parent / "checkov")


@dataclass(frozen=True)
class Scan:
    """One checkov run over the chart rendered with one values file."""

    summary: dict[str, Any]
    passed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]

    @property
    def resources(self) -> set[str]:
        return {check["resource"] for check in self.passed + self.failed + self.skipped}


def _checkov() -> Path:
    for candidate in CHECKOV_CANDIDATES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "checkov not found at "
        + " or ".join(str(c) for c in CHECKOV_CANDIDATES)
        + ": the test set-up installs "
        "it (python -m venv var/tools/checkov && var/tools/checkov/bin/pip install checkov==3.3.30)",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def scans() -> dict[str, Scan]:
    """checkov --framework helm over the defaults and each CI values file, run once, concurrently."""
    checkov = _checkov()
    env = {
        **os.environ,
        "PATH": f"{HELM.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LOG_LEVEL": "WARNING",
    }
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, files in VARIANTS.items():
        args = [str(checkov), "--config-file", str(CONFIG), "--directory", str(CHART), "--framework", "helm"]
        args += ["--skip-download", "--output", "json"]
        for file in files:
            args += ["--var-file", str(CI_VALUES / file)]
        procs[name] = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    results: dict[str, Scan] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=CHECKOV_TIMEOUT_S)
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError:
            pytest.fail(f"checkov ({name}) printed no JSON report (exit {proc.returncode}): {stderr[-2000:]}")
        assert isinstance(report, dict), f"checkov ({name}) scanned nothing or more than the helm framework"
        found = report["results"]
        results[name] = Scan(
            report["summary"], found["passed_checks"], found["failed_checks"], found["skipped_checks"]
        )
    return results


@pytest.mark.parametrize("name", VARIANTS)
def test_checkov_finds_no_failed_check(scans: dict[str, Scan], name: str) -> None:
    scan = scans[name]
    failures = [
        f"{c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path']})" for c in scan.failed
    ]
    assert not failures, "checkov failed checks:\n" + "\n".join(failures)
    assert scan.summary["parsing_errors"] == 0


@pytest.mark.parametrize("name", VARIANTS)
def test_checkov_really_scanned_the_rendered_chart(scans: dict[str, Scan], name: str) -> None:
    """checkov silently scans nothing when `helm template` fails; make sure the workloads were seen."""
    scan = scans[name]
    kinds = {resource.split(".", 1)[0] for resource in scan.resources}
    assert {"Deployment", "Pod", "ServiceAccount"} <= kinds, kinds
    assert scan.summary["passed"] > 100


@pytest.mark.parametrize("name", VARIANTS)
def test_every_skipped_check_is_justified_in_the_chart(scans: dict[str, Scan], name: str) -> None:
    """Skips come from checkov.io/skipN annotations; each carries a reason of a few words at least."""
    for check in scans[name].skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason.split()) >= 6, (
            f"{check['check_id']} on {check['resource']} skipped without a reason"
        )


def test_chart_wide_skips_are_justified_in_the_config() -> None:
    """Each check .checkov.yaml skips for the whole chart has a comment naming it and saying why."""
    text = CONFIG.read_text()
    config = yaml.safe_load(text)
    assert set(config) == {"skip-check"}, "the config only skips checks; scan options belong to the command"
    for check_id in config["skip-check"]:
        comment = re.search(rf"^\s*#\s*{check_id}\b(.+(?:\n\s*#.*)*)", text, re.MULTILINE)
        assert comment, f"{check_id} is skipped in {CONFIG.name} without a comment saying why"
        assert len(comment.group(1).split()) >= 10
