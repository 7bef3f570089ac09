"""What the agreement gate measures and the bounds the command line puts on them; nothing heavy imported,
so the parser builds its options from this table (one place names them) and --help stays fast.

Which bounds apply to the mean over queries and which to the worst query (documented in the README): the
mean says how a release ranks in general, the worst query catches the search it breaks. Tau and overlap
have both; the largest score difference is a worst case by nature; the mean score difference and the
NDCG@10 drop are means (one query's NDCG moves a lot when two products swap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Over = Literal["mean", "worst"]


@dataclass(frozen=True, slots=True)
class Measure:
    key: str  # agreement.QueryAgreement's field
    label: str  # how the table and the failure lines name it
    higher_is_better: bool  # tau and overlap: 1 is agreement; differences and the drop: 0 is
    low: float  # the values it can take, to refuse a bound it could never meet or never miss
    high: float


TAU = Measure("tau", "Kendall tau-b", higher_is_better=True, low=-1.0, high=1.0)
OVERLAP = Measure("overlap", "top-k overlap", higher_is_better=True, low=0.0, high=1.0)
MAX_DIFF = Measure("max_score_diff", "largest |score diff|", higher_is_better=False, low=0.0, high=math.inf)
MEAN_DIFF = Measure("mean_score_diff", "mean |score diff|", higher_is_better=False, low=0.0, high=math.inf)
NDCG_DROP = Measure("ndcg_drop", "NDCG@10 drop", higher_is_better=False, low=-1.0, high=1.0)
MEASURES = (TAU, OVERLAP, MAX_DIFF, MEAN_DIFF, NDCG_DROP)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A command-line option that bounds one measure, over the queries' mean or at the worst query."""

    flag: str
    measure: Measure
    over: Over
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


THRESHOLDS = (
    Threshold("--min-tau", TAU, "mean", "mean Kendall tau-b over the queries at least X"),
    Threshold("--min-query-tau", TAU, "worst", "every query's tau-b at least X"),
    Threshold("--min-overlap", OVERLAP, "mean", "mean top-k overlap (k: --overlap-at) at least X"),
    Threshold("--min-query-overlap", OVERLAP, "worst", "every query's top-k overlap at least X"),
    Threshold("--max-score-diff", MAX_DIFF, "worst", "no product's |score difference| above X"),
    Threshold("--max-mean-score-diff", MEAN_DIFF, "mean", "mean |score difference| at most X"),
    Threshold("--max-ndcg-drop", NDCG_DROP, "mean", "mean NDCG@10 drop (reference - candidate) at most X"),
)


@dataclass(frozen=True, slots=True)
class Bound:
    threshold: Threshold
    limit: float

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.threshold.measure.higher_is_better else value <= self.limit

    def describe(self) -> str:
        """``mean ≥ 0.9``: the table's bound cell."""
        sign = "≥" if self.threshold.measure.higher_is_better else "≤"
        return f"{self.threshold.over} {sign} {self.limit:g}"


def bounds_from(values: Mapping[str, float | None]) -> list[Bound]:
    """The bounds given (argparse dest -> value or None); ValueError names one outside its measure's range."""
    chosen: list[Bound] = []
    for threshold in THRESHOLDS:
        limit = values.get(threshold.dest)
        if limit is None:
            continue
        measure = threshold.measure
        if math.isnan(limit) or not measure.low <= limit <= measure.high:
            raise ValueError(
                f"{threshold.flag} {limit:g}: {measure.label} lies from {measure.low:g} to {measure.high:g}"
            )
        chosen.append(Bound(threshold, limit))
    return chosen
