"""product-rerank's gateway: Cohere-compatible reranking in front of vLLM.

Request path: app.py (routes, wiring) -> fastpath.py (exact rerank routes from ASGI) -> rerank.py (semantics)
-> tokens.py, cache.py, upstream.py (http1.py), then fusion.py (blending shop signals, an extension). Beside
it: keys.py, limits.py, errors.py (the error table), schemas.py (wire types), requestlog.py (log line,
Server-Timing), drain.py, settings.py. Subpackages: observe/ (metrics, the metrics port, trace context),
apidoc/ (OpenAPI document and page); clients of the API: demo/ (the try-it page), eval/ (rerank-eval).
"""

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("product-rerank")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
