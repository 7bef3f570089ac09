"""The gateway's scores are the model card's scores: same tokens in, same P(yes) out (within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from model_setup.prompt import CARD_INSTRUCTION, PRODUCT_SEARCH_INSTRUCTION, render
from tests.support.parity import TOLERANCE, template_prompt
from tests.support.reference import CARD_SUFFIX, CardReranker
from tests.support.stack import Gateway, Keys

CASES = {
    "english": (
        "wireless noise cancelling headphones",
        [
            "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones, black",
            "Stainless steel chef's knife, 8 inch",
            "Apple AirPods Pro (2nd generation) with MagSafe case",
            "Bose QuietComfort 45 Bluetooth headphones",
            "USB-C charging cable, 2 m",
        ],
    ),
    "chinese": (
        "无线降噪耳机",
        [
            "索尼 WH-1000XM5 无线降噪头戴式耳机 黑色",
            "不锈钢厨师刀 8英寸",
            "小米 Redmi Buds 4 Pro 真无线降噪蓝牙耳机",
        ],
    ),
    "mixed": (
        "running shoes 跑步鞋 size 42",
        ["Nike Air Zoom Pegasus 40 男子跑步鞋", "Yoga mat, 6 mm, non-slip"],
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("instruction", [None, PRODUCT_SEARCH_INSTRUCTION, "Find gifts for a 10 year old"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_template_tokens_equal_the_card_recipe(
    card: CardReranker, model_dir: Path, case: str, instruction: str | None
) -> None:
    """vLLM tokenizes the rendered template as one string; the card concatenates prefix + pair + suffix ids.
    Both must give identical ids, and model_setup.prompt.render (used for budgets) the same text."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    query, docs = CASES[case]
    effective = instruction or CARD_INSTRUCTION
    expected = card.input_ids(effective, query, docs)
    for doc, ids in zip(docs, expected, strict=True):
        prompt = template_prompt(tokenizer, instruction, query, doc)
        assert prompt == render(effective, query, doc)
        assert prompt.endswith(CARD_SUFFIX)
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids


def rerank(gateway: Gateway, key: str, query: str, docs: list[str], instruction: str | None) -> list[float]:
    body: dict[str, object] = {"query": query, "documents": docs}
    if instruction is not None:
        body["instruction"] = instruction
    response = httpx.post(
        f"{gateway.url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    scores = [0.0] * len(docs)
    for result in response.json()["results"]:
        scores[result["index"]] = result["relevance_score"]
    return scores


@pytest.mark.parametrize("instruction", [None, "Find gifts for a 10 year old"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gateway_scores_equal_the_card_recipe(
    gateway: Gateway, api_keys: Keys, card: CardReranker, case: str, instruction: str | None
) -> None:
    """End to end through the gateway and vLLM; no instruction means the deployment's product default."""
    query, docs = CASES[case]
    got = rerank(gateway, api_keys["shop-a"], query, docs, instruction)
    want = card.scores(instruction or PRODUCT_SEARCH_INSTRUCTION, query, docs)
    assert got == pytest.approx(want, abs=TOLERANCE)


@pytest.mark.unit
def test_parity_is_sensitive_to_the_prompt(card: CardReranker) -> None:
    """The comparison above can fail: dropping the template's final newline (the upstream example's bug)
    moves the tiny model's scores far beyond the tolerance, and so does another instruction."""
    query, docs = CASES["english"]
    right = card.scores(CARD_INSTRUCTION, query, docs)
    no_newline = card.scores(CARD_INSTRUCTION, query, docs, suffix=CARD_SUFFIX[:-1])
    other = card.scores(PRODUCT_SEARCH_INSTRUCTION, query, docs)
    assert max(abs(a - b) for a, b in zip(right, no_newline, strict=True)) > 100 * TOLERANCE
    assert max(abs(a - b) for a, b in zip(right, other, strict=True)) > 100 * TOLERANCE
    assert max(right) - min(right) > 0.05, "tiny model scores must spread for the parity test to mean much"
