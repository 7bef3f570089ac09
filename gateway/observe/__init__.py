"""What operators see: Prometheus metrics per worker (metrics.py), the metrics port that sums the workers and
re-exports vLLM's own families (scrape.py), and W3C trace context (trace.py)."""
