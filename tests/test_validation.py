"""Bad input gets a clear 4xx in Cohere's error shape: through the SDK where it can send it, raw HTTP
where it cannot. Nothing is a 500, nothing hangs, and the gateway keeps serving afterwards."""

from __future__ import annotations

import json
from typing import Any

import cohere
import httpx
import pytest
from cohere.core.api_error import ApiError as CohereApiError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.stack import Gateway, Keys

DOCS = ["red running shoes", "blue denim jacket"]


def assert_cohere_error(error: CohereApiError, status: int, message: str) -> None:
    assert error.status_code == status
    assert isinstance(error.body, dict)
    assert set(error.body) == {"id", "message"}
    assert message in error.body["message"]


def assert_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"id", "message"}
    assert message in body["message"]
    assert body["id"] == response.headers["x-request-id"]


SDK_BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("empty query", {"query": "", "documents": DOCS}, "query must not be empty"),
    ("whitespace query", {"query": " \n\t ", "documents": DOCS}, "query must not be empty"),
    ("empty documents", {"query": "shoes", "documents": []}, "documents must not be empty"),
    ("text-less document", {"query": "shoes", "documents": [{"title": "x"}]}, "documents[0] has no 'text'"),
    (
        "rank_fields names a missing field",
        {
            "query": "shoes",
            "documents": [{"text": "a", "brand": "b"}, {"text": "c"}],
            "rank_fields": ["brand"],
        },
        "documents[1] has no field 'brand'",
    ),
    ("top_n zero", {"query": "shoes", "documents": DOCS, "top_n": 0}, "top_n must be at least 1"),
    ("top_n negative", {"query": "shoes", "documents": DOCS, "top_n": -3}, "top_n must be at least 1"),
    (
        "too many documents",
        {"query": "shoes", "documents": ["x"] * 1001},
        "too many documents: 1001; the limit is 1000",
    ),
    (
        "query too long",
        {"query": "q" * 4001, "documents": DOCS},
        "query is 4001 characters; the limit is 4000",
    ),
    (
        "query too many tokens",
        {"query": "9" * 1500, "documents": DOCS},
        "query is 1500 tokens; the limit is 1024",
    ),
    (
        "document too long",
        {"query": "shoes", "documents": ["ok", "d" * 100_001]},
        "documents[1] is 100001 characters; the limit is 100000",
    ),
    (
        "max_chunks_per_doc zero",
        {"query": "s", "documents": DOCS, "max_chunks_per_doc": 0},
        "max_chunks_per_doc",
    ),
    ("max_chunks_per_doc huge", {"query": "s", "documents": DOCS, "max_chunks_per_doc": 500}, "at most 10"),
    ("rank_fields empty", {"query": "s", "documents": [{"text": "a"}], "rank_fields": []}, "rank_fields"),
]


@pytest.mark.parametrize(
    ("case", "kwargs", "message"), SDK_BAD_REQUESTS, ids=[c[0] for c in SDK_BAD_REQUESTS]
)
def test_sdk_bad_request(client: cohere.Client, case: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(cohere.BadRequestError) as raised:
        client.rerank(**kwargs)
    assert_cohere_error(raised.value, 400, message)


def test_sdk_unknown_model_is_404(client: cohere.Client) -> None:
    with pytest.raises(cohere.NotFoundError) as raised:
        client.rerank(query="shoes", documents=DOCS, model="rerank-english-v2.0")
    assert_cohere_error(raised.value, 404, "model 'rerank-english-v2.0' not found")


def test_sdk_wrong_key_is_401(gateway: Gateway) -> None:
    with (
        cohere.Client(api_key="rk_not-a-real-key", base_url=gateway.url, max_retries=0) as client,
        pytest.raises(cohere.UnauthorizedError) as raised,
    ):
        client.rerank(query="shoes", documents=DOCS)
    assert_cohere_error(raised.value, 401, "invalid api token")


def test_sdk_v2_bad_requests(gateway: Gateway, api_keys: Keys) -> None:
    with cohere.ClientV2(api_key=api_keys["shop-a"], base_url=gateway.url, max_retries=0) as client:
        with pytest.raises(cohere.BadRequestError) as raised:
            client.rerank(model="rerank-v3.5", query="shoes", documents=DOCS, max_tokens_per_doc=0)
        assert_cohere_error(raised.value, 400, "max_tokens_per_doc must be at least 1")
        with pytest.raises(cohere.BadRequestError) as raised:
            client.rerank(
                model="rerank-v3.5",
                query="shoes",
                documents=DOCS,
                relevant_spans=cohere.RerankRelevantSpans(mode="enabled"),
            )
        assert_cohere_error(raised.value, 400, "relevant_spans is not supported")
        with pytest.raises(cohere.NotFoundError):
            client.rerank(model="gpt-4", query="shoes", documents=DOCS)


def test_missing_key_is_401(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/rerank", json={"query": "shoes", "documents": DOCS})
    assert_error(response, 401, "no api key supplied")
    response = httpx.post(
        f"{gateway.url}/v1/rerank",
        json={"query": "s", "documents": DOCS},
        headers={"Authorization": "Basic eA=="},
    )
    assert_error(response, 401, "invalid api token")


RAW_BAD_REQUESTS: list[tuple[str, str, bytes, str, int, str]] = [
    (
        "malformed JSON",
        "/v1/rerank",
        b'{"query": "s", "documents": [',
        "application/json",
        400,
        "not valid JSON",
    ),
    ("not an object", "/v1/rerank", b"[1, 2]", "application/json", 400, "invalid request"),
    (
        "non-string document",
        "/v1/rerank",
        b'{"query": "s", "documents": ["a", 42]}',
        "application/json",
        400,
        "$.documents[1]",
    ),
    (
        "query not a string",
        "/v1/rerank",
        b'{"query": 5, "documents": ["a"]}',
        "application/json",
        400,
        "$.query",
    ),
    (
        "missing query",
        "/v2/rerank",
        b'{"model": "rerank-v3.5", "documents": ["a"]}',
        "application/json",
        400,
        "query",
    ),
    (
        "v2 object document",
        "/v2/rerank",
        b'{"model": "rerank-v3.5", "query": "s", "documents": [{"text": "a"}]}',
        "application/json",
        400,
        "$.documents[0]",
    ),
    (
        "top_n as string",
        "/v1/rerank",
        b'{"query": "s", "documents": ["a"], "top_n": "3"}',
        "application/json",
        400,
        "$.top_n",
    ),
    (
        "wrong content type",
        "/v1/rerank",
        b'{"query": "s", "documents": ["a"]}',
        "text/plain",
        415,
        "content-type must be application/json",
    ),
    ("no content type", "/rerank", b'{"query": "s", "documents": ["a"]}', "", 415, "content-type"),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "content_type", "status", "message"),
    RAW_BAD_REQUESTS,
    ids=[c[0] for c in RAW_BAD_REQUESTS],
)
def test_raw_bad_request(
    http: httpx.Client, case: str, path: str, body: bytes, content_type: str, status: int, message: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    assert_error(http.post(path, content=body, headers=headers), status, message)


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    body = json.dumps({"query": "s", "documents": ["x" * 1_000_000] * 17}).encode()
    assert_error(
        http.post("/v1/rerank", content=body, headers={"content-type": "application/json"}), 413, "too large"
    )


def test_unknown_route_and_wrong_method(http: httpx.Client) -> None:
    assert_error(http.post("/v3/rerank", json={}), 404, "no route for POST /v3/rerank")
    assert_error(http.get("/v1/rerank"), 405, "not allowed")


def test_long_documents_are_never_rejected_for_length_alone(http: httpx.Client) -> None:
    """Tokens beyond the context are chunked (v1) or truncated (v2); only the character ceiling rejects."""
    long_doc = "waterproof hiking boots with ankle support " * 2000  # ~14k tokens, far past max_model_len
    for path, extra in (("/v1/rerank", {"max_chunks_per_doc": 3}), ("/v2/rerank", {"model": "rerank-v3.5"})):
        response = http.post(
            path, json={"query": "hiking boots", "documents": [long_doc, "sandals"], **extra}
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 2


def test_null_optional_fields_mean_absent(http: httpx.Client) -> None:
    body = {
        "query": "s",
        "documents": DOCS,
        "top_n": None,
        "rank_fields": None,
        "return_documents": None,
        "model": None,
    }
    response = http.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    assert all("document" not in result for result in response.json()["results"])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "query": json_values,
        "documents": st.lists(json_values | st.text(max_size=30), max_size=5) | json_values,
        "top_n": json_values,
        "rank_fields": json_values,
        "return_documents": json_values,
        "max_chunks_per_doc": json_values,
        "max_tokens_per_doc": json_values,
        "model": st.sampled_from(["rerank-v3.5", "nope"]) | json_values,
        "instruction": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=request_bodies, path=st.sampled_from(["/v1/rerank", "/v2/rerank", "/rerank"]))
def test_fuzzed_bodies_never_cause_a_server_error(
    http: httpx.Client, body: dict[str, Any], path: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert set(response.json()) == {"id", "message"}
    assert http.get("/health").status_code == 200
