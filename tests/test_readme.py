"""Every snippet of the README's "Use it from ..." section runs, as printed, against the real stack: Python
with the Cohere SDK in our venv, the framework snippets in the frameworks' venv, the TypeScript one
type-checked by tsc and run by node, the curl with bash, and the OpenSearch and Elasticsearch configurations
applied the way those engines apply them (template filled, answer parsed). So the README cannot drift."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.client_tools import client_env, frameworks_python, node, node_project, run
from tests.support.procs import ROOT
from tests.support.stack import Gateway, Keys

README = ROOT / "README.md"
SNIPPET = re.compile(r"<!-- snippet: ([a-z0-9-]+) -->\n```(\w+)\n(.*?)\n```\n", re.DOTALL)
# What the snippets rank: the README keeps them to these, so their output can be checked against the gateway.
QUERY = "wireless noise cancelling headphones"
TEXTS = ["Sony WH-1000XM5 wireless headphones", "Stainless steel chef's knife", "Bose QuietComfort 45"]
PLACEHOLDER_URL, PLACEHOLDER_KEY = "https://rerank.example.com", "rk_..."


def section() -> str:
    text = README.read_text()
    start = text.index("\n## Use it from ")
    return text[start : text.index("\n## ", start + 1)]


def snippets() -> dict[str, tuple[str, str]]:
    """name -> (language, code) for every marked fenced block of the section."""
    found = {name: (language, code) for name, language, code in SNIPPET.findall(section())}
    assert len(found) == len(SNIPPET.findall(section())), "snippet names are unique"
    return found


class Context:
    """What a snippet runs against, and the gateway's own answers to compare its output with."""

    def __init__(self, gateway: Gateway, key: str, tmp_path: Path) -> None:
        self.url, self.key, self.tmp_path = gateway.url, key, tmp_path
        self.env = client_env(gateway.url, key)

    def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}{route}", json=body, headers={"Authorization": f"Bearer {self.key}"}, timeout=120
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def ranked(self, top: int, query: str = QUERY, texts: list[str] = TEXTS) -> list[tuple[int, float]]:
        body = {"model": "rerank-v3.5", "query": query, "documents": texts, "top_n": top}
        return [(r["index"], r["relevance_score"]) for r in self.post("/v2/rerank", body)["results"]]


def printed(out: str) -> list[tuple[str, float]]:
    """Lines of "<label...> <score>", as the snippets print them."""
    rows = []
    for line in out.strip().splitlines():
        label, _, score = line.rpartition(" ")
        rows.append((label, float(score)))
    return rows


def assert_printed(out: str, want: list[tuple[str, float]]) -> None:
    rows = printed(out)
    assert [label for label, _ in rows] == [label for label, _ in want]
    assert [score for _, score in rows] == pytest.approx([score for _, score in want], abs=1e-4)


def by_index(ctx: Context, top: int) -> list[tuple[str, float]]:
    return [(str(index), score) for index, score in ctx.ranked(top)]


def by_text(ctx: Context, top: int) -> list[tuple[str, float]]:
    return [(TEXTS[index], score) for index, score in ctx.ranked(top)]


def run_cohere_python(ctx: Context, code: str) -> None:
    assert_printed(run([sys.executable, "-c", code], ctx.env), by_index(ctx, 2))


def run_cohere_python_v1(ctx: Context, code: str) -> None:
    products = [
        {"text": "Over-ear, 30 h battery", "title": "Sony WH-1000XM5", "brand": "Sony", "sku": "S-1"},
        {"text": "Forged blade", "title": "Chef's knife", "brand": "Zwilling", "sku": "Z-9"},
    ]
    body = {
        "query": "noise cancelling headphones",
        "documents": products,
        "rank_fields": ["title", "brand", "text"],
    }
    want = [
        (products[r["index"]]["sku"], r["relevance_score"]) for r in ctx.post("/v1/rerank", body)["results"]
    ]
    assert_printed(run([sys.executable, "-c", code], ctx.env), want)


def run_typescript(ctx: Context, code: str) -> None:
    """Type-checked in strict mode against the SDK's own declarations, compiled, then run by node."""
    project = node_project(ctx.tmp_path / "ts")
    (project / "snippet.ts").write_text(code)
    tsc = [node(), str(project / "node_modules" / "typescript" / "bin" / "tsc")]
    options = ["--strict", "--module", "commonjs", "--target", "es2022", "--types", "node", "--skipLibCheck"]
    run([*tsc, *options, "--outDir", "out", "snippet.ts"], ctx.env, cwd=project)
    assert_printed(run([node(), "out/snippet.js"], ctx.env, cwd=project), by_index(ctx, 2))


def run_langchain(ctx: Context, code: str) -> None:
    skus = ["S-1", "Z-9", "B-4"]
    assert_printed(run([frameworks_python(), "-c", code], ctx.env), [(skus[i], s) for i, s in ctx.ranked(2)])


def run_llamaindex(ctx: Context, code: str) -> None:
    assert_printed(run([frameworks_python(), "-c", code], ctx.env), by_text(ctx, 2))


def run_haystack(ctx: Context, code: str) -> None:
    assert_printed(run([frameworks_python(), "-c", code], ctx.env), by_text(ctx, 2))


CURL_TEXTS = ["Sony WH-1000XM5 wireless headphones", "Stainless steel chef knife"]


def run_rerank_curl(ctx: Context, code: str) -> None:
    answer = json.loads(run(["bash", "-euo", "pipefail", "-c", code], ctx.env))
    assert answer["model"] == "rerank-v3.5"
    assert [r["document"]["text"] for r in answer["results"]] == [
        CURL_TEXTS[r["index"]] for r in answer["results"]
    ]
    assert [r["index"] for r in answer["results"]] == [i for i, _ in ctx.ranked(2, texts=CURL_TEXTS)]
    assert answer["usage"]["total_tokens"] == answer["meta"]["tokens"]["input_tokens"] > 0


def shape(value: Any) -> Any:
    """A JSON value's structure: keys in order, element shapes, scalar types."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def run_rerank_response(ctx: Context, code: str) -> None:
    """The documented answer has exactly the shape of a real one (keys, order, types: floats for scores)."""
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": CURL_TEXTS}
    assert shape(json.loads(code)) == shape(ctx.post("/rerank", body))


def configured(ctx: Context, code: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(
        code.replace(PLACEHOLDER_URL, ctx.url).replace(PLACEHOLDER_KEY, ctx.key)
    )
    return config


def run_opensearch(ctx: Context, code: str) -> None:
    """ml-commons' Cohere rerank functions: the pre-process sets query, documents (a JSON array) and top_n
    (their number); the body template is filled; the post-process writes each relevance_score, cast to Double,
    at scores[index] in an array as long as the results, so it needs every document back, as floats."""
    connector = configured(ctx, code)
    action = connector["actions"][0]
    assert action["pre_process_function"] == "connector.pre_process.cohere.rerank"
    assert action["post_process_function"] == "connector.post_process.cohere.rerank"
    parameters = {
        **connector["parameters"],
        "query": json.dumps(QUERY)[1:-1],  # escaped for its place inside the template's quotes
        "documents": json.dumps(TEXTS),
        "top_n": str(len(TEXTS)),
    }
    credential = connector["credential"]

    def fill(template: str) -> str:
        template = re.sub(r"\$\{credential\.(\w+)\}", lambda m: credential[m.group(1)], template)
        filled = re.sub(r"\$\{parameters\.(\w+)\}", lambda m: parameters[m.group(1)], template)
        assert "${" not in filled
        return filled

    headers = {name: fill(value) for name, value in action["headers"].items()}
    if not any(name.lower() == "content-type" for name in headers):  # ml-commons adds it when absent
        headers["Content-Type"] = "application/json"
    response = httpx.request(
        action["method"], action["url"], content=fill(action["request_body"]), headers=headers, timeout=120
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    scores: list[float | None] = [None] * len(results)
    for result in results:
        assert isinstance(result["relevance_score"], float), "a Double, never an integer"
        scores[result["index"]] = result["relevance_score"]
    assert len(results) == len(TEXTS)
    want = dict(ctx.ranked(len(TEXTS)))
    assert scores == pytest.approx([want[i] for i in range(len(TEXTS))], abs=1e-6)


def json_path(document: Any, path: str) -> list[Any]:
    """The JSONPath subset Elasticsearch's custom service parsers use: $.a.b[*].c"""
    values = [document]
    for part in path.removeprefix("$.").split("."):
        name, star = part.removesuffix("[*]"), part.endswith("[*]")
        values = [value[name] for value in values]
        if star:
            values = [item for value in values for item in value]
    return values


def run_elasticsearch(ctx: Context, code: str) -> None:
    """The custom service's rerank task: ${query} and ${input} filled as JSON into the request, ${api_key}
    from secret_parameters into the header as a string, the answer read with the json_parser paths."""
    settings = configured(ctx, code)["service_settings"]
    secrets = settings["secret_parameters"]
    json_parameters = {
        **{k: json.dumps(v) for k, v in secrets.items()},
        "query": json.dumps(QUERY),
        "input": json.dumps(TEXTS),
    }

    def fill(template: str, values: dict[str, str]) -> str:
        filled = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], template)
        assert "${" not in filled
        return filled

    headers = {name: fill(value, secrets) for name, value in settings["headers"].items()}
    response = httpx.post(
        settings["url"], content=fill(settings["request"], json_parameters), headers=headers, timeout=120
    )
    assert response.status_code == 200, response.text
    parser = settings["response"]["json_parser"]
    indices = json_path(response.json(), parser["reranked_index"])
    scores = json_path(response.json(), parser["relevance_score"])
    want = ctx.ranked(len(TEXTS))
    assert indices == [index for index, _ in want]
    assert scores == pytest.approx([score for _, score in want], abs=1e-6)
    assert all(isinstance(score, float) for score in scores)


RUNNERS: dict[str, Callable[[Context, str], None]] = {
    "cohere-python": run_cohere_python,
    "cohere-python-v1": run_cohere_python_v1,
    "cohere-typescript": run_typescript,
    "langchain": run_langchain,
    "llamaindex": run_llamaindex,
    "haystack": run_haystack,
    "rerank-curl": run_rerank_curl,
    "rerank-response": run_rerank_response,
    "opensearch": run_opensearch,
    "elasticsearch": run_elasticsearch,
}


@pytest.mark.unit
def test_every_block_of_the_section_is_a_snippet_with_a_runner() -> None:
    """A new block without a runner, or a runner whose block is gone, fails here."""
    assert section().count("\n```") == 2 * len(SNIPPET.findall(section())), "every fenced block is marked"
    assert set(snippets()) == set(RUNNERS)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_readme_snippet_runs(name: str, gateway: Gateway, api_keys: Keys, tmp_path: Path) -> None:
    _, code = snippets()[name]
    RUNNERS[name](Context(gateway, api_keys["shop-a"], tmp_path), code)
