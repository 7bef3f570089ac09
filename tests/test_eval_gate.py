"""The agreement gate end to end: the real command (`python -m gateway eval`) against the session gateway
(real vLLM, the tiny model). The same gateway as reference and candidate passes; a candidate that answers
in Cohere's wire format with the products shuffled (tests/support/shuffler.py, in front of the same
gateway) fails with exit 3 and one line per bound missed; a query log without labels goes through."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.eval.dataset import SMOKE, load
from tests.support.procs import ROOT
from tests.support.shuffler import ShufflingProxy
from tests.support.stack import Gateway, Keys

LIMIT = 8
# The same gateway twice: vLLM may batch a product with different neighbours each time, which can move a
# float32 score in its last bits and swap two products scored alike; these bounds allow a swap, no more.
SAME = ["--min-tau", "0.98", "--min-query-tau", "0.9", "--min-overlap", "0.95", "--max-score-diff", "0.001"]


def gate(
    tmp_path: Path, key_file: Path, data: str, reference: str, candidate: str, *bounds: str
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "gateway",
        "eval",
        data,
        "--endpoint",
        f"reference={reference}",
        "--endpoint",
        f"candidate={candidate}",
        "--api-key-file",
        str(key_file),
        "--reference",
        "reference",
        "--candidate",
        "candidate",
        "--limit",
        str(LIMIT),
        "--out",
        str(tmp_path / "report"),
        "--store",
        str(tmp_path / "store"),
        "--quiet",
        *bounds,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)


def key_file(tmp_path: Path, api_keys: Keys) -> Path:
    path = tmp_path / "key"
    path.write_text(api_keys["shop-a"] + "\n")
    return path


def saved(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "report" / "agreement.json").read_text())
    return result


def fail_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("rerank-eval: FAIL ")]


def test_the_same_gateway_as_reference_and_candidate_passes(
    gateway: Gateway, api_keys: Keys, tmp_path: Path
) -> None:
    done = gate(
        tmp_path, key_file(tmp_path, api_keys), SMOKE, gateway.url, gateway.url, *SAME, "--max-ndcg-drop", "0"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert fail_lines(done) == []
    assert "rerank-eval: PASS candidate within 5 bounds of reference" in done.stderr
    result = saved(tmp_path)
    assert result["passed"] is True
    assert result["measures"]["tau"]["queries"] == LIMIT
    assert result["ndcg@10"]["reference"] == result["ndcg@10"]["candidate"]
    assert result["ndcg@10"]["queries"] == LIMIT
    assert "candidate against reference on smoke" in done.stdout
    assert api_keys["shop-a"] not in done.stdout + done.stderr


def test_a_shuffling_candidate_fails_with_the_reason_in_one_line(
    gateway: Gateway, api_keys: Keys, tmp_path: Path
) -> None:
    with ShufflingProxy(gateway.url) as shuffler:
        done = gate(
            tmp_path,
            key_file(tmp_path, api_keys),
            SMOKE,
            gateway.url,
            shuffler.url,
            "--min-tau",
            "0.9",
            "--max-ndcg-drop",
            "1",  # a bound the shuffle cannot miss: no line for it
        )
    assert shuffler.shuffled == LIMIT, "every search went through the proxy and came back shuffled"
    assert done.returncode == 3, done.stdout + done.stderr
    (line,) = fail_lines(done)
    assert line.startswith("rerank-eval: FAIL Kendall tau-b ")
    assert " below --min-tau 0.9 (mean over 8 queries; worst query " in line
    result = saved(tmp_path)
    tau = result["measures"]["tau"]
    assert f"Kendall tau-b {tau['mean']:.4f} below" in line
    assert f'worst query "{tau["worst_query"]}" at {tau["worst"]:.4f})' in line
    assert tau["mean"] < 0.5
    assert result["passed"] is False
    assert result["failures"] == [line.removeprefix("rerank-eval: FAIL ")]
    # The shuffle kept the wire format: the same scores, given to other products.
    assert all(q["shared"] == 20 for q in result["per_query"])
    assert result["measures"]["max_score_diff"]["worst"] > 0


def test_an_unlabelled_query_log_goes_through(gateway: Gateway, api_keys: Keys, tmp_path: Path) -> None:
    """A shop's logged rerank requests: query and plain-text documents, no labels."""
    log = tmp_path / "queries.jsonl"
    rows = [
        {
            "query_id": query.id,
            "query": query.query,
            "documents": [f"{c.document['title']} ({c.document['brand']})" for c in query.candidates],
        }
        for query in load(SMOKE).queries[:LIMIT]
    ]
    log.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    done = gate(tmp_path, key_file(tmp_path, api_keys), str(log), gateway.url, gateway.url, *SAME)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NDCG@10 drop not computed: the searches have no labels (a query log)" in done.stdout
    result = saved(tmp_path)
    assert result["passed"] is True
    assert result["ndcg@10"] is None
    assert result["measures"]["ndcg_drop"] is None
    assert result["measures"]["overlap"]["queries"] == LIMIT
    assert result["settings"]["rank_fields"] is None, "plain-text documents are ranked as text"
