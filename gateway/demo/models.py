"""The deployment's models as the page offers them: one per model entry (a name and its aliases are one
model, offered once under the entry's name, the cards' ``root``), a cascade described by its two stages."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.schemas import CascadeCard, ModelCard


@dataclass(frozen=True)
class Choice:
    name: str  # the entry's name (its root): what the page sends as ``model``
    cascade: CascadeCard | None = None

    @property
    def label(self) -> str:
        """How the page lists it and heads its results."""
        if self.cascade is None:
            return self.name
        stages = self.cascade
        return f"{self.name} (cascade: {stages.first}, then {stages.second} on the top {stages.top_k})"


def choices(cards: list[ModelCard]) -> list[Choice]:
    """One choice per root, where the listing first names it (so the deployment's default comes first)."""
    by_root: dict[str, Choice] = {}
    for card in cards:
        root = card.root or card.id  # a gateway that sends no root lists each model once, by its name
        by_root.setdefault(root, Choice(root, card.cascade))  # an entry's aliases share its cascade
    return list(by_root.values())
