"""Two models on the same query and products: both rankings, asked for at once, and how each product
moved from the first model's order (A) to the second's (B)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.demo.client import Outcome, Ranked, RerankFailed

log = logging.getLogger("rerank-demo")

PAGE_FAULT = "Something went wrong on the page itself; its log has the details."


def direction(was: int, rank: int) -> str:
    """A product's move from rank ``was`` to ``rank``, for the page's colours: up, down or same."""
    return "up" if was > rank else "down" if was < rank else "same"


@dataclass(frozen=True)
class Side:
    """One model's half of a comparison: its ranking, or the sentence saying why there is none."""

    model: str  # as the request named it
    label: str  # as the page lists it (a cascade with its stages)
    outcome: Outcome | None
    error: str | None = None


@dataclass(frozen=True)
class Move:
    """One product of B's order, placed against A's."""

    index: int  # position in the products as sent, 0-based
    rank: int  # in B, 1-based
    rank_in_a: int | None  # None: A's top N left it out
    shown_by_a: int  # how many results A returned (its top N)

    @property
    def text(self) -> str:
        if self.rank_in_a is None:
            return f"new in top {self.shown_by_a}"
        return shift(self.rank_in_a, self.rank)

    @property
    def direction(self) -> str:
        """For the page's colours: up, down, same, or new."""
        if self.rank_in_a is None:
            return "new"
        return direction(self.rank_in_a, self.rank)


def shift(before: int, after: int) -> str:
    """A move between two 1-based ranks, as the page writes it: "▲ 3" up, "▼ 2" down, "=" in place."""
    places = before - after
    if places > 0:
        return f"▲ {places}"
    return f"▼ {-places}" if places < 0 else "="


def moves(a: list[Ranked], b: list[Ranked]) -> list[Move]:
    """For each product in B's order, where A ranked it and how far it moved."""
    rank_in_a = {result.index: rank for rank, result in enumerate(a, start=1)}
    return [
        Move(result.index, rank, rank_in_a.get(result.index), len(a))
        for rank, result in enumerate(b, start=1)
    ]


def dropped(a: list[Ranked], b: list[Ranked]) -> list[int]:
    """Products in A's results that B's top N left out, in A's order (their indices)."""
    in_b = {result.index for result in b}
    return [result.index for result in a if result.index not in in_b]


def rank_both(rank: Callable[[str], Outcome], a: tuple[str, str], b: tuple[str, str]) -> tuple[Side, Side]:
    """``rank(model)`` for A and B at the same time, each (model, label); one failing leaves the other."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="compare") as pool:
        first, second = pool.map(lambda side: _side(rank, *side), (a, b))
    return first, second


def _side(rank: Callable[[str], Outcome], model: str, label: str) -> Side:
    try:
        return Side(model, label, rank(model))
    except RerankFailed as exc:
        return Side(model, label, None, str(exc))
    except Exception:  # a bug of the page on one side must not take the other side's answer with it
        log.exception("ranking with %s failed", model)
        return Side(model, label, None, PAGE_FAULT)
