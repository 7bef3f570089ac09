"""``rerank-eval``: measures relevance on labelled product searches, and whether a candidate deployment
(smaller, quantised, another instruction) ranks like a reference one (the agreement gate, labels or a
query log), a client of any Cohere-compatible rerank API (this gateway, Cohere's, another model behind
another gateway) through the Cohere SDK.

It imports nothing of the gateway's server code. Map: ``__main__`` the command, ``dataset`` our JSONL
(labelled, or a query log) and the ESCI layout, ``client`` one endpoint through the SDK, ``store``
answers kept on disk (resumable), ``runner`` concurrency and progress, ``metrics`` ranx's metrics and
paired tests, ``cost`` the tokens each model scored and the GPU work they stand for, ``report`` the
table, JSON, Markdown and plots; the gate: ``bounds`` its measures and the command line's bounds,
``agreement`` the measures per query, ``gate`` the verdict and its report; ``data/smoke.jsonl`` the
committed smoke set.
"""
