"""Token budgets (gateway/tokens.py) on the tiny model's real tokenizer: documents are cut into consecutive,
bounded chunks, and the budget leaves room for the prompt around them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tokens import PromptBudget

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def budget(model_dir: Path) -> PromptBudget:
    return PromptBudget.from_model_dir(model_dir, max_model_len=2048)


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["耳", " ", "\n", "é", "\U0001d160", "\U00013000"]),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(text=texts, chunk_tokens=st.integers(1, 64), max_chunks=st.integers(1, 5))
def test_split_pieces_are_consecutive_bounded_prefixes(
    budget: PromptBudget, text: str, chunk_tokens: int, max_chunks: int
) -> None:
    """Chunks concatenate to a prefix of the text (the whole text when it fits), each within the budget
    up to edge re-merging, and there are never more than asked for."""
    pieces = budget.split([text], chunk_tokens=chunk_tokens, max_chunks=max_chunks)[0]
    assert 1 <= len(pieces) <= max_chunks
    assert all(pieces) or pieces == [""], "no empty piece is ever sent to the model"
    joined = "".join(pieces)
    assert text.startswith(joined)
    total = budget.count(text)
    if total <= chunk_tokens * max_chunks:
        assert joined == text
    for piece in pieces:
        assert budget.count(piece) <= chunk_tokens + 4


def test_document_budget_leaves_room_for_the_prompt(budget: PromptBudget) -> None:
    short = budget.document_budget("Find shoes", "red")
    long = budget.document_budget("Find shoes", "red " * 100)
    assert 1900 < short < 2048
    assert long < short - 90


def test_texts_that_grow_under_nfc_are_still_cut_to_the_budget(budget: PromptBudget) -> None:
    """U+1D160 is 4 UTF-8 bytes but 6 tokens after NFC: the no-tokenizing shortcut must not trust bytes."""
    text = "\U0001d160" * 1000
    assert len(text.encode()) == 4000
    (piece,) = budget.split([text], chunk_tokens=4096, max_chunks=1)[0]
    assert budget.count(piece) <= 4096 + 4
