"""Relevance metrics and paired tests, computed by ranx (ranx.compare: metrics by name, a paired test per
pair of runs, per-query wins and losses) with scipy's paired-t confidence interval for each difference.

A run is what ranx expects: per query, per candidate id, a score whose descending order is the ranking.
Every run here scores by rank (the first product gets n, the next n - 1, ...), so ranx sorts exactly as the
endpoint ordered, raw scores and their ties never matter.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba.core.errors import NumbaTypeSafetyWarning
from ranx import Qrels, Run, compare
from scipy import stats

from gateway.eval.client import Ranked
from gateway.eval.dataset import Candidate, DatasetError, LabelledQuery

BASELINE = "baseline"  # the candidates in the order given: the shop's current ranking
RunScores = dict[str, dict[str, float]]  # query id -> candidate id -> score (higher ranks first)
SAME = 1e-9  # metric values (in [0, 1]) this close are equal: float noise, not a difference


@dataclass(frozen=True, slots=True)
class Metric:
    label: str  # how reports name it
    ranx: str  # ranx's name for it
    graded: bool  # NDCG weighs each grade; MRR and recall only ask "relevant or not"

    def ranx_name(self, relevant: int) -> str:
        """ranx's ``-lN`` suffix counts labels of at least N as relevant (and drops lower grades)."""
        return self.ranx if self.graded or relevant <= 1 else f"{self.ranx}-l{relevant}"


METRICS = (
    Metric("NDCG@5", "ndcg@5", graded=True),
    Metric("NDCG@10", "ndcg@10", graded=True),
    Metric("MRR@10", "mrr@10", graded=False),
    Metric("Recall@10", "recall@10", graded=False),
)
HEADLINE = "NDCG@10"


@dataclass(frozen=True, slots=True)
class Versus:
    """One run against a reference run on one metric, paired query by query."""

    mean: float
    reference_mean: float
    ci: tuple[float, float] | None  # of the mean difference; None with fewer than two queries
    p_value: float | None  # the chosen test's (ranx); None with fewer than two queries
    significant: bool
    wins: int  # queries where the run scores higher
    ties: int
    losses: int

    @property
    def delta(self) -> float:
        return self.mean - self.reference_mean


@dataclass(frozen=True, slots=True)
class Evaluation:
    runs: tuple[str, ...]  # the baseline first
    query_ids: tuple[str, ...]  # the queries measured
    skipped: tuple[str, ...]  # queries with no relevant candidate: every order scores alike, so left out
    relevant: int  # a label of at least this counts as relevant for MRR and recall
    alpha: float
    test: str  # "student" (paired t-test) or "fisher" (randomisation test)
    means: dict[str, dict[str, float]]  # run -> metric label -> mean over the queries
    per_query: dict[str, dict[str, dict[str, float]]]  # run -> metric label -> query id -> score
    versus: dict[tuple[str, str], dict[str, Versus]]  # (run, reference) -> metric label -> comparison
    rankings: dict[str, dict[str, list[str]]]  # run -> query id -> candidate ids, best first
    table: str  # ranx's own comparison table (superscripts: significantly better than that run)


def baseline_run(queries: Sequence[LabelledQuery], top_n: int | None) -> RunScores:
    """The given order, cut to ``top_n`` like the endpoints' answers."""
    run: RunScores = {}
    for query in queries:
        shown = query.candidates[: top_n or len(query.candidates)]
        run[query.id] = {c.id: float(len(shown) - rank) for rank, c in enumerate(shown)}
    return run


def answer_run(queries: Sequence[LabelledQuery], answers: Mapping[str, Ranked]) -> RunScores:
    run: RunScores = {}
    for query in queries:
        order = answers[query.id].order
        run[query.id] = {query.candidates[i].id: float(len(order) - rank) for rank, i in enumerate(order)}
    return run


def default_relevant(max_label: int) -> int:
    """Relevant means label 2 or more on a graded scale (ESCI: exact or substitute); 1 on a 0/1 scale."""
    return min(2, max(1, max_label))


def evaluate(
    queries: Sequence[LabelledQuery],
    runs: Mapping[str, RunScores],
    *,
    pairs: Sequence[tuple[str, str]],
    relevant: int,
    alpha: float = 0.05,
    test: str = "student",
) -> Evaluation:
    """Metrics of every run (``runs`` starts with the baseline) and the comparisons named in ``pairs``
    (run, the run it is measured against)."""
    judged = [q for q in queries if any(c.label is not None and c.label >= relevant for c in q.candidates)]
    skipped = tuple(q.id for q in queries if q not in judged)
    if not judged:
        raise DatasetError(f"no query has a candidate labelled {relevant} or more: nothing to measure")
    ids = [q.id for q in judged]
    qrels = Qrels({q.id: q.labels() for q in judged}, name="labels")
    ranx_runs = {name: Run({qid: scores[qid] for qid in ids}, name=name) for name, scores in runs.items()}
    names = {m.label: m.ranx_name(relevant) for m in METRICS}
    with warnings.catch_warnings():
        # ranx's compiled kernels cast ids between integer types (harmless, and not ours to fix); a
        # zero-variance difference makes scipy warn before returning NaN, which Versus treats below.
        warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        report = compare(
            qrels,
            list(ranx_runs.values()),
            metrics=list(names.values()),
            stat_test=test,
            max_p=alpha,
            rounding_digits=4,
        )
    per_query = {
        name: {label: {qid: float(run.scores[metric][qid]) for qid in ids} for label, metric in names.items()}
        for name, run in ranx_runs.items()
    }
    means = {name: {label: float(report.results[name][names[label]]) for label in names} for name in runs}
    versus: dict[tuple[str, str], dict[str, Versus]] = {}
    for name, reference in pairs:
        comparisons: Any = report.comparisons[name, reference]
        versus[name, reference] = {
            label: _versus(
                [per_query[name][label][qid] for qid in ids],
                [per_query[reference][label][qid] for qid in ids],
                p_value=float(comparisons[metric]["p_value"]),
                wtl=report.win_tie_loss[name, reference][metric],
                alpha=alpha,
            )
            for label, metric in names.items()
        }
    return Evaluation(
        runs=tuple(runs),
        query_ids=tuple(ids),
        skipped=skipped,
        relevant=relevant,
        alpha=alpha,
        test=test,
        means=means,
        per_query=per_query,
        versus=versus,
        rankings={
            name: {qid: sorted(run, key=run.__getitem__, reverse=True) for qid, run in scores.items()}
            for name, scores in runs.items()
        },
        table=str(report),
    )


def _versus(
    run: list[float], reference: list[float], *, p_value: float, wtl: Mapping[str, int], alpha: float
) -> Versus:
    mean, reference_mean = float(np.mean(run)), float(np.mean(reference))
    differences = np.asarray(run) - np.asarray(reference)
    ci: tuple[float, float] | None
    p: float | None
    if len(differences) < 2:
        ci, p = None, None
    elif np.ptp(differences) <= SAME:  # every query moved by the same amount: no spread to test against
        d = float(np.mean(differences))
        ci, p = (d, d), (1.0 if abs(d) <= SAME else 0.0)
    else:
        interval = stats.ttest_rel(run, reference).confidence_interval(confidence_level=1 - alpha)
        ci = (float(interval.low), float(interval.high))
        p = p_value if math.isfinite(p_value) else 1.0
    significant = p is not None and p <= alpha  # as ranx marks it in its table
    return Versus(mean, reference_mean, ci, p, significant, int(wtl["W"]), int(wtl["T"]), int(wtl["L"]))


def warm_up() -> None:
    """Run every ranx kernel the command uses once: numba compiles them on first use (about 40 s on two
    cores) and caches them beside ranx, so scripts/setup.sh pays that once instead of the first run."""
    a = LabelledQuery("a", "a", (Candidate("x", 2, {"text": "x"}), Candidate("y", 0, {"text": "y"})))
    b = LabelledQuery("b", "b", (Candidate("x", 0, {"text": "x"}), Candidate("y", 3, {"text": "y"})))
    queries = [a, b]
    flipped = {q.id: Ranked((1, 0), (0.9, 0.1)) for q in queries}
    runs = {BASELINE: baseline_run(queries, None), "flipped": answer_run(queries, flipped)}
    evaluate(queries, runs, pairs=[("flipped", BASELINE)], relevant=2)
