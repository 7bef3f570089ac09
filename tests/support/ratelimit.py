"""A limited key as a client sees it: the allowance the refund tests give their keys, one small rerank, and
what the RateLimit header says is left (tests/test_refund.py with a stand-in vLLM, tests/test_outage.py with
the real one stopped)."""

from __future__ import annotations

import httpx

LIMITS = "rpm=6 units_per_minute=6"  # 10 s to earn one back: nothing is, within a few requests


def remaining(response: httpx.Response) -> dict[str, int]:
    """The RateLimit header's remaining counts: `"rpm";r=29;t=2, "units";r=9;t=6`."""
    counts = {}
    for item in response.headers["ratelimit"].split(","):
        name, *params = item.strip().split(";")
        counts[name.strip('"')] = int(dict(p.split("=") for p in params)["r"])
    return counts


def post(url: str, key: str) -> httpx.Response:
    body = {"query": "trail shoes", "documents": ["Salomon Speedcross", "cast iron pan"]}
    return httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
