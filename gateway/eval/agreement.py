"""How closely a candidate endpoint ranks like a reference endpoint on the same searches, query by query,
with or without labels: Kendall's tau-b, top-k overlap, score differences, and the NDCG@10 drop where
there are labels (bounds.py names them, gate.py judges them).

Per query the two answers are aligned by product (its position in the search), so the order in which an
endpoint lists its results only matters to the top-k overlap, which is about what a shopper sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scipy import stats

from gateway.eval import metrics
from gateway.eval.bounds import Measure
from gateway.eval.client import Ranked
from gateway.eval.dataset import LabelledQuery
from gateway.eval.metrics import HEADLINE


@dataclass(frozen=True, slots=True)
class QueryAgreement:
    query_id: str
    shared: int  # products both endpoints returned (every product unless --top-n cuts the answers)
    tau: float | None  # None: fewer than two shared products, so no pair to order
    overlap: float
    max_score_diff: float | None  # None: no shared product (--top-n answers that share nothing)
    mean_score_diff: float | None
    ndcg_drop: float | None = None  # reference's NDCG@10 minus the candidate's; None without labels

    def value(self, measure: Measure) -> float | None:
        value: float | None = getattr(self, measure.key)
        return value


@dataclass(frozen=True, slots=True)
class Spread:
    """One measure over the queries that define it: its mean, and the worst query."""

    mean: float
    worst: float
    worst_query: str
    queries: int


@dataclass(frozen=True, slots=True)
class Agreement:
    reference: str
    candidate: str
    k: int  # the overlap's cut
    per_query: tuple[QueryAgreement, ...]
    ndcg: tuple[float, float] | None  # mean NDCG@10 of the reference and of the candidate, with labels
    ndcg_queries: int  # queries with a relevant label (NDCG@10 is measured on those)

    def spread(self, measure: Measure) -> Spread | None:
        """None when no query defines the measure (no labels for the NDCG drop, say)."""
        defined = [(v, q.query_id) for q in self.per_query if (v := q.value(measure)) is not None]
        if not defined:
            return None
        # The worst query: the least agreement; the first in the data among equals, so the line is stable.
        pick = min if measure.higher_is_better else max
        worst, query = pick(defined, key=lambda pair: pair[0])
        return Spread(math.fsum(v for v, _ in defined) / len(defined), worst, query, len(defined))


def kendall_tau_b(reference: Sequence[float], candidate: Sequence[float]) -> float | None:
    """Kendall's tau-b between two scorings of the same products (scipy's ``kendalltau``, variant b):
    (concordant - discordant) / sqrt((pairs - tied in reference) * (pairs - tied in candidate)), so tied
    scores, which a quantised model produces more often, neither count for nor against agreement.

    Where tau-b's denominator is zero, scipy gives NaN; a gate needs a number: both scorings tie every
    product is full agreement (1.0); only one of them tying every product is none (0.0), which is what an
    endpoint answering all zeros is. Fewer than two products: no pair, None.
    """
    if len(reference) != len(candidate):
        raise ValueError("tau compares two scorings of the same products")
    if len(reference) < 2:
        return None
    flat = (len(set(reference)) == 1, len(set(candidate)) == 1)
    if all(flat):
        return 1.0
    if any(flat):
        return 0.0
    return float(stats.kendalltau(reference, candidate, variant="b").statistic)


def top_k_overlap(reference: Sequence[int], candidate: Sequence[int], k: int) -> float:
    """The share of the reference's first k products that the candidate also shows in its first k, by the
    order the endpoints returned. k shrinks to the shorter answer: a search with fewer products than k (or
    a --top-n below k) compares all it has."""
    cut = min(k, len(reference), len(candidate))
    if cut == 0:
        raise ValueError("an answer ranks at least one product")
    return len(set(reference[:cut]) & set(candidate[:cut])) / cut


def compare_query(query_id: str, reference: Ranked, candidate: Ranked, k: int) -> QueryAgreement:
    ref_scores = dict(zip(reference.order, reference.scores, strict=True))
    cand_scores = dict(zip(candidate.order, candidate.scores, strict=True))
    shared = sorted(ref_scores.keys() & cand_scores.keys())
    diffs = [abs(ref_scores[i] - cand_scores[i]) for i in shared]
    return QueryAgreement(
        query_id=query_id,
        shared=len(shared),
        tau=kendall_tau_b([ref_scores[i] for i in shared], [cand_scores[i] for i in shared]),
        overlap=top_k_overlap(reference.order, candidate.order, k),
        max_score_diff=max(diffs) if diffs else None,
        mean_score_diff=math.fsum(diffs) / len(diffs) if diffs else None,
    )


def compare(
    queries: Sequence[LabelledQuery],
    reference: tuple[str, Mapping[str, Ranked]],
    candidate: tuple[str, Mapping[str, Ranked]],
    *,
    k: int,
    relevant: int,
) -> Agreement:
    """Both endpoints' answers (name, query id -> answer) on ``queries``; with labels, NDCG@10 of each by
    the relevance report's own computation (metrics.evaluate, ranx) on the queries with a relevant label."""
    (ref_name, ref_answers), (cand_name, cand_answers) = reference, candidate
    per_query = [compare_query(q.id, ref_answers[q.id], cand_answers[q.id], k) for q in queries]
    ndcg_of = _ndcg(queries, ref_answers, cand_answers, relevant)
    ndcg: tuple[float, float] | None = None
    if ndcg_of:
        per_query = [
            replace(q, ndcg_drop=ndcg_of[q.query_id][0] - ndcg_of[q.query_id][1])
            if q.query_id in ndcg_of
            else q
            for q in per_query
        ]
        ndcg = (
            math.fsum(r for r, _ in ndcg_of.values()) / len(ndcg_of),
            math.fsum(c for _, c in ndcg_of.values()) / len(ndcg_of),
        )
    return Agreement(ref_name, cand_name, k, tuple(per_query), ndcg, len(ndcg_of))


def _ndcg(
    queries: Sequence[LabelledQuery],
    reference: Mapping[str, Ranked],
    candidate: Mapping[str, Ranked],
    relevant: int,
) -> dict[str, tuple[float, float]]:
    """query id -> (reference's NDCG@10, candidate's), for the queries with a relevant label (none in a
    query log)."""
    judged = [q for q in queries if any(c.label is not None and c.label >= relevant for c in q.candidates)]
    if not judged:
        return {}
    runs = {
        "reference": metrics.answer_run(judged, reference),
        "candidate": metrics.answer_run(judged, candidate),
    }
    scores = metrics.evaluate(judged, runs, pairs=[], relevant=relevant).per_query
    return {q.id: (scores["reference"][HEADLINE][q.id], scores["candidate"][HEADLINE][q.id]) for q in judged}
