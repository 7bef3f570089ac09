"""How a ranking reads on the page: the ranked table, the chart's data and the one-line summary; and two
rankings compared side by side, with the moves between them and what each cost."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from gateway.demo.client import Outcome
from gateway.demo.compare import Move, Side, direction, dropped, moves, shift
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
        return shift(self.was, self.rank)

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
        f'<td class="moved {direction(row.was, row.rank)}">{row.moved}</td>'
        f'<td class="score">{row.score_text}</td>'
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


def summary(outcome: Outcome, sent: int, model: str | None = None) -> str:
    """The status line after a ranking: how many, by which model when one was picked, the request's
    latency and what it was billed."""
    shown = len(outcome.results)
    of = f"top {shown} of {sent}" if shown < sent else f"{sent}"
    by = f" with <b>{escape(model)}</b>" if model else ""
    return (
        f'<p class="status ok">Ranked {of} products{by} in <b>{outcome.latency_ms:.0f} ms</b>'
        f"{_billed(outcome)}.</p>"
    )


def comparison(a: Side, b: Side, products: Products, rank_fields: list[str]) -> str:
    """A's order and B's side by side: B's rows say where A put each product and how far it moved."""
    left = _side_html("a", a, _side_table(a.outcome, products, rank_fields) if a.outcome else "")
    right = ""
    if b.outcome and a.outcome:
        order_a, order_b = a.outcome.results, b.outcome.results
        right = _side_table(b.outcome, products, rank_fields, moves(order_a, order_b))
        if gone := dropped(order_a, order_b):
            names = "; ".join(escape(products.label(i, rank_fields)) for i in gone)
            right += f'<p class="dropped">Not in B\'s top {len(order_b)}: {names}.</p>'
    elif b.outcome:  # A failed: B's order alone, with nothing to move from
        right = _side_table(b.outcome, products, rank_fields)
    return f'<div class="compare">{left}{_side_html("b", b, right)}</div>'


def see_below(model_b: str) -> str:
    """Under A's status: the comparison is further down the page, under the form."""
    return (
        f'<p class="status">Compared with <b>{escape(model_b)}</b> (B): both orders side by side below.</p>'
    )


def cost(outcome: Outcome) -> str:
    """What one ranking cost: its latency, the tokens each model scored, the search units billed."""
    tokens = " + ".join(
        f'<span class="tokens">{escape(name)}: <b>{count:,}</b> tokens</span>'
        for name, count in outcome.tokens_by_model.items()
    )
    spent = f" · {tokens}" if tokens else ""
    return f'<p class="status ok cost"><b>{outcome.latency_ms:.0f} ms</b>{spent}{_billed(outcome)}</p>'


def error(sentence: str) -> str:
    return f'<p class="status error">⚠ {escape(sentence)}</p>'


def _side_html(which: str, side: Side, body: str) -> str:
    status = cost(side.outcome) if side.outcome else error(side.error or "No ranking.")
    return (
        f'<section class="side {which}"><h3>{which.upper()} · {escape(side.label)}</h3>{status}{body}'
        "</section>"
    )


def _side_table(
    outcome: Outcome, products: Products, rank_fields: list[str], placed: list[Move] | None = None
) -> str:
    """One side's order; with ``placed`` (B's, against A's) also where A had each product and the move."""
    cascade = _any_model(outcome)
    head = "<th>Rank</th>" + ("<th>In A</th><th>Moved</th>" if placed is not None else "") + "<th>Score</th>"
    head += ("<th>Scored by</th>" if cascade else "") + "<th>Product</th>"
    rows = []
    for rank, r in enumerate(outcome.results, start=1):
        cells = f'<td class="rank">{rank}</td>'
        if placed is not None:
            move = placed[rank - 1]
            cells += f'<td class="was">{move.rank_in_a or "&ndash;"}</td>'
            cells += f'<td class="moved {move.direction}">{move.text}</td>'
        cells += f'<td class="score">{r.score:.{SCORE_DIGITS}f}</td>'
        if cascade:
            cells += f'<td class="by">{escape(r.model or "")}</td>'
        cells += f'<td class="product">{escape(products.label(r.index, rank_fields))}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="ranked"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _any_model(outcome: Outcome) -> bool:
    """A cascade's results say which model scored each one: only then is there a column for it."""
    return any(r.model for r in outcome.results)


def _billed(outcome: Outcome) -> str:
    units = outcome.search_units
    return "" if units is None else f" · <b>{units}</b> search unit{'s' if units != 1 else ''}"


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= CHART_LABEL_CHARS else flat[: CHART_LABEL_CHARS - 1] + "…"


def escape(text: str) -> str:
    # Gradio fills the HTML component through a JS template string: keep "$" and braces inert too.
    escaped = html.escape(text).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")
    return escaped.replace("\n", "<br>")
