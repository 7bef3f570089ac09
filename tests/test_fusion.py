"""Score fusion in the running gateway (real vLLM, tiny model): it reorders, never rescores. The Cohere SDK
sends it as an extra body parameter and reads `fused_score` beside the model's `relevance_score`."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest
from cohere.core.api_error import ApiError as CohereApiError
from cohere.core.request_options import RequestOptions

from gateway import keys as keylib
from tests.support.procs import Service
from tests.support.stack import GatewayStarter, Keys, Vllm

QUERY = "breathable summer running shoes"
# The shop's signals run against the index order on purpose, so fusion has something to move.
PRODUCTS: list[dict[str, Any]] = [
    {"title": "Pegasus 41 road running shoes, engineered mesh", "ctr": 0.031, "conversion_rate": 0.004},
    {"title": "Classic clog sandals", "ctr": 0.052, "conversion_rate": 0.011},
    {"title": "Cloudmonster mesh running shoes", "ctr": 0.018, "conversion_rate": 0.020},
    {"title": "Waterproof leather chukka boots", "ctr": 0.007, "conversion_rate": 0.002},
    {"title": "Ultraboost Light running shoes, Primeknit upper", "ctr": 0.044, "conversion_rate": 0.009},
    {"title": "Dri-FIT running socks, 3 pairs", "ctr": 0.025, "conversion_rate": 0.015},
    {"title": "Canvas high-top sneakers", "ctr": 0.012, "conversion_rate": 0.006},
]
RANK: dict[str, Any] = {"rank_fields": ["title"]}


def fused(
    client: cohere.Client, fusion: dict[str, Any] | None, top_n: int | None = None
) -> cohere.RerankResponse:
    extra: RequestOptions = {"additional_body_parameters": {"fusion": fusion}} if fusion is not None else {}
    return client.rerank(
        query=QUERY, documents=PRODUCTS, rank_fields=["title"], top_n=top_n, request_options=extra
    )


def fused_scores(response: cohere.RerankResponse) -> list[float]:
    return [float((r.model_extra or {})["fused_score"]) for r in response.results]


def by_field(field: str) -> list[int]:
    return sorted(range(len(PRODUCTS)), key=lambda i: -PRODUCTS[i][field])


def test_zero_weights_keep_the_models_order_and_scores(client: cohere.Client) -> None:
    plain = fused(client, None)
    zero = fused(client, {"fields": {"ctr": 0.0, "conversion_rate": 0.0}})
    assert [r.index for r in zero.results] == [r.index for r in plain.results]
    assert [r.relevance_score for r in zero.results] == [r.relevance_score for r in plain.results]
    assert all("fused_score" not in (r.model_extra or {}) for r in plain.results), "absent unless asked"
    assert len(fused_scores(zero)) == len(PRODUCTS)


def test_a_dominant_weight_orders_by_the_field_and_keeps_relevance_scores(client: cohere.Client) -> None:
    plain = {r.index: r.relevance_score for r in fused(client, None).results}
    for field in ("ctr", "conversion_rate"):
        response = fused(client, {"fields": {field: 1.0}})
        assert [r.index for r in response.results] == by_field(field)
        assert {r.index: r.relevance_score for r in response.results} == plain, "relevance stays the model's"
        assert fused_scores(response)[0] == 1.0, "min-max: the best value scales to 1"


def test_a_blend_is_the_documented_formula_and_top_n_cuts_its_order(client: cohere.Client) -> None:
    weights = {"ctr": 0.3, "conversion_rate": 0.2}
    full = fused(client, {"fields": weights})
    scores = {r.index: r.relevance_score for r in full.results}

    def minmax(values: list[float]) -> list[float]:
        return [(v - min(values)) / (max(values) - min(values)) for v in values]

    model = minmax([scores[i] for i in range(len(PRODUCTS))])
    ctr = minmax([p["ctr"] for p in PRODUCTS])
    cvr = minmax([p["conversion_rate"] for p in PRODUCTS])
    want = [0.5 * model[i] + 0.3 * ctr[i] + 0.2 * cvr[i] for i in range(len(PRODUCTS))]
    assert fused_scores(full) == pytest.approx([want[r.index] for r in full.results], abs=1e-9)
    assert fused_scores(full) == sorted(fused_scores(full), reverse=True)
    top = fused(client, {"fields": weights}, top_n=3)
    assert [r.index for r in top.results] == [r.index for r in full.results[:3]]
    assert top.meta is not None
    assert full.meta is not None
    assert top.meta.billed_units == full.meta.billed_units, "fusion costs nothing extra"


BAD_FUSION: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "missing field",
        "/v1/rerank",
        {"documents": [*PRODUCTS[:2], {"title": "new product"}], "fusion": {"fields": {"ctr": 0.2}}},
        "documents[2] has no field 'ctr' named in fusion",
    ),
    (
        "text value",
        "/v1/rerank",
        {"documents": [{"title": "a", "ctr": "12%"}], "fusion": {"fields": {"ctr": 0.2}}},
        "documents[0].ctr is a string; fusion needs a number",
    ),
    (
        "string documents",
        "/rerank",
        {"documents": ["a", "b"], "fusion": {"fields": {"ctr": 0.2}}},
        "documents[0] is a string; fusion needs object documents with field 'ctr'",
    ),
    (
        "weights over one",
        "/v1/rerank",
        {"documents": PRODUCTS, "fusion": {"fields": {"ctr": 0.8, "conversion_rate": 0.5}}},
        "fusion weights add up to 1.3",
    ),
    (
        "misspelt option",
        "/v1/rerank",
        {"documents": PRODUCTS, "fusion": {"weights": {"ctr": 0.2}}},
        "unknown field `weights`",
    ),
    (
        "v2",
        "/v2/rerank",
        {"model": "rerank-v3.5", "documents": ["a"], "fusion": {"fields": {"ctr": 0.2}}},
        "fusion needs object documents with numeric fields; use /v1/rerank",
    ),
]


@pytest.mark.parametrize(("name", "route", "body", "message"), BAD_FUSION, ids=[c[0] for c in BAD_FUSION])
def test_bad_fusion_is_a_400_in_coheres_shape(
    http: httpx.Client, name: str, route: str, body: dict[str, Any], message: str
) -> None:
    response = http.post(route, json={"query": QUERY, **RANK, **body})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"id", "message"}
    assert message in response.json()["message"]


def test_the_sdk_sees_a_bad_field_as_bad_request(client: cohere.Client) -> None:
    with pytest.raises(CohereApiError) as raised:
        fused(client, {"fields": {"popularity": 0.5}})
    assert raised.value.status_code == 400
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["message"] == "documents[0] has no field 'popularity' named in fusion"


# --- a key's default fusion ---------------------------------------------------------------------------


class Running:
    def __init__(self, service: Service, url: str, keys: Keys) -> None:
        self.service, self.url, self.keys = service, url, keys

    def post(self, key_id: str, body: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any]]:
        request_id = f"fusion-{uuid.uuid4().hex}"
        headers = {"Authorization": f"Bearer {self.keys[key_id]}", "X-Request-ID": request_id}
        response = httpx.post(f"{self.url}/v1/rerank", json=body, headers=headers, timeout=60)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in self.service.log_text().splitlines():
                if request_id in line and (record := json.loads(line)).get("event") == "request":
                    return response, dict(record)
            time.sleep(0.05)
        raise AssertionError(f"no log line for {request_id}")


@pytest.fixture(scope="module")
def with_defaults(vllm: Vllm, artifacts: Path, start_module_gateway: GatewayStarter) -> Running:
    """A gateway whose key `popular` ranks by ctr alone unless a request says otherwise, score cache on."""
    raw: dict[str, str] = {}
    lines = []
    for key_id, options in (("popular", "fusion=ctr:1"), ("plain", "")):
        raw[key_id], line = keylib.generate(key_id)
        lines.append(f"{line} {options}".strip())
    file = artifacts / "fusion-keys"
    file.write_text("\n".join(lines) + "\n")
    keys = Keys(raw, file)
    gateway = start_module_gateway(
        "fusion", vllm.url, keys=keys, RERANK_SCORE_CACHE_MAX_BYTES=str(1024 * 1024)
    )
    return Running(gateway.service, gateway.url, keys)


def test_a_keys_default_fusion_applies_to_its_object_requests_only(with_defaults: Running) -> None:
    body = {"query": f"{QUERY} {uuid.uuid4().hex[:6]}", "documents": PRODUCTS, **RANK}
    plain, line = with_defaults.post("plain", body)
    assert line["cache_misses"] == len(PRODUCTS)
    default, line = with_defaults.post("popular", body)
    assert [r["index"] for r in default.json()["results"]] == by_field("ctr")
    assert line["cache_misses"] == len(PRODUCTS), "the cache is per key; fusion does not change its keys"
    again, line = with_defaults.post("popular", body)
    assert line["cache_hits"] == len(PRODUCTS), "fusion happens after scoring: cached scores serve it"
    assert again.json()["results"] == default.json()["results"]
    scores = {r["index"]: r["relevance_score"] for r in plain.json()["results"]}
    assert {r["index"]: r["relevance_score"] for r in default.json()["results"]} == scores
    off, _ = with_defaults.post("popular", {**body, "fusion": {"fields": {}}})
    assert off.json()["results"] == plain.json()["results"], "empty fields turn the default off"
    strings, _ = with_defaults.post("popular", {"query": QUERY, "documents": ["a", "b"]})
    assert strings.status_code == 200
    assert all("fused_score" not in r for r in strings.json()["results"])
    assert plain.json()["meta"] == default.json()["meta"]


def test_jina_route_blends_too_and_score_threshold_still_reads_the_models_score(http: httpx.Client) -> None:
    """`/rerank` shares v1's contract, fusion included; `score_threshold` filters on `relevance_score`
    after `top_n` has cut the blended order."""
    body = {"query": QUERY, "documents": PRODUCTS, **RANK, "fusion": {"fields": {"ctr": 1.0}}}
    full = http.post("/rerank", json=body).json()["results"]
    assert [r["index"] for r in full] == by_field("ctr")
    assert all("fused_score" in r and r["document"] == PRODUCTS[r["index"]] for r in full)
    cut = sorted(r["relevance_score"] for r in full[:4])[1]  # the second lowest model score of the top 4
    kept = http.post("/rerank", json={**body, "top_n": 4, "score_threshold": cut}).json()["results"]
    assert [r["index"] for r in kept] == [r["index"] for r in full[:4] if r["relevance_score"] >= cut]
    assert len(kept) == 3
