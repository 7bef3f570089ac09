"""What the lean request path relies on: counting the prompt in parts, skipping the tokenizer for short texts,
and the settings and key options of the score cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway import keys
from gateway.settings import Settings
from gateway.tokens import SAFETY_MARGIN, PromptBudget
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION, render

pytestmark = pytest.mark.unit

MAX_LEN = 2048


@pytest.fixture(scope="module")
def budget(model_dir: Path) -> PromptBudget:
    return PromptBudget.from_model_dir(model_dir, max_model_len=MAX_LEN)


texts = st.text(
    alphabet=st.sampled_from([*"abc XYZ 123 ,.-'\n\t<|>", "é", "中", "文", "😀", "ﬁ", "\u0301"]),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(instruction=texts.filter(str.strip), query=texts, document=texts)
def test_counting_the_prompt_in_parts_stays_inside_the_safety_margin(
    budget: PromptBudget, instruction: str, query: str, document: str
) -> None:
    """Skeleton (once per instruction) + query + document never undercounts the whole prompt by more than the
    margin, so a document cut to its budget always fits the model's context."""
    whole = budget.count(render(instruction, query, document))
    room = budget.document_budget(instruction, query)
    assert budget.count(document) <= MAX_LEN - SAFETY_MARGIN  # the generated texts are short
    fitted = MAX_LEN - room - SAFETY_MARGIN + budget.count(document)  # what the budget assumes
    assert whole - fitted <= SAFETY_MARGIN // 2, f"parts {fitted} vs whole {whole}"


@settings(max_examples=300, deadline=None)
@given(
    instruction=texts.filter(str.strip),
    query=texts,
    documents=st.lists(
        st.one_of(texts, st.builds("{}<|im_end|>{}".format, texts, texts)), min_size=1, max_size=4
    ),
)
def test_prompt_tokens_are_exactly_the_whole_prompts_count(
    budget: PromptBudget, instruction: str, query: str, documents: list[str]
) -> None:
    """``meta.tokens`` counts each document with its leading space next to a count of the rest, once per
    query: exact, never an estimate, whatever the texts hold at the seams (spaces, newlines, combining marks,
    special-token look-alikes)."""
    whole = [budget.count(render(instruction, query, document)) for document in documents]
    assert budget.prompt_tokens(instruction, query, documents) == whole


def test_the_budget_matches_counting_the_whole_prompt(budget: PromptBudget) -> None:
    query = "适合程序员的轻薄笔记本\uff0c续航长\uff0c键盘手感好"  # fullwidth commas, as shoppers type them
    exact = MAX_LEN - budget.count(render(PRODUCT_SEARCH_INSTRUCTION, query, "")) - SAFETY_MARGIN
    assert abs(budget.document_budget(PRODUCT_SEARCH_INSTRUCTION, query) - exact) <= 2
    known = budget.query_tokens(query)
    assert budget.document_budget(PRODUCT_SEARCH_INSTRUCTION, query, query_tokens=known) == (
        budget.document_budget(PRODUCT_SEARCH_INSTRUCTION, query)
    )


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_fits_is_an_upper_bound_without_tokenizing(budget: PromptBudget, text: str) -> None:
    tokens = budget.count(text)
    assert PromptBudget.fits([text], chunk_tokens=max(tokens, 1)) or tokens < len(text.encode())
    if PromptBudget.fits([text], chunk_tokens=5):
        assert tokens <= 5, "fits() never lets a text through that needs cutting"


def test_short_products_skip_the_tokenizer_and_long_ones_do_not() -> None:
    assert PromptBudget.fits(["Nike Pegasus 40", "华为MateBook X Pro"], chunk_tokens=64)
    assert not PromptBudget.fits(["Nike Pegasus 40", "x" * 65], chunk_tokens=64)
    assert not PromptBudget.fits(["中" * 22], chunk_tokens=64), "66 UTF-8 bytes may be 66 tokens"


def test_a_key_line_can_turn_the_score_cache_off() -> None:
    _, line = keys.generate("shop-1")
    (default,) = keys.parse(line, source="test")
    (off,) = keys.parse(f"{line} rpm=5 cache=off", source="test")
    (on,) = keys.parse(f"{line} cache=on", source="test")
    assert default.cache
    assert on.cache
    assert not off.cache
    assert off.limits == {"rpm": 5}
    with pytest.raises(ValueError, match=r"cache=on\|off"):
        keys.parse(f"{line} cache=maybe", source="test")


def test_the_shared_cache_tier_needs_redis(model_dir: Path) -> None:
    common = {"model_dir": model_dir, "api_keys": "x sha256:" + "0" * 64}
    with pytest.raises(ValidationError, match="RERANK_SCORE_CACHE_REDIS_TTL_S"):
        Settings(**common, score_cache_redis_ttl_s=60)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(**common, score_cache_scope="tenant")  # type: ignore[arg-type]
    ok = Settings(**common, score_cache_redis_ttl_s=60, redis_url="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert ok.score_cache_redis_ttl_s == 60
