"""The agreement gate's verdict: agreement.py's measures checked against bounds.py's bounds, told as a
table, one line per failed bound (for the release pipeline's log) and ``agreement.json`` (for its
artefacts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.eval.agreement import Agreement
from gateway.eval.bounds import MEASURES, NDCG_DROP, Bound

FAILED = 3  # the exit status of a candidate outside a bound (1: an endpoint failed, 2: a usage error)


@dataclass(frozen=True, slots=True)
class Failure:
    bound: Bound
    line: str  # one line: the measure, its value, the bound and the worst query


def check(agreement: Agreement, bounds: Sequence[Bound]) -> list[Failure]:
    """The bounds the candidate misses, in the command's order. A bound whose measure no query defines
    fails too: a release gate that could not measure must not pass."""
    failures: list[Failure] = []
    for bound in bounds:
        threshold, measure = bound.threshold, bound.threshold.measure
        spread = agreement.spread(measure)
        if spread is None:
            line = (
                f"{measure.label} not measured on any query, so {threshold.flag} {bound.limit:g} cannot hold"
            )
            failures.append(Failure(bound, line))
            continue
        value = spread.mean if threshold.over == "mean" else spread.worst
        if bound.holds(value):
            continue
        side = "below" if measure.higher_is_better else "above"
        if threshold.over == "mean":
            worst = f"worst query {_quoted(spread.worst_query)} at {spread.worst:.4f}"
            where = f"(mean over {spread.queries} queries; {worst})"
        else:
            where = f"(worst query {_quoted(spread.worst_query)} of {spread.queries})"
        failures.append(
            Failure(bound, f"{measure.label} {value:.4f} {side} {threshold.flag} {bound.limit:g} {where}")
        )
    return failures


def _quoted(query_id: str) -> str:
    """A query id as a JSON string: quoted, and a newline in it cannot break the one line."""
    return json.dumps(query_id, ensure_ascii=False)


def print_table(
    agreement: Agreement, bounds: Sequence[Bound], failures: Sequence[Failure], dataset: str, console: Console
) -> None:
    failed = {failure.bound for failure in failures}
    title = (
        f"{agreement.candidate} against {agreement.reference} on {dataset}, "
        f"{len(agreement.per_query)} queries (top-k overlap at k = {agreement.k})"
    )
    table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD)  # Text: names are not markup
    for column in ("measure", "queries", "mean", "worst", "worst query", "bound", "verdict"):
        table.add_column(
            column, justify="right" if column in {"queries", "mean", "worst"} else "left", no_wrap=True
        )
    for measure in MEASURES:
        mine = [bound for bound in bounds if bound.threshold.measure == measure]
        verdict = "" if not mine else "FAIL" if failed.intersection(mine) else "pass"
        cell = ", ".join(bound.describe() for bound in mine)
        spread = agreement.spread(measure)
        if spread is None:
            why = "no labels" if measure == NDCG_DROP else "no query"
            table.add_row(measure.label, "0", "", "", f"not computed: {why}", cell, verdict)
        else:
            mean, worst = f"{spread.mean:.4f}", f"{spread.worst:.4f}"
            query = Text(spread.worst_query)
            table.add_row(measure.label, str(spread.queries), mean, worst, query, cell, verdict)
    console.print(table)
    if agreement.ndcg is None:
        console.print("NDCG@10 drop not computed: the searches have no labels (a query log) or none relevant")
    else:
        reference, candidate = agreement.ndcg
        console.print(
            f"NDCG@10 on {agreement.ndcg_queries} labelled queries: {agreement.reference} {reference:.4f}, "
            f"{agreement.candidate} {candidate:.4f}",
            markup=False,
        )
    if not bounds:
        console.print("No bound given (--min-tau, --max-score-diff, ...): a report, nothing can fail.")


def as_json(
    agreement: Agreement, bounds: Sequence[Bound], failures: Sequence[Failure], settings: dict[str, Any]
) -> dict[str, Any]:
    spreads = {measure.key: agreement.spread(measure) for measure in MEASURES}
    return {
        "reference": agreement.reference,
        "candidate": agreement.candidate,
        "settings": settings,
        "passed": not failures,
        "failures": [failure.line for failure in failures],
        "bounds": [{"option": b.threshold.flag, "over": b.threshold.over, "limit": b.limit} for b in bounds],
        "measures": {
            key: None
            if spread is None
            else {
                "mean": spread.mean,
                "worst": spread.worst,
                "worst_query": spread.worst_query,
                "queries": spread.queries,
            }
            for key, spread in spreads.items()
        },
        "ndcg@10": None
        if agreement.ndcg is None
        else {
            "reference": agreement.ndcg[0],
            "candidate": agreement.ndcg[1],
            "queries": agreement.ndcg_queries,
        },
        "per_query": [
            {"query_id": q.query_id, "shared": q.shared, **{m.key: q.value(m) for m in MEASURES}}
            for q in agreement.per_query
        ],
    }


def write(document: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "agreement.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
