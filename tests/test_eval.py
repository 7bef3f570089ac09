"""rerank-eval end to end: the real command (`python -m gateway eval`) against the session gateway (real vLLM,
the tiny random-weight model) on the committed smoke set. A random model must not beat the given order,
the report must say so in words, fusion must reorder as documented, the tokens the model scored must be
counted, and a second run must be served entirely from the result store, tokens included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.eval.dataset import SMOKE, load
from tests.support.procs import ROOT
from tests.support.stack import SERVED_NAME, Gateway, Keys

LIMIT, TOP_N = 10, 10
PNG = b"\x89PNG\r\n\x1a\n"


def rerank_eval(gateway: Gateway, key_file: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "gateway",
        "eval",
        SMOKE,
        "--endpoint",
        f"ours={gateway.url}",
        "--api-key-file",
        f"ours={key_file}",
        "--limit",
        str(LIMIT),
        "--top-n",
        str(TOP_N),
        "--sweep",
        "ctr=0,1",
        "--out",
        str(out / "report"),
        "--store",
        str(out / "store"),
        "--quiet",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)


def test_the_smoke_set_against_the_real_stack(gateway: Gateway, api_keys: Keys, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(api_keys["shop-a"] + "\n")
    done = rerank_eval(gateway, key_file, tmp_path)
    assert done.returncode == 0, done.stderr
    report = tmp_path / "report"
    results: dict[str, Any] = json.loads((report / "results.json").read_text())
    for plot in ("metrics.png", "wins.png", "sweep.png"):
        assert (report / plot).read_bytes().startswith(PNG), plot
    markdown = (report / "report.md").read_text()
    assert all(f"]({plot})" in markdown for plot in ("metrics.png", "wins.png", "sweep.png"))

    # Random weights: no metric of the model differs significantly from the given order, and it says so.
    ours = [c for c in results["comparisons"] if c["run"] == "ours" and c["reference"] == "baseline"]
    assert {c["metric"] for c in ours} == {"NDCG@5", "NDCG@10", "MRR@10", "Recall@10"}
    assert not any(c["significant"] for c in ours), ours
    assert all(c["p_value"] > 0.05 and c["ci"][0] < c["delta"] < c["ci"][1] for c in ours), ours
    assert "ours shows no significant difference from the baseline on NDCG@10" in markdown
    assert "ours" in done.stdout
    assert "NDCG@10" in done.stdout
    assert len(results["dataset"]["measured"]) == LIMIT

    # Fusion: weight 0 is the model's order; weight 1 is ctr's order (ties fall back to the model's score).
    rankings = results["rankings"]
    assert rankings["ours+ctr=0"] == rankings["ours"]
    assert results["metrics"]["ours+ctr=0"] == results["metrics"]["ours"]
    assert rankings["ours"] != rankings["baseline"], "the model reorders"
    for query in load(SMOKE).queries[:LIMIT]:
        ctr = {c.id: c.document["ctr"] for c in query.candidates}
        shown = [ctr[product] for product in rankings["ours+ctr=1"][query.id]]
        assert len(shown) == TOP_N
        assert shown == sorted(shown, reverse=True), query.id
        assert min(shown) >= max(v for p, v in ctr.items() if p not in rankings["ours+ctr=1"][query.id])
    assert [p["weights"] for p in results["sweep"]] == [{"ctr": 0.0}, {"ctr": 1.0}]

    # Every answer said how many tokens the one model scored; the sweep's runs are not counted again.
    tokens = results["gpu_work"]["runs"]
    assert list(tokens) == ["ours"]
    assert (tokens["ours"]["answers"], tokens["ours"]["reported"]) == (LIMIT, LIMIT)
    assert list(tokens["ours"]["by_model"]) == [SERVED_NAME]
    assert tokens["ours"]["by_model"][SERVED_NAME]["tokens"] == tokens["ours"]["input_tokens"] > 0
    assert "## Quality against GPU work" in markdown

    # Resumable: the same command again asks nobody and measures the same.
    again = rerank_eval(gateway, key_file, tmp_path)
    assert again.returncode == 0, again.stderr
    second: dict[str, Any] = json.loads((report / "results.json").read_text())
    assert [(e["requests_sent"], e["answers_from_store"]) for e in second["endpoints"]] == [(0, LIMIT)] * 3
    assert [(e["requests_sent"], e["answers_from_store"]) for e in results["endpoints"]] == [(LIMIT, 0)] * 3
    assert second["metrics"] == results["metrics"]
    assert second["gpu_work"] == results["gpu_work"], "the store keeps each answer's tokens"
