"""The real Cohere SDK (v1, v2 and async v2 clients) drives the gateway as it would drive Cohere."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import cohere
import pytest
from tokenizers import Tokenizer

from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION
from tests.support.reference import CardReranker
from tests.support.stack import SERVED_NAME, Gateway, Keys

QUERY = "wireless noise cancelling headphones"
DOCS = [
    "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones, black",
    "Stainless steel chef's knife, 8 inch",
    "Apple AirPods Pro (2nd generation) with MagSafe case",
    "Bose QuietComfort 45 Bluetooth headphones",
    "USB-C charging cable, 2 m",
    "无线降噪耳机 蓝牙5.3",
]


def expected_order(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


@pytest.fixture
def client_v2(gateway: Gateway, api_keys: Keys) -> Iterator[cohere.ClientV2]:
    with cohere.ClientV2(api_key=api_keys["shop-a"], base_url=gateway.url, max_retries=0) as client:
        yield client


def test_v1_strings(client: cohere.Client, card: CardReranker) -> None:
    response = client.rerank(query=QUERY, documents=DOCS, model="rerank-v3.5")
    want = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, DOCS)
    assert [r.index for r in response.results] == expected_order(want)
    for result in response.results:
        assert result.relevance_score == pytest.approx(want[result.index], abs=1e-4)
        assert 0.0 <= result.relevance_score <= 1.0
        assert result.document is None  # not asked for: absent, never null on the wire
    assert response.meta is not None
    assert response.meta.billed_units is not None
    assert response.meta.billed_units.search_units == 1
    assert response.meta.api_version is not None
    assert response.meta.api_version.version == "1"
    assert response.id


def test_v1_objects_with_rank_fields_and_returned_documents(
    client: cohere.Client, card: CardReranker
) -> None:
    """rank_fields picks and orders the fields the model reads; every field comes back untouched."""
    products = [
        {"text": "Over-ear, 30 h battery", "title": "Sony WH-1000XM5", "brand": "Sony", "sku": "S-1"},
        {"text": "Forged blade", "title": "Chef's knife", "brand": "Zwilling", "sku": "Z-9"},
        {"text": "In-ear, ANC", "title": "AirPods Pro", "brand": "Apple", "sku": "A-2"},
    ]
    response = client.rerank(
        query=QUERY, documents=products, rank_fields=["title", "brand"], return_documents=True, top_n=2
    )
    rendered = [f"title: {p['title']}\nbrand: {p['brand']}" for p in products]
    want = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, rendered)
    assert [r.index for r in response.results] == expected_order(want)[:2]
    for result in response.results:
        assert result.relevance_score == pytest.approx(want[result.index], abs=1e-4)
        assert result.document is not None
        assert result.document.dict() == products[result.index]


def test_v1_objects_default_to_text_field(client: cohere.Client, card: CardReranker) -> None:
    products = [{"text": doc, "id": str(i)} for i, doc in enumerate(DOCS)]
    response = client.rerank(query=QUERY, documents=products, return_documents=True)
    want = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, DOCS)
    assert [r.index for r in response.results] == expected_order(want)
    assert all(r.document is not None and r.document.text == DOCS[r.index] for r in response.results)


def test_v1_top_n(client: cohere.Client, card: CardReranker) -> None:
    response = client.rerank(query=QUERY, documents=DOCS, top_n=3)
    want = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, DOCS)
    assert [r.index for r in response.results] == expected_order(want)[:3]
    bigger = client.rerank(query=QUERY, documents=DOCS, top_n=100)
    assert len(bigger.results) == len(DOCS)


def test_v1_long_document_is_chunked_and_scored_by_its_best_chunk(
    client: cohere.Client, card: CardReranker, model_dir: object
) -> None:
    """A document longer than the chunk size (128 tokens in tests) is split; its score is its best chunk's.
    With max_chunks_per_doc=1 only the first chunk counts."""
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    doc = (
        "Kitchen towel, cotton, pack of 4. " * 16
        + "Sony WH-1000XM5 wireless noise cancelling headphones. " * 10
    )
    offsets = tokenizer.encode(doc, add_special_tokens=False).offsets
    assert 256 < len(offsets) <= 384  # three chunks of 128 tokens
    cuts = [0, offsets[128][0], offsets[256][0], len(doc)]
    chunks = [doc[a:b] for a, b in itertools.pairwise(cuts)]
    chunk_scores = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, chunks)

    full = client.rerank(query=QUERY, documents=[doc])
    assert full.results[0].relevance_score == pytest.approx(max(chunk_scores), abs=1e-4)
    first = client.rerank(query=QUERY, documents=[doc], max_chunks_per_doc=1)
    assert first.results[0].relevance_score == pytest.approx(chunk_scores[0], abs=1e-4)


def test_v2_with_max_tokens_per_doc(
    client_v2: cohere.ClientV2, card: CardReranker, model_dir: object
) -> None:
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    docs = [*DOCS, "Bose QuietComfort Ultra headphones with spatial audio, " * 10]
    response = client_v2.rerank(model=SERVED_NAME, query=QUERY, documents=docs, max_tokens_per_doc=8, top_n=4)
    truncated = []
    for doc in docs:
        offsets = tokenizer.encode(doc, add_special_tokens=False).offsets
        truncated.append(doc[: offsets[8][0]] if len(offsets) > 8 else doc)
    want = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, truncated)
    assert [r.index for r in response.results] == expected_order(want)[:4]
    for result in response.results:
        assert result.relevance_score == pytest.approx(want[result.index], abs=1e-4)
    assert response.meta is not None
    assert response.meta.api_version is not None
    assert response.meta.api_version.version == "2"


def test_async_v2(gateway: Gateway, api_keys: Keys, card: CardReranker) -> None:
    async def run() -> list[cohere.V2RerankResponse]:
        async with cohere.AsyncClientV2(
            api_key=api_keys["shop-b"], base_url=gateway.url, max_retries=0
        ) as client:
            calls = [
                client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=4096)
                for _ in range(4)
            ]
            return list(await asyncio.gather(*calls))

    want = card.scores(PRODUCT_SEARCH_INSTRUCTION, QUERY, DOCS)
    for response in asyncio.run(run()):
        assert [r.index for r in response.results] == expected_order(want)
        assert [r.relevance_score for r in response.results] == pytest.approx(
            [want[i] for i in expected_order(want)], abs=1e-4
        )


def test_custom_instruction_reaches_the_model(client: cohere.Client, card: CardReranker) -> None:
    """`instruction` (our extension) reaches the model; the SDK forwards it via additional body params."""
    instruction = "Find accessories that work with the product in the query"
    response = client.rerank(
        query=QUERY,
        documents=DOCS,
        request_options={"additional_body_parameters": {"instruction": instruction}},
    )
    want = card.scores(instruction, QUERY, DOCS)
    for result in response.results:
        assert result.relevance_score == pytest.approx(want[result.index], abs=1e-4)


def test_models_list(gateway: Gateway, api_keys: Keys) -> None:
    import httpx  # noqa: PLC0415

    response = httpx.get(
        f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {api_keys['shop-a']}"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    ids = [model["id"] for model in body["data"]]
    assert ids[0] == SERVED_NAME
    assert "rerank-v3.5" in ids
