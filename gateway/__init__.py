"""Cohere-compatible reranking gateway in front of vLLM."""
