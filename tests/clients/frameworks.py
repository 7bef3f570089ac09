"""Run by tests/test_clients.py with the frameworks' own venv (scripts/install-frameworks.sh), never imported
by the suite: LangChain's, LlamaIndex's and Haystack's Cohere rerankers rank the same products through the
gateway, configured as their documentation says with nothing changed but the base URL and the key
(RERANK_BASE_URL, RERANK_KEY). Prints what each framework hands back to its caller, as one JSON object."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from haystack import Document as HaystackDocument
from haystack.utils import Secret
from haystack_integrations.components.rankers.cohere import CohereRanker
from langchain_cohere import CohereRerank as LangChainRerank
from langchain_core.documents import Document as LangChainDocument
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaIndexRerank

BASE_URL = os.environ["RERANK_BASE_URL"]
KEY = os.environ["RERANK_KEY"]
MODEL = "rerank-v3.5"
TOP = 3


def langchain(query: str, products: list[str]) -> dict[str, Any]:
    reranker = LangChainRerank(model=MODEL, top_n=TOP, base_url=BASE_URL, cohere_api_key=KEY)
    documents = [
        LangChainDocument(page_content=text, metadata={"sku": f"sku-{i}"}) for i, text in enumerate(products)
    ]
    compressed = reranker.compress_documents(documents, query)
    every = reranker.rerank(products, query, top_n=None)  # no top_n sent: every product back
    return {
        "top": [
            {"text": d.page_content, "score": d.metadata["relevance_score"], "sku": d.metadata["sku"]}
            for d in compressed
        ],
        "all": [{"index": r["index"], "score": r["relevance_score"]} for r in every],
    }


def llamaindex(query: str, products: list[str]) -> list[dict[str, Any]]:
    reranker = LlamaIndexRerank(model=MODEL, top_n=TOP, api_key=KEY, base_url=BASE_URL, max_retries=1)
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in products]
    return [
        {"text": n.node.get_content(), "score": n.score}
        for n in reranker.postprocess_nodes(nodes, query_str=query)
    ]


def haystack(query: str, products: list[str]) -> dict[str, list[dict[str, Any]]]:
    ranker = CohereRanker(model=MODEL, top_k=TOP, api_key=Secret.from_token(KEY), api_base_url=BASE_URL)
    documents = [HaystackDocument(content=text) for text in products]
    ran = ranker.run(query=query, documents=documents)["documents"]
    ran_async = asyncio.run(ranker.run_async(query=query, documents=documents))["documents"]
    return {
        "run": [{"text": d.content, "score": d.score} for d in ran],
        "run_async": [{"text": d.content, "score": d.score} for d in ran_async],
    }


def main() -> None:
    request = json.loads(sys.stdin.read())
    query, products = request["query"], request["products"]
    answers = {
        "langchain": langchain(query, products),
        "llamaindex": llamaindex(query, products),
        "haystack": haystack(query, products),
    }
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
