"""How a ranking reads on the page: the ranked table, the chart's data and the one-line summary."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from gateway.demo.client import Outcome
from gateway.demo.products import Products

SCORE_DIGITS = 4  # scores on the page (and in the tests that compare them with the SDK) at this precision
CHART_LABEL_CHARS = 24


@dataclass(frozen=True)
class Row:
    rank: int  # 1-based, after reranking
    was: int  # 1-based position in the products as given
    score: float
    product: str

    @property
    def moved(self) -> str:
        places = self.was - self.rank
        if places > 0:
            return f"▲ {places}"
        return f"▼ {-places}" if places < 0 else "="

    @property
    def score_text(self) -> str:
        return f"{self.score:.{SCORE_DIGITS}f}"


def rows(outcome: Outcome, products: Products, rank_fields: list[str]) -> list[Row]:
    return [
        Row(rank, r.index + 1, r.score, products.label(r.index, rank_fields))
        for rank, r in enumerate(outcome.results, start=1)
    ]


def table_html(ranked: list[Row]) -> str:
    body = "".join(
        f'<tr><td class="rank">{row.rank}</td><td class="was">{row.was}</td>'
        f'<td class="moved {_direction(row)}">{row.moved}</td><td class="score">{row.score_text}</td>'
        f'<td class="product">{escape(row.product)}</td></tr>'
        for row in ranked
    )
    return (
        '<table class="ranked"><thead><tr><th>Rank</th><th>Was</th><th>Moved</th><th>Score</th>'
        f"<th>Product</th></tr></thead><tbody>{body}</tbody></table>"
    )


def chart_frame(ranked: list[Row]) -> pd.DataFrame:
    """One bar per product, labelled with its new rank so equal names stay distinct bars."""
    return pd.DataFrame(
        {
            "product": [f"{row.rank}. {_shorten(row.product)}" for row in ranked],
            "score": [round(row.score, SCORE_DIGITS) for row in ranked],
        }
    )


def summary(outcome: Outcome, sent: int) -> str:
    """The status line after a ranking: how many, the request's latency and what it was billed."""
    units = outcome.search_units
    billed = "" if units is None else f" · <b>{units}</b> search unit{'s' if units != 1 else ''}"
    shown = len(outcome.results)
    of = f"top {shown} of {sent}" if shown < sent else f"{sent}"
    return f'<p class="status ok">Ranked {of} products in <b>{outcome.latency_ms:.0f} ms</b>{billed}.</p>'


def error(sentence: str) -> str:
    return f'<p class="status error">⚠ {escape(sentence)}</p>'


def _direction(row: Row) -> str:
    return "up" if row.was > row.rank else "down" if row.was < row.rank else "same"


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= CHART_LABEL_CHARS else flat[: CHART_LABEL_CHARS - 1] + "…"


def escape(text: str) -> str:
    # Gradio fills the HTML component through a JS template string: keep "$" and braces inert too.
    escaped = html.escape(text).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")
    return escaped.replace("\n", "<br>")
