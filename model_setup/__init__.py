"""Model snapshot tooling and the one place that says how vLLM serves Qwen3-Reranker."""
