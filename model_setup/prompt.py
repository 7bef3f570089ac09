"""The Qwen3-Reranker prompt, as the model card builds it.

vLLM renders the same text from ``qwen3_reranker.jinja``; the gateway uses :func:`render` only to count
tokens, and the test suite proves both agree with the model card's transformers recipe token for token.
"""

from __future__ import annotations

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
PREFIX = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

# The model card's default; the template falls back to it when no instruction is passed.
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

# Our deployment default: shoppers type short, intent-laden queries and documents are product listings.
PRODUCT_SEARCH_INSTRUCTION = (
    "Given a shopper's product search query, judge whether the product listing is something the shopper "
    "wants to buy: it matches the product type, brand, attributes and constraints in the query"
)


def render(instruction: str, query: str, document: str) -> str:
    """Full prompt text for one (query, document) pair."""
    head, tail = around_document(instruction, query)
    return f"{head} {document}{tail}"


def around_document(instruction: str, query: str) -> tuple[str, str]:
    """The prompt on either side of the document: ``render(i, q, d) == f"{head} {d}{tail}"`` for every d."""
    return f"{PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n<Document>:", SUFFIX
