"""product-rerank's gateway: Cohere-compatible reranking in front of vLLM.

The map, described here only (tests/test_layout.py checks that it names every module). In the order a
request meets them:

  app.py           the factory: builds the parts, then stacks the layers below, outermost first
  inflight.py      requests in progress, so that shutdown waits for the last one
  requestlog.py    the log line, X-Request-ID and Server-Timing around record.py, the per-request record
  requestcap.py    requests in progress per worker; one more is a 503 at once
  bodydeadline.py  a deadline for the request body (408)
  unreadbody.py    an answer given before the body was read drains the rest or says Connection: close
  framing.py       Host, the request target's and the head's size, Content-Encoding
  fastpath.py      the rerank routes straight from ASGI, and the body reader both paths use
  routes.py        the API's contracts (v1, v2, /rerank, models, health, ready, docs): decoded, shaped
  rerank.py        request semantics: validate, render, fit, score (one model, or a cascade's two), order
  models.py        the models served, by name and alias: each one's vLLM, budget, cache and bound
  neutralise.py    control tokens in a shopper's text stay text
  tokens.py        token budgets, truncation and chunking
  limits.py        per-key rate limits (limits.lua and refund.lua run in Redis)
  cache.py         the pair-score cache (in-process, and a shared tier in Redis)
  shedding.py      pairs in flight to vLLM, then a short priority queue
  upstream.py      the vLLM client and its failure table, on http1.py (a small pooled HTTP/1.1 client)
  fusion.py        blending a shop's numeric signals into the order (an extension)

Beside the path: errors.py (errors on the wire: kinds, statuses, the Cohere shape, the raw writer),
layers.py (the shape the layers share), schemas.py (wire types), settings.py, keys.py and keyswatch.py
(keys and their reload), logconfig.py, asgi.py (each worker's entry), __main__.py (serve, check, keygen),
workers.py and workerstate.py (the worker supervisor, and what /ready and the metrics read of it).
Subpackages: observe/ (metrics, the metrics port, trace context), apidoc/ (the OpenAPI document and page);
clients of the API: demo/ (the try-it page), eval/ (rerank-eval).
"""

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("product-rerank")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
