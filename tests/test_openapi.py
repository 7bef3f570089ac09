"""The API's own description: an OpenAPI 3.1 document that validates, covers every route, field and error,
reads as a page in a real browser, and holds against schemathesis fuzzing the live stack (real vLLM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from playwright.sync_api import Browser
from pydantic import SecretStr

from gateway import keys as keylib
from gateway.app import create_app
from gateway.errors import ErrorKind
from gateway.settings import Settings
from tests.support.stack import Gateway, Keys

RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")
SCHEMATHESIS_EXAMPLES = 40  # per operation; the run takes about 15 s against the tiny model


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = response.json()
    return doc


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the 3.1 schema


def test_every_route_and_method_is_documented(document: dict[str, Any], model_dir: Path) -> None:
    """Compared with the app's own route table, so a new route cannot go undocumented."""
    _, line = keylib.generate("doc")
    app = create_app(Settings(model_dir=model_dir, api_keys=SecretStr(line), metrics_port=0))
    served = {
        (route.path, method.lower())
        for route in app.routes
        for method in getattr(route, "methods", ())
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented


def test_rerank_routes_document_every_error_of_the_table(document: dict[str, Any]) -> None:
    """All statuses the error table can answer a rerank call with (405 is for undocumented methods)."""
    expected = {str(kind.status) for kind in ErrorKind if kind is not ErrorKind.METHOD_NOT_ALLOWED}
    for path in RERANK_PATHS:
        responses = document["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", *expected}, path
        for status in expected:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    error = document["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["id", "message"]


def test_request_fields_include_the_extensions_with_their_meaning(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for request in ("V1RerankRequest", "V2RerankRequest"):
        fields = schemas[request]["properties"]
        assert "instruction" in fields
        assert "default" in fields["instruction"]["description"]
        assert fields["cache"]["description"].startswith("Extension")
        assert fields["query"]["description"]
    # The deployment's names and limits are in the schema, as the route functions enforce them.
    model = schemas["V2RerankRequest"]["properties"]["model"]
    assert model["enum"] == ["qwen3-reranker-4b", "rerank-v3.5", "rerank-multilingual-v3.0"]
    assert schemas["V1RerankRequest"]["properties"]["documents"]["maxItems"] == 1000


def test_the_documented_example_is_served(document: dict[str, Any], gateway: Gateway, api_keys: Keys) -> None:
    """The example a reader copies works."""
    for path in RERANK_PATHS:
        example = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
        response = httpx.post(f"{gateway.url}{path}", json=example, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == example["top_n"]


def test_the_docs_page_reads_in_a_browser_and_fetches_nothing(browser: Browser, gateway: Gateway) -> None:
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        response = page.goto(f"{gateway.url}/docs")
        assert response is not None
        assert response.status == 200
        assert page.title() == "product-rerank"
        headings = page.locator("h2").all_inner_texts()
        assert any("POST /v2/rerank" in h for h in headings), headings
        row = page.locator("#rerank_cohere_v2 ~ table tr", has_text="instruction").first
        assert "deployment's default" in row.inner_text()
        assert page.locator("a[href='/openapi.json']").count() == 1
    finally:
        page.close()
    assert requested == [f"{gateway.url}/docs"]  # no scripts, styles or fonts from anywhere


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    gateway: Gateway, api_keys: Keys, artifacts: Path
) -> None:
    """Generated valid and invalid requests for every operation: no 5xx, every status, content type, body
    and header as documented."""
    checks = ",".join(
        (
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_schema_conformance",
            "response_headers_conformance",
        )
    )
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{gateway.url}/openapi.json",
        f"--header=Authorization: Bearer {api_keys['shop-a']}",
        f"--checks={checks}",
        f"--max-examples={SCHEMATHESIS_EXAMPLES}",
        "--seed=20261202",
        "--request-timeout=60",
        "--no-color",
        f"--report-junit-path={artifacts / 'schemathesis.xml'}",
        "--report=junit",
    ]
    # In the artifacts directory: schemathesis keeps its example database where it runs.
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=artifacts)
    (artifacts / "schemathesis.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "7 selected / 7 total" in run.stdout  # every operation was exercised
    assert "No issues found" in run.stdout
