"""What readers other than the bare Cohere SDK find in our answers: Jina/vLLM-style `/rerank` clients (Dify's
OpenAI-compatible provider, LiteLLM's hosted_vllm), OpenSearch's Cohere post-processor, the Cohere SDK's
typed ``meta.tokens``, and the extra fields those clients send. Real vLLM, the session gateway (cache off)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest
from tokenizers import Tokenizer

from gateway.rerank import Ranking
from gateway.routes import _ranked
from tests.support.stack import SERVED_NAME, Gateway, Keys, Vllm, vllm_score

QUERY = "wireless noise cancelling headphones"
PRODUCTS = [
    "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones, black",
    "Stainless steel chef's knife, 8 inch",
    "Bose QuietComfort 45 Bluetooth headphones",
    "USB-C charging cable, 2 m",
    "无线降噪耳机 蓝牙5.3",
    "Stainless steel chef's knife, 8 inch",  # listed twice: two prompts, counted twice
]
ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank")


@pytest.fixture
def http(http: httpx.Client) -> httpx.Client:
    """conftest's client with the 120 s timeout this module has always given its requests (not 60 s)."""
    http.timeout = httpx.Timeout(120)
    return http


def vllm_prompt_tokens(vllm: Vllm, texts: list[str]) -> int:
    """What vLLM itself counts for these pairs, asked directly."""
    tokens: int = vllm_score(vllm.url, SERVED_NAME, QUERY, texts)["usage"]["prompt_tokens"]
    return tokens


def rerank(http: httpx.Client, route: str, **fields: Any) -> httpx.Response:
    body = {"query": QUERY, "documents": PRODUCTS, **fields}
    if route == "/v2/rerank":
        body.setdefault("model", "rerank-v3.5")
    response = http.post(route, json=body)
    assert response.status_code == 200, response.text
    return response


def test_meta_tokens_are_the_prompt_tokens_vllm_counted(http: httpx.Client, vllm: Vllm) -> None:
    """Every route reports, in ``meta.tokens.input_tokens``, the tokens vLLM counted for the prompts it
    scored: a repeated product twice; `/rerank` also as ``usage`` (total = prompt: a reranker writes none)."""
    want = vllm_prompt_tokens(vllm, PRODUCTS)
    assert want > len(PRODUCTS) * 50, "each prompt carries the instruction and the template"
    for route in ROUTES:
        meta = rerank(http, route).json()["meta"]
        assert meta["tokens"] == {"input_tokens": want, "by_model": {SERVED_NAME: want}}, route
        assert meta["billed_units"] == {"search_units": 1}
    usage = rerank(http, "/rerank").json()["usage"]
    assert usage == {"prompt_tokens": want, "total_tokens": want}


def test_a_chunked_v1_document_counts_every_chunk(http: httpx.Client, vllm: Vllm, model_dir: Path) -> None:
    """v1 splits a long product into chunks (128 tokens in tests); each chunk is a prompt vLLM counts."""
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    doc = (
        "Kitchen towel, cotton, pack of 4. " * 16
        + "Sony WH-1000XM5 wireless noise cancelling headphones. " * 10
    )
    offsets = tokenizer.encode(doc, add_special_tokens=False).offsets
    cuts = [0, offsets[128][0], offsets[256][0], len(doc)]
    chunks = [doc[a:b] for a, b in itertools.pairwise(cuts)]
    response = rerank(http, "/v1/rerank", documents=[doc, PRODUCTS[0]])
    want = vllm_prompt_tokens(vllm, [*chunks, PRODUCTS[0]])
    assert response.json()["meta"]["tokens"] == {"input_tokens": want, "by_model": {SERVED_NAME: want}}


def test_the_cohere_sdks_typed_meta_carries_tokens(gateway: Gateway, api_keys: Keys, vllm: Vllm) -> None:
    want = vllm_prompt_tokens(vllm, PRODUCTS)
    with cohere.ClientV2(api_key=api_keys["shop-a"], base_url=gateway.url, max_retries=0) as v2:
        response = v2.rerank(model="rerank-v3.5", query=QUERY, documents=PRODUCTS)
    assert response.meta is not None
    assert response.meta.tokens is not None
    assert response.meta.tokens.input_tokens == want
    with cohere.Client(api_key=api_keys["shop-a"], base_url=gateway.url, max_retries=0) as v1:
        old = v1.rerank(query=QUERY, documents=PRODUCTS)
    assert old.meta is not None
    assert old.meta.tokens is not None
    assert old.meta.tokens.input_tokens == want


def test_rerank_route_answers_as_jina_and_vllm_do(http: httpx.Client) -> None:
    """`/rerank`: every document back, ranked, each with its ``document``; ``model`` names the model asked for
    (ours when none was); same scores and order as v1; documents left out when the client says so."""
    v1 = rerank(http, "/v1/rerank").json()
    answer = rerank(http, "/rerank")
    body = answer.json()
    assert list(body) == ["id", "model", "results", "usage", "meta"]
    assert body["id"] == answer.headers["x-request-id"]
    assert body["model"] == SERVED_NAME
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == [
        (r["index"], r["relevance_score"]) for r in v1["results"]
    ]
    assert len(body["results"]) == len(PRODUCTS), "no top_n: every document"
    assert all(r["document"] == {"text": PRODUCTS[r["index"]]} for r in body["results"])

    assert rerank(http, "/rerank", model="rerank-v3.5", top_n=2).json()["model"] == "rerank-v3.5"
    bare = rerank(http, "/rerank", return_documents=False).json()
    assert all(set(r) == {"index", "relevance_score"} for r in bare["results"])

    products = [{"title": "Sony WH-1000XM5", "sku": "S-1"}, {"title": "Chef's knife", "sku": "Z-9"}]
    objects = rerank(http, "/rerank", documents=products, rank_fields=["title"]).json()
    assert all(r["document"] == products[r["index"]] for r in objects["results"]), "objects come back whole"


def dify_parse(answer: dict[str, Any], docs: list[str]) -> tuple[list[tuple[int, str, float]], int]:
    """How Dify's OpenAI-compatible rerank provider reads a `/rerank` answer: each result's index, its text
    from ``document`` (a ``{"text": ...}`` object; the sent text if absent), its score min-max normalised;
    and the usage it records."""
    scores = [result["relevance_score"] for result in answer["results"]]
    low, span = min(scores), (max(scores) - min(scores)) or 1.0
    parsed = []
    for result in answer["results"]:
        document = result.get("document") or {}
        text = document.get("text", docs[result["index"]]) if isinstance(document, dict) else document
        parsed.append((result["index"], text, (result["relevance_score"] - low) / span))
    return parsed, answer["usage"]["total_tokens"]


def test_a_dify_style_client_reads_text_and_usage(gateway: Gateway, api_keys: Keys, vllm: Vllm) -> None:
    """The request Dify sends (``top_n`` null, ``return_documents`` true, the model name the user typed, the
    body as a JSON string) and the way it parses the answer."""
    data = {
        "model": "rerank-multilingual-v3.0",
        "query": QUERY,
        "documents": PRODUCTS,
        "top_n": None,
        "return_documents": True,
    }
    response = httpx.post(
        f"{gateway.url}/rerank",
        headers={"Authorization": f"Bearer {api_keys['shop-a']}", "Content-Type": "application/json"},
        content=json.dumps(data),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    parsed, total_tokens = dify_parse(response.json(), ["(not returned)"] * len(PRODUCTS))
    assert [text for _, text, _ in parsed] == [PRODUCTS[index] for index, _, _ in parsed]
    assert sorted(index for index, _, _ in parsed) == list(range(len(PRODUCTS)))
    assert parsed[0][2] == 1.0
    assert total_tokens == vllm_prompt_tokens(vllm, PRODUCTS)


def test_score_threshold_leaves_out_what_scores_below_it(http: httpx.Client) -> None:
    """Dify's ``score_threshold``, on every route: the ranked results down to the threshold, after top_n;
    a threshold nothing reaches is an empty list, not an error."""
    everything = rerank(http, "/v2/rerank").json()["results"]
    threshold = everything[len(everything) // 2]["relevance_score"]
    above = [r for r in everything if r["relevance_score"] >= threshold]
    assert 0 < len(above) < len(everything)
    for route in ROUTES:
        kept = rerank(http, route, score_threshold=threshold, return_documents=False).json()["results"]
        assert kept == above, route
        assert (
            rerank(http, route, score_threshold=threshold, top_n=1).json()["results"][0]["index"]
            == above[0]["index"]
        )
        assert rerank(http, route, score_threshold=2).json()["results"] == []
        assert len(rerank(http, route, score_threshold=0).json()["results"]) == len(PRODUCTS), (
            "an integer is fine"
        )
    wrong = http.post("/rerank", json={"query": QUERY, "documents": PRODUCTS, "score_threshold": "high"})
    assert wrong.status_code == 400
    assert "score_threshold" in wrong.json()["message"]


EXTRAS: dict[str, dict[str, Any]] = {
    "/v1/rerank": {"truncate_prompt_tokens": 64, "max_tokens_per_query": 16, "user": "dify-user"},
    "/v2/rerank": {"truncate_prompt_tokens": 64, "max_tokens_per_query": 16, "return_documents": True},
    "/rerank": {"truncate_prompt_tokens": 64, "max_tokens_per_query": 16, "user": "dify-user"},
}


@pytest.mark.parametrize("route", ROUTES)
def test_fields_other_clients_send_are_accepted_and_ignored(http: httpx.Client, route: str) -> None:
    """LiteLLM's ``truncate_prompt_tokens``, vLLM's ``max_tokens_per_query`` and the like change nothing."""
    plain = rerank(http, route).json()
    extra = rerank(http, route, **EXTRAS[route]).json()
    assert extra["results"] == plain["results"]
    assert extra["meta"] == plain["meta"]


def test_max_tokens_per_doc_on_rerank_truncates_as_v2_does(http: httpx.Client) -> None:
    """vLLM's `/rerank` takes ``max_tokens_per_doc`` and truncates; so does ours, exactly as v2 does."""
    docs = [*PRODUCTS[:3], "Bose QuietComfort Ultra headphones with spatial audio, " * 10]
    v2 = rerank(http, "/v2/rerank", documents=docs, max_tokens_per_doc=8).json()
    jina = rerank(http, "/rerank", documents=docs, max_tokens_per_doc=8, return_documents=False).json()
    assert jina["results"] == v2["results"]
    assert jina["meta"]["tokens"] == v2["meta"]["tokens"]
    for fields, message in (
        ({"max_tokens_per_doc": 0}, "max_tokens_per_doc must be at least 1"),
        ({"max_tokens_per_doc": 8, "max_chunks_per_doc": 2}, "not both"),
    ):
        refused = http.post("/rerank", json={"query": QUERY, "documents": docs, **fields})
        assert refused.status_code == 400
        assert message in refused.json()["message"]


SCORE = re.compile(rb'"relevance_score":([^,}]+)')


def test_scores_are_json_floats_on_the_wire(http: httpx.Client) -> None:
    """OpenSearch's Cohere post-processor casts each score to Double: an integer 0 or 1 would break it."""
    for route in ROUTES:
        raw = SCORE.findall(rerank(http, route).content)
        assert len(raw) == len(PRODUCTS)
        assert all(b"." in value or b"e" in value for value in raw), raw


@pytest.mark.unit
def test_even_exact_zero_and_one_are_written_as_floats() -> None:
    """The encoder's side of the same promise, for the scores a real model rarely gives: 1, 0, and an int
    should any source ever hand one over."""
    ranking = Ranking(
        order=[0, 1, 2], scores=[1.0, 0.0, 1], search_units=1, input_tokens=3, tokens_by_model={"m": 3}
    )
    body = _ranked(ranking, "2", None)
    assert SCORE.findall(body) == [b"1.0", b"0.0", b"1.0"]
