"""The tools shops plug a reranker into, unchanged but for the base URL and the key, against the real stack:
LangChain's, LlamaIndex's and Haystack's Cohere rerankers (their own venv) and the Cohere TypeScript SDK
(the system's node). Each must rank the products exactly as the gateway's own v2 answer does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.client_tools import client_env, frameworks_python, node, node_project, run
from tests.support.procs import ROOT
from tests.support.stack import Gateway, Keys

QUERY = "noise cancelling headphones for travel"
PRODUCTS = [
    "Stainless steel chef's knife, 8 inch",
    "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones",
    "USB-C charging cable, 2 m",
    "Bose QuietComfort 45 Bluetooth headphones",
    "Travel neck pillow, memory foam",
    "Apple AirPods Pro (2nd generation)",
    "无线降噪耳机 蓝牙5.3",
]
TOP = 3  # what tests/clients/frameworks.py asks each framework for


@pytest.fixture(scope="module")
def expected(gateway: Gateway, api_keys: Keys) -> list[tuple[int, float]]:
    """The gateway's own v2 ranking of the products: (index, score), best first."""
    response = httpx.post(
        f"{gateway.url}/v2/rerank",
        json={"model": "rerank-v3.5", "query": QUERY, "documents": PRODUCTS},
        headers={"Authorization": f"Bearer {api_keys['shop-a']}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return [(r["index"], r["relevance_score"]) for r in response.json()["results"]]


@pytest.fixture(scope="module")
def frameworks(gateway: Gateway, api_keys: Keys) -> dict[str, Any]:
    """What each framework handed back, from one run of tests/clients/frameworks.py in their venv."""
    out = run(
        [frameworks_python(), str(ROOT / "tests" / "clients" / "frameworks.py")],
        client_env(gateway.url, api_keys["shop-a"]),
        stdin=json.dumps({"query": QUERY, "products": PRODUCTS}),
    )
    answers: dict[str, Any] = json.loads(out)
    return answers


def as_ranked(items: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(PRODUCTS.index(item["text"]), item["score"]) for item in items]


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [index for index, _ in got] == [index for index, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-6)


def test_langchain_cohere_rerank(frameworks: dict[str, Any], expected: list[tuple[int, float]]) -> None:
    """`CohereRerank.compress_documents` keeps the best three documents, their metadata, and adds the score;
    `rerank(top_n=None)` sends no top_n and gets every product back."""
    top = frameworks["langchain"]["top"]
    assert_same_ranking(as_ranked(top), expected[:TOP])
    assert [item["sku"] for item in top] == [f"sku-{index}" for index, _ in expected[:TOP]]
    every = [(item["index"], item["score"]) for item in frameworks["langchain"]["all"]]
    assert_same_ranking(every, expected)
    assert len(every) == len(PRODUCTS)


def test_llamaindex_cohere_rerank(frameworks: dict[str, Any], expected: list[tuple[int, float]]) -> None:
    assert_same_ranking(as_ranked(frameworks["llamaindex"]), expected[:TOP])


def test_haystack_cohere_ranker(frameworks: dict[str, Any], expected: list[tuple[int, float]]) -> None:
    """Haystack sends max_tokens_per_doc=4096 with every call, synchronously and asynchronously."""
    assert_same_ranking(as_ranked(frameworks["haystack"]["run"]), expected[:TOP])
    assert_same_ranking(as_ranked(frameworks["haystack"]["run_async"]), expected[:TOP])


def test_the_typescript_sdk_ranks_and_parses(
    gateway: Gateway, api_keys: Keys, expected: list[tuple[int, float]], tmp_path: Path
) -> None:
    """cohere-ai under the system's node: v2 rerank parsed into the SDK's camelCase objects (meta included),
    and a bad request surfacing as the SDK's error with our status and body."""
    script = node_project(tmp_path) / "cohere_v2.js"
    script.write_text((ROOT / "tests" / "clients" / "cohere_v2.js").read_text())
    out = run(
        [node(), str(script)],
        client_env(gateway.url, api_keys["shop-a"]),
        stdin=json.dumps({"query": QUERY, "products": PRODUCTS}),
    )
    answer = json.loads(out)
    response = answer["response"]
    assert_same_ranking([(r["index"], r["relevanceScore"]) for r in response["results"]], expected)
    assert response["meta"]["apiVersion"] == {"version": "2"}
    assert response["meta"]["billedUnits"] == {"searchUnits": 1}
    assert response["meta"]["tokens"]["inputTokens"] > 0
    assert answer["refused"]["statusCode"] == 400
    assert answer["refused"]["body"]["message"] == "query must not be empty"
