"""``rerank-eval``: measures relevance on labelled product searches, a client of any Cohere-compatible
rerank API (this gateway, Cohere's, another model behind another gateway) through the Cohere SDK.

It imports nothing of the gateway's server code. Map: ``__main__`` the command, ``dataset`` our JSONL and
the ESCI layout, ``client`` one endpoint through the SDK, ``store`` answers kept on disk (resumable),
``runner`` concurrency and progress, ``metrics`` ranx's metrics and paired tests, ``report`` the table,
JSON, Markdown and plots; ``data/smoke.jsonl`` the committed smoke set.
"""
