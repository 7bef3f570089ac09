"""The agreement gate's parts without a server: tau-b with ties, top-k overlap's edges, score differences
and the NDCG@10 drop on examples worked by hand, the verdict's one-line reasons, query logs without
labels, and the command end to end on answers already in the result store (no endpoint is asked)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gateway.eval import gate, metrics
from gateway.eval.__main__ import main
from gateway.eval.agreement import (
    Agreement,
    QueryAgreement,
    compare,
    compare_query,
    kendall_tau_b,
    top_k_overlap,
)
from gateway.eval.bounds import NDCG_DROP, TAU, THRESHOLDS, Bound, bounds_from
from gateway.eval.client import Endpoint, Ranked
from gateway.eval.dataset import Candidate, DatasetError, LabelledQuery, load
from gateway.eval.store import ResultStore, request_key
from tests.support.jsonl import write_lines
from tests.support.shuffler import shuffle_results

pytestmark = pytest.mark.unit

# --- Kendall's tau-b ------------------------------------------------------------------------------------


def test_tau_b_with_ties_worked_by_hand() -> None:
    """Products a b c d; the reference scores 0.9 0.8 0.8 0.1, the candidate 0.7 0.7 0.5 0.2.

    Pairs: ab tied in the candidate only; ac, ad, bd, cd concordant; bc tied in the reference only. So 4
    concordant, 0 discordant, one tie on each side of 6 pairs: tau-b = 4 / sqrt((6 - 1)(6 - 1)) = 0.8.
    (tau-a, which ignores ties, would say 4 / 6 = 0.667: ties counted as disagreement.)
    """
    assert kendall_tau_b([0.9, 0.8, 0.8, 0.1], [0.7, 0.7, 0.5, 0.2]) == pytest.approx(0.8)


def test_tau_b_one_swap_shared_ties_and_reversal() -> None:
    """4 3 2 1 against 4 2 3 1: only bc is discordant, (5 - 1) / 6. 1 1 0 against 2 2 0: the tie is shared,
    the other two pairs concordant, 2 / sqrt((3 - 1)(3 - 1)) = 1. Reversed: -1."""
    assert kendall_tau_b([4, 3, 2, 1], [4, 2, 3, 1]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 1, 0], [2, 2, 0]) == pytest.approx(1.0)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_tau_b_where_its_denominator_is_zero() -> None:
    """All tied on both sides agree; an endpoint answering all zeros agrees with nothing; one product has
    no pair to order."""
    assert kendall_tau_b([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]) == 1.0
    assert kendall_tau_b([0.9, 0.5, 0.1], [0.0, 0.0, 0.0]) == 0.0
    assert kendall_tau_b([0.0, 0.0], [0.9, 0.1]) == 0.0
    assert kendall_tau_b([0.7], [0.1]) is None
    assert kendall_tau_b([], []) is None
    with pytest.raises(ValueError, match="same products"):
        kendall_tau_b([1.0, 2.0], [1.0])


# --- top-k overlap --------------------------------------------------------------------------------------


def test_top_k_overlap_edges() -> None:
    assert top_k_overlap([2, 0, 1, 3], [2, 1, 0, 3], 2) == 0.5, "{2, 0} against {2, 1}"
    assert top_k_overlap([2, 0, 1, 3], [0, 2, 3, 1], 2) == 1.0, "order inside the top k does not count"
    assert top_k_overlap([0, 1, 2, 3], [2, 3, 0, 1], 2) == 0.0
    assert top_k_overlap([0, 1, 2], [2, 1, 0], 10) == 1.0, "fewer products than k: all of them, one set"
    assert top_k_overlap([0, 1, 2, 3, 4], [4, 3], 3) == 0.0, "a --top-n 2 answer: k shrinks to 2, {0, 1}"
    assert top_k_overlap([0, 1, 2, 3, 4], [1, 0], 3) == 1.0
    assert top_k_overlap([5, 6, 7], [7, 6, 5], 1) == 0.0
    with pytest.raises(ValueError, match="at least one product"):
        top_k_overlap([], [1], 3)


# --- one query, many queries ----------------------------------------------------------------------------


def test_a_query_is_compared_product_by_product() -> None:
    """Scores by product (position in the search): reference 0.6 0.5 0.9 0.1, candidate 0.5 0.55 0.8 0.3.
    Differences 0.1 0.05 0.1 0.2: largest 0.2, mean 0.1125. Pairs: 01 discordant, the other five
    concordant: tau-b (5 - 1) / 6. Top 2: {2, 0} against {2, 1}."""
    reference = Ranked((2, 0, 1, 3), (0.9, 0.6, 0.5, 0.1))
    candidate = Ranked((2, 1, 0, 3), (0.8, 0.55, 0.5, 0.3))
    agreed = compare_query("q", reference, candidate, k=2)
    assert agreed.shared == 4
    assert agreed.tau == pytest.approx(4 / 6)
    assert agreed.overlap == 0.5
    assert agreed.max_score_diff == pytest.approx(0.2)
    assert agreed.mean_score_diff == pytest.approx(0.1125)
    assert agreed.ndcg_drop is None
    same = compare_query("q", reference, reference, k=10)
    assert (same.tau, same.overlap, same.max_score_diff, same.mean_score_diff) == (1.0, 1.0, 0.0, 0.0)


def test_top_n_answers_compare_the_products_both_returned() -> None:
    one_shared = compare_query("q", Ranked((2, 0), (0.9, 0.6)), Ranked((2, 1), (0.8, 0.55)), k=10)
    assert (one_shared.shared, one_shared.tau, one_shared.overlap) == (1, None, 0.5)
    assert one_shared.max_score_diff == one_shared.mean_score_diff == pytest.approx(0.1)
    disjoint = compare_query("q", Ranked((0,), (0.9,)), Ranked((1,), (0.9,)), k=10)
    assert (disjoint.shared, disjoint.tau, disjoint.overlap, disjoint.max_score_diff) == (0, None, 0.0, None)


def agreeing(
    query_id: str, tau: float | None, overlap: float, diff: float, drop: float | None
) -> QueryAgreement:
    return QueryAgreement(query_id, 5, tau, overlap, diff, diff / 2, drop)


def agreement_of(*queries: QueryAgreement) -> Agreement:
    return Agreement("ref", "cand", 10, queries, None, 0)


def test_spread_is_the_mean_and_the_worst_of_the_queries_that_define_it() -> None:
    agreed = agreement_of(
        agreeing("a", 0.5, 1.0, 0.0, None),
        agreeing("b", None, 1.0, 0.0, None),
        agreeing("c", -0.2, 1.0, 0.0, None),
        agreeing("d", -0.2, 1.0, 0.0, None),
    )
    spread = agreed.spread(TAU)
    assert spread is not None
    assert spread.mean == pytest.approx(0.1 / 3)
    assert (spread.worst, spread.worst_query, spread.queries) == (-0.2, "c", 3), "the first of equals"
    assert agreed.spread(NDCG_DROP) is None


def labelled(query_id: str, labels: dict[str, int]) -> LabelledQuery:
    return LabelledQuery(
        query_id, f"query {query_id}", tuple(Candidate(c, g, {"text": c}) for c, g in labels.items())
    )


def dcg(gains: list[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def test_ndcg_drop_with_labels_worked_by_hand() -> None:
    """The reference keeps the given order, the candidate reorders (tests/test_eval_units.py works the
    same NDCG@10 values): q1 0.9212 -> 0.9225, q2 0.5317 -> 1. Drops (reference - candidate) -0.0013 and
    -0.4683: the candidate is better. q3 has no label of 2 or more: no NDCG, no drop."""
    q1 = labelled("q1", {"a": 3, "b": 0, "c": 2, "d": 0, "e": 1})
    q2 = labelled("q2", {"f": 0, "g": 0, "h": 3, "i": 1})
    q3 = labelled("q3", {"z": 1, "y": 0})
    given = {q.id: Ranked(tuple(range(len(q.candidates))), (0.5,) * len(q.candidates)) for q in (q1, q2, q3)}
    model = {
        "q1": Ranked((2, 0, 4, 1, 3), (0.9, 0.8, 0.7, 0.2, 0.1)),
        "q2": Ranked((2, 3, 0, 1), (0.9, 0.5, 0.2, 0.1)),
        "q3": Ranked((1, 0), (0.6, 0.4)),
    }
    agreed = compare([q1, q2, q3], ("given", given), ("model", model), k=10, relevant=2)
    q1_ref, q1_cand = dcg([3, 0, 2, 0, 1]) / dcg([3, 2, 1]), dcg([2, 3, 1, 0, 0]) / dcg([3, 2, 1])
    q2_ref = dcg([0, 0, 3, 1]) / dcg([3, 1])
    drops = {q.query_id: q.ndcg_drop for q in agreed.per_query}
    assert drops["q1"] == pytest.approx(q1_ref - q1_cand)
    assert drops["q1"] == pytest.approx(0.9212 - 0.9225, abs=1e-4)
    assert drops["q2"] == pytest.approx(q2_ref - 1.0)
    assert drops["q3"] is None
    assert agreed.ndcg == pytest.approx(((q1_ref + q2_ref) / 2, (q1_cand + 1.0) / 2))
    assert agreed.ndcg_queries == 2
    spread = agreed.spread(NDCG_DROP)
    assert spread is not None
    assert (spread.worst_query, spread.queries) == ("q1", 2), "the smallest gain is the worst drop"
    # The given order's scores are all tied: tau-b says that agrees with nothing.
    assert [q.tau for q in agreed.per_query] == [0.0, 0.0, 0.0]


def test_ndcg_drop_is_the_reports_headline() -> None:
    assert NDCG_DROP.label == f"{metrics.HEADLINE} drop"


# --- bounds and the verdict -----------------------------------------------------------------------------


def bound(flag: str, limit: float) -> Bound:
    return Bound(next(t for t in THRESHOLDS if t.flag == flag), limit)


def test_one_line_per_failed_bound_naming_value_bound_and_worst_query() -> None:
    agreed = agreement_of(agreeing("qa", 0.9, 1.0, 0.01, 0.0), agreeing("qb", 0.2, 0.5, 0.30, 0.1))
    bounds = [
        bound("--min-tau", 0.8),  # mean 0.55: fails
        bound("--min-query-tau", 0.1),  # worst 0.2: holds
        bound("--max-score-diff", 0.05),  # worst 0.30: fails
        bound("--min-overlap", 0.5),  # mean 0.75: holds
        bound("--max-ndcg-drop", 0.01),  # mean 0.05: fails
    ]
    failures = gate.check(agreed, bounds)
    assert [f.line for f in failures] == [
        'Kendall tau-b 0.5500 below --min-tau 0.8 (mean over 2 queries; worst query "qb" at 0.2000)',
        'largest |score diff| 0.3000 above --max-score-diff 0.05 (worst query "qb" of 2)',
        'NDCG@10 drop 0.0500 above --max-ndcg-drop 0.01 (mean over 2 queries; worst query "qb" at 0.1000)',
    ]
    assert [f.bound for f in failures] == [bounds[0], bounds[2], bounds[4]]
    assert gate.check(agreed, [bound("--min-query-tau", 0.2), bound("--max-mean-score-diff", 0.15)]) == []
    # A query id cannot break the line: it is quoted as JSON.
    odd = agreement_of(agreeing("two\nlines", 0.0, 1.0, 0.0, None))
    (line,) = [f.line for f in gate.check(odd, [bound("--min-query-tau", 0.5)])]
    assert "\n" not in line
    assert line.endswith('(worst query "two\\nlines" of 1)')


def test_a_bound_that_cannot_be_measured_fails() -> None:
    agreed = agreement_of(agreeing("q", None, 1.0, 0.0, None))
    assert [
        f.line for f in gate.check(agreed, [bound("--max-ndcg-drop", 0.01), bound("--min-tau", 0.5)])
    ] == [
        "NDCG@10 drop not measured on any query, so --max-ndcg-drop 0.01 cannot hold",
        "Kendall tau-b not measured on any query, so --min-tau 0.5 cannot hold",
    ]


def test_bounds_from_the_command_line() -> None:
    chosen = bounds_from({"min_tau": 0.9, "max_score_diff": 0.05, "min_overlap": None})
    assert [(b.threshold.flag, b.limit, b.describe()) for b in chosen] == [
        ("--min-tau", 0.9, "mean ≥ 0.9"),
        ("--max-score-diff", 0.05, "worst ≤ 0.05"),
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_tau": 1.5}, "--min-tau 1.5: Kendall tau-b lies from -1 to 1"),
        ({"min_query_overlap": -0.1}, "--min-query-overlap -0.1: top-k overlap lies from 0 to 1"),
        ({"max_score_diff": -1.0}, "--max-score-diff -1: largest |score diff| lies from 0 to inf"),
        ({"max_mean_score_diff": math.nan}, "--max-mean-score-diff nan: mean |score diff| lies from 0"),
    ],
)
def test_a_bound_outside_its_measures_range_is_refused(values: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        bounds_from(values)


def test_the_table_marks_each_bound_and_says_what_was_not_computed() -> None:
    agreed = agreement_of(agreeing("qa", 0.9, 1.0, 0.01, None), agreeing("q[b]", 0.2, 0.5, 0.30, None))
    bounds = [bound("--min-tau", 0.8), bound("--min-overlap", 0.5)]
    console = Console(record=True, width=200)
    gate.print_table(agreed, bounds, gate.check(agreed, bounds), "log", console)
    text = console.export_text()
    rows = {line.strip().split("  ")[0]: line for line in text.splitlines() if line.strip()}
    assert "FAIL" in rows["Kendall tau-b"]
    assert "mean ≥ 0.8" in rows["Kendall tau-b"]
    assert "q[b]" in rows["Kendall tau-b"], "query ids are text, not markup"
    assert rows["top-k overlap"].rstrip().endswith("pass")
    assert "not computed: no labels" in rows["NDCG@10 drop"]
    assert "NDCG@10 drop not computed: the searches have no labels (a query log)" in text


# --- query logs -----------------------------------------------------------------------------------------


def test_a_query_log_reads_without_labels_and_takes_logged_requests(tmp_path: Path) -> None:
    rows = [
        {
            "query_id": "l1",
            "query": "tent",
            "documents": ["2-person tent", {"text": "Mug", "brand": "Stanley"}],
        },
        {"query": "mug", "candidates": [{"id": "m", "text": "Enamel mug"}], "top_n": 3},
    ]
    data = load(str(write_lines(tmp_path / "log.jsonl", rows)))
    assert not data.labelled
    assert data.max_label == 0
    assert [[(c.id, c.label, c.document) for c in q.candidates] for q in data.queries] == [
        [("0", None, {"text": "2-person tent"}), ("1", None, {"text": "Mug", "brand": "Stanley"})],
        [("m", None, {"text": "Enamel mug"})],
    ]
    assert data.queries[0].labels() == {}
    assert load("smoke").labelled


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"query": "q", "candidates": [{"label": 1, "text": "a"}, {"text": "b"}]}],
            "line 1: candidates[1] has no label unlike the products before it: label every candidate, or",
        ),
        (
            [{"query": "q", "documents": ["a"]}, {"query": "r", "candidates": [{"label": 0, "text": "b"}]}],
            "line 2: candidates[0] has a label unlike the products before it",
        ),
        (
            [{"query": "q", "documents": ["a"], "candidates": ["b"]}],
            "give 'candidates' or 'documents', not both",
        ),
        (
            [{"query": "q", "documents": [3]}],
            "documents[0] must be an object with the product's fields, or a string",
        ),
        ([{"query": "q", "documents": []}], "'documents' must be a non-empty list"),
    ],
)
def test_query_log_errors_say_where(tmp_path: Path, rows: list[Any], message: str) -> None:
    with pytest.raises(DatasetError, match=None) as raised:
        load(str(write_lines(tmp_path / "log.jsonl", rows)))
    assert message in str(raised.value)


def test_agreement_on_a_query_log_has_no_ndcg(tmp_path: Path) -> None:
    data = load(str(write_lines(tmp_path / "log.jsonl", [{"query": "q", "documents": ["a", "b", "c"]}])))
    answers = {"q1": Ranked((1, 0, 2), (0.9, 0.5, 0.1))}
    agreed = compare(data.queries, ("ref", answers), ("cand", answers), k=10, relevant=1)
    assert (agreed.ndcg, agreed.ndcg_queries) == (None, 0)
    assert agreed.per_query == (QueryAgreement("q1", 3, 1.0, 1.0, 0.0, 0.0, None),)


# --- the command ----------------------------------------------------------------------------------------

LOG = [
    {"query_id": f"s{n}", "query": f"search {n}", "documents": ["alpha", "beta", "gamma"]} for n in range(3)
]
IN_ORDER = Ranked((0, 1, 2), (0.9, 0.5, 0.1))
SHUFFLED = Ranked((2, 1, 0), (0.9, 0.5, 0.1))  # same scores, the products swapped: a broken candidate


def stored(tmp_path: Path, answers: dict[str, Ranked]) -> tuple[Path, Path]:
    """A query log, and a result store already holding both endpoints' answers: the command asks nobody
    (the .test hosts do not resolve, so a request would fail the run with exit 1)."""
    data, store, key = tmp_path / "log.jsonl", tmp_path / "store", tmp_path / "key"
    write_lines(data, LOG)
    key.write_text("rk_test\n")
    for name, ranked in answers.items():
        keep = ResultStore(store, Endpoint(name, f"http://{name}.test", "rk_test"))
        for query in load(str(data)).queries:
            keep.put(request_key(query, None, None), ranked)
    return data, key


def gate_args(data: Path, key: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        str(data),
        "--endpoint",
        "ref=http://ref.test",
        "--endpoint",
        "cand=http://cand.test",
        "--api-key-file",
        str(key),
        "--reference",
        "ref",
        "--candidate",
        "cand",
        "--retries",
        "0",
        "--store",
        str(tmp_path / "store"),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        *extra,
    ]


def test_the_gate_fails_a_shuffling_candidate_with_one_line_per_bound_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, key = stored(tmp_path, {"ref": IN_ORDER, "cand": SHUFFLED})
    bounds = [
        "--min-tau",
        "0.5",
        "--min-overlap",
        "0.9",
        "--max-score-diff",
        "0.5",
        "--min-query-overlap",
        "0",
    ]
    assert main(gate_args(data, key, tmp_path, "--overlap-at", "2", *bounds)) == gate.FAILED == 3
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("rerank-eval: FAIL ")]
    assert [line.removeprefix("rerank-eval: FAIL ") for line in failed] == [
        'Kendall tau-b -1.0000 below --min-tau 0.5 (mean over 3 queries; worst query "s0" at -1.0000)',
        'top-k overlap 0.5000 below --min-overlap 0.9 (mean over 3 queries; worst query "s0" at 0.5000)',
        'largest |score diff| 0.8000 above --max-score-diff 0.5 (worst query "s0" of 3)',
    ]
    assert "PASS" not in captured.err
    assert "cand against ref on log, 3 queries" in captured.out
    assert "NDCG@10 drop not computed" in captured.out
    assert "rk_test" not in captured.out + captured.err
    saved = json.loads((tmp_path / "out" / "agreement.json").read_text())
    assert saved["passed"] is False
    assert saved["failures"] == [line.removeprefix("rerank-eval: FAIL ") for line in failed]
    assert saved["measures"]["ndcg_drop"] is None
    assert saved["measures"]["tau"] == {"mean": -1.0, "worst": -1.0, "worst_query": "s0", "queries": 3}
    assert [q["overlap"] for q in saved["per_query"]] == [0.5, 0.5, 0.5]
    assert saved["settings"]["command"].startswith("rerank-eval ")


def test_the_gate_passes_identical_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, key = stored(tmp_path, {"ref": IN_ORDER, "cand": IN_ORDER})
    bounds = [
        "--min-tau",
        "1",
        "--min-query-overlap",
        "1",
        "--max-score-diff",
        "0",
        "--max-mean-score-diff",
        "0",
    ]
    assert main(gate_args(data, key, tmp_path, *bounds)) == 0
    err = capsys.readouterr().err
    assert "FAIL" not in err
    assert "rerank-eval: PASS cand within 4 bounds of ref" in err
    assert json.loads((tmp_path / "out" / "agreement.json").read_text())["passed"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--candidate", "cand"], "needs both --reference NAME and --candidate NAME"),
        (["--reference", "ref", "--candidate", "other"], "--candidate other: no such --endpoint"),
        (["--reference", "ref", "--candidate", "ref"], "name the same endpoint"),
        (["--reference", "ref", "--candidate", "cand", "--endpoint", "x=http://x"], "nothing else (x)"),
        (["--reference", "ref", "--candidate", "cand", "--sweep", "ctr=0,1"], "nothing else (--sweep)"),
        (["--reference", "ref", "--candidate", "cand", "--min-tau", "2"], "--min-tau 2: Kendall tau-b lies"),
        (
            ["--reference", "ref", "--candidate", "cand", "--overlap-at", "0"],
            "--overlap-at must be at least 1",
        ),
        (
            ["--reference", "ref", "--candidate", "cand", "--max-ndcg-drop", "0.01"],
            "--max-ndcg-drop needs labels",
        ),
        ([], "has no labels (a query log): relevance needs labels"),
    ],
)
def test_gate_usage_errors_exit_2_before_asking_anyone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = write_lines(tmp_path / "log.jsonl", LOG)
    key = tmp_path / "key"
    key.write_text("rk_test\n")
    endpoints = ["--endpoint", "ref=http://ref.test", "--endpoint", "cand=http://cand.test"]
    assert main([str(data), *endpoints, "--api-key-file", str(key), "--retries", "0", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rerank-eval: ")
    assert message in err


def test_help_lists_every_bound(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(f"{t.flag} X" in text for t in THRESHOLDS)
    assert "3 the gate failed" in text


def test_the_shuffler_keeps_cohere_s_wire_format_and_moves_the_products() -> None:
    """tests/test_eval_gate.py's broken candidate: same body, scores still descending, each result with
    its own document, the products moved (never left as they were)."""
    body = {
        "id": "r1",
        "results": [
            {"index": i, "relevance_score": s, "document": {"text": t}}
            for i, s, t in [(3, 0.9, "d"), (0, 0.7, "a"), (2, 0.4, "c"), (1, 0.1, "b")]
        ],
        "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
    }
    shuffled = shuffle_results(body, "seed")
    assert shuffled == shuffle_results(body, "seed"), "the same request, the same shuffle"
    assert (shuffled["id"], shuffled["meta"]) == (body["id"], body["meta"])
    results = shuffled["results"]
    assert [r["relevance_score"] for r in results] == [0.9, 0.7, 0.4, 0.1]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    assert [r["index"] for r in results] != [3, 0, 2, 1]
    assert all(r["document"]["text"] == "abcd"[r["index"]] for r in results)
    assert all(list(r) == ["index", "relevance_score", "document"] for r in results)
    pair = {
        "id": "r2",
        "results": [{"index": 0, "relevance_score": 0.6}, {"index": 1, "relevance_score": 0.2}],
    }
    for seed in ("a", "b", "c", "d"):  # two products: the only shuffle that moves them is the swap
        assert [r["index"] for r in shuffle_results(pair, seed)["results"]] == [1, 0]
