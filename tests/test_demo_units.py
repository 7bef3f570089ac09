"""The try-it page's parts without a browser: reading products, the SDK call and its error sentences
(the gateway stood in by httpx.MockTransport), the results' rendering and the page's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import render
from gateway.demo.__main__ import main
from gateway.demo.client import GatewayClient, Outcome, Ranked, RerankFailed
from gateway.demo.examples import EXAMPLES
from gateway.demo.products import Format, Products, ProductsError, columns_of, parse
from gateway.demo.settings import DemoSettings, password_check
from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION

pytestmark = pytest.mark.unit

KEY = "rk_unit-test-key"


def gateway_answering(
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    seen: list[httpx.Request] | None = None,
) -> GatewayClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, json=body, headers=headers)

    transport = httpx.MockTransport(answer)
    return GatewayClient("http://gateway.test", KEY, httpx_client=httpx.Client(transport=transport))


def failure(client: GatewayClient) -> str:
    with pytest.raises(RerankFailed) as caught:
        client.rerank("q", ["a", "b"])
    return str(caught.value)


# --- products -----------------------------------------------------------------------------------------


def test_lines_skip_blanks_and_keep_order() -> None:
    products = parse("  first \n\nsecond\n   \nthird", Format.LINES)
    assert products.documents == ["first", "second", "third"]
    assert products.columns == []


def test_csv_reads_objects_with_the_header_as_fields() -> None:
    text = 'title,brand,price\n"Shoe, mesh",Nike,139.99\nBoot,Timberland,\n,,\n'
    products = parse(text, Format.CSV)
    assert products.columns == ["title", "brand", "price"]
    assert products.documents == [
        {"title": "Shoe, mesh", "brand": "Nike", "price": "139.99"},
        {"title": "Boot", "brand": "Timberland", "price": ""},
    ]  # the empty row is dropped
    assert products.label(0, ["title", "brand"]) == "Shoe, mesh · Nike"


@pytest.mark.parametrize("delimiter", ["\t", ";"])
def test_csv_from_spreadsheets_with_tabs_or_semicolons(delimiter: str) -> None:
    text = delimiter.join(["title", "brand"]) + "\n" + delimiter.join(["Shoe", "Nike"])
    assert parse(text, Format.CSV).documents == [{"title": "Shoe", "brand": "Nike"}]


@pytest.mark.parametrize(
    ("text", "fmt", "sentence"),
    [
        ("  \n ", Format.LINES, "Add at least one product."),
        ("title,\nShoe,Nike", Format.CSV, "The CSV's first line must name every column"),
        ("title,title\nShoe,Nike", Format.CSV, "The CSV's header names a column twice."),
        ("title\nShoe,Nike", Format.CSV, "Line 2 of the CSV has more cells than the header has columns."),
        ("title,brand\n", Format.CSV, "The CSV has a header but no products below it."),
        ('[{"title": "x"', Format.JSON, "The JSON does not parse (line 1, column 15)."),
        ('{"title": "x"}', Format.JSON, "The JSON must be a list of product objects"),
        ('[{"title": "x"}, "y"]', Format.JSON, "Every item of the JSON list must be an object"),
    ],
)
def test_unreadable_products_are_sentences(text: str, fmt: Format, sentence: str) -> None:
    with pytest.raises(ProductsError) as caught:
        parse(text, fmt)
    assert str(caught.value).startswith(sentence)


def test_json_keeps_values_and_collects_every_field() -> None:
    products = parse(
        '[{"title": "Jacket", "price": 99.5}, {"title": "Vest", "brand": "Salomon"}]', Format.JSON
    )
    assert products.columns == ["title", "price", "brand"]
    assert products.documents[0] == {"title": "Jacket", "price": 99.5}
    assert products.label(0, ["title", "price"]) == "Jacket · 99.5"
    assert products.label(1, []) == "Vest"  # no fields chosen, no text: the first column


def test_columns_are_offered_only_for_readable_objects() -> None:
    assert columns_of("a\nb", Format.LINES) == []
    assert columns_of("title,brand\n", Format.CSV) == []  # not readable yet: nothing to offer
    assert columns_of("title,brand\nShoe,Nike", Format.CSV) == ["title", "brand"]


def test_every_example_parses_and_names_existing_fields() -> None:
    assert len(EXAMPLES) >= 4
    for example in EXAMPLES:
        products = parse(example.products, example.format)
        assert 5 <= len(products.documents) <= 10, example.name
        assert set(example.rank_fields) <= set(products.columns), example.name
    assert EXAMPLES[0].query == "适合程序员的轻薄笔记本，续航长，键盘手感好"
    queries = {example.query for example in EXAMPLES}
    assert {"送女友的生日礼物，预算500元内", "夏季透气运动鞋", "breathable summer running shoes"} <= queries


# --- the SDK call ------------------------------------------------------------------------------------


def test_rerank_sends_what_a_shop_sends_and_reads_the_meta() -> None:
    seen: list[httpx.Request] = []
    body = {
        "id": "r1",
        "results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.2}],
        "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
    }
    client = gateway_answering(200, body, seen=seen)
    outcome = client.rerank(
        "shoes", [{"title": "a"}, {"title": "b"}], rank_fields=["title"], instruction="Be strict", top_n=2
    )
    assert outcome.results == [Ranked(1, 0.9), Ranked(0, 0.2)]
    assert outcome.search_units == 1
    assert outcome.latency_ms > 0
    [request] = seen
    assert request.url == "http://gateway.test/v1/rerank"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    sent = json.loads(request.content)
    assert sent["query"] == "shoes"
    assert sent["rank_fields"] == ["title"]
    assert sent["instruction"] == "Be strict"  # the gateway's extension field
    assert sent["top_n"] == 2


def test_no_instruction_leaves_the_deployment_default() -> None:
    seen: list[httpx.Request] = []
    body = {"results": [{"index": 0, "relevance_score": 0.5}], "meta": {"billed_units": {"search_units": 1}}}
    gateway_answering(200, body, seen=seen).rerank("q", ["a"])
    assert "instruction" not in json.loads(seen[0].content)


@pytest.mark.parametrize(
    ("status", "body", "headers", "sentence"),
    [
        (
            401,
            {"id": "x", "message": "invalid api token"},
            {},
            "The gateway refused this page's API key: it is missing, wrong or revoked. Start the page with a "
            "valid key (--api-key-file).",
        ),
        (
            429,
            {"id": "x", "message": "rate limit exceeded: rpm"},
            {"Retry-After": "17"},
            "This page's API key has reached its rate limit: wait 17 seconds and try again. "
            "The gateway said: “rate limit exceeded: rpm”.",
        ),
        (
            503,
            {"id": "x", "message": "the model server is unavailable; retry shortly"},
            {"Retry-After": "5"},
            "The model is not ready yet (it may still be loading) or is unavailable. Try again in 5 seconds. "
            "The gateway said: “the model server is unavailable; retry shortly”.",
        ),
        (
            503,
            {"message": "loading"},
            {},
            "The model is not ready yet (it may still be loading) or is unavailable. Try again in a minute. "
            "The gateway said: “loading”.",
        ),
        (
            400,
            {"id": "x", "message": "too many documents: 1001; the limit is 1000"},
            {},
            "The gateway refused these products or settings: too many documents: 1001; the limit is 1000.",
        ),
        (404, {"message": "not found"}, {}, "Nothing answers the rerank route at this address"),
        (504, {"message": "slow"}, {}, "The model took too long to answer"),
        (
            502,
            {"message": "vLLM failed"},
            {},
            "The gateway failed with HTTP 502. The gateway said: “vLLM failed”.",
        ),
    ],
)
def test_http_errors_read_as_sentences(
    status: int, body: dict[str, Any], headers: dict[str, str], sentence: str
) -> None:
    text = failure(gateway_answering(status, body, headers))
    assert text.startswith(sentence)
    assert KEY not in text


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            httpx.ConnectError("refused"),
            "Cannot reach the gateway at http://gateway.test: check that it is running",
        ),
        (httpx.ReadTimeout("slow"), "The gateway at http://gateway.test did not answer within 60 s"),
        (httpx.RemoteProtocolError("dropped"), "Cannot reach the gateway at http://gateway.test"),
    ],
)
def test_transport_failures_read_as_sentences(error: httpx.HTTPError, sentence: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    client = GatewayClient(
        "http://gateway.test/", KEY, httpx_client=httpx.Client(transport=httpx.MockTransport(fail))
    )
    assert failure(client).startswith(sentence)


# --- rendering ---------------------------------------------------------------------------------------


def test_rows_say_where_each_product_was_and_how_far_it_moved() -> None:
    outcome = Outcome([Ranked(2, 0.91234), Ranked(0, 0.5), Ranked(1, 0.1)], latency_ms=12.3, search_units=1)
    rows = render.rows(outcome, Products(["a", "b", "c"], []), [])
    assert [(r.rank, r.was, r.moved, r.score_text, r.product) for r in rows] == [
        (1, 3, "▲ 2", "0.9123", "c"),
        (2, 1, "▼ 1", "0.5000", "a"),
        (3, 2, "▼ 1", "0.1000", "b"),
    ]
    assert render.summary(outcome, 3) == (
        '<p class="status ok">Ranked 3 products in <b>12 ms</b> · <b>1</b> search unit.</p>'
    )
    assert "top 2 of 5" in render.summary(Outcome(outcome.results[:2], 5.0, 2), 5)
    assert "2</b> search units" in render.summary(Outcome(outcome.results[:2], 5.0, 2), 5)


def test_product_text_is_inert_in_the_page() -> None:
    rows = [render.Row(1, 1, 0.5, '<img src=x onerror="alert(1)"> ${document.cookie} {{x}}')]
    html = render.table_html(rows)
    assert "<img" not in html
    assert "${" not in html
    assert "{{" not in html
    assert "&lt;img" in html


def test_chart_labels_are_unique_and_short() -> None:
    rows = [render.Row(1, 2, 0.8, "Same name " * 10), render.Row(2, 1, 0.7, "Same name " * 10)]
    frame = render.chart_frame(rows)
    labels = list(frame["product"])
    assert len(set(labels)) == 2
    assert all(len(label) <= render.CHART_LABEL_CHARS + 3 for label in labels)
    assert list(frame["score"]) == [0.8, 0.7]


# --- settings -----------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BASE_URL",
        "API_KEY_FILE",
        "API_KEY",
        "INSTRUCTION",
        "HOST",
        "PORT",
        "PASSWORD",
        "PASSWORD_FILE",
    ):
        monkeypatch.delenv(f"RERANK_DEMO_{name}", raising=False)


@pytest.mark.usefixtures("clean_env")
def test_defaults_are_loopback_and_the_shipped_instruction() -> None:
    settings = DemoSettings()
    assert settings.host == "127.0.0.1"
    assert settings.is_loopback
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.instruction == PRODUCT_SEARCH_INSTRUCTION
    assert settings.read_password() is None


@pytest.mark.usefixtures("clean_env")
def test_key_comes_from_a_file_and_must_be_a_raw_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY}\n")
    assert DemoSettings(api_key_file=key_file).read_api_key() == KEY
    key_file.write_text("shop-a sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="exactly one raw key"):
        DemoSettings(api_key_file=key_file).read_api_key()
    with pytest.raises(ValueError, match="no API key"):
        DemoSettings().read_api_key()


@pytest.mark.usefixtures("clean_env")
def test_environment_configures_and_options_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RERANK_DEMO_BASE_URL", "https://rerank.example.com/")
    monkeypatch.setenv("RERANK_DEMO_INSTRUCTION", "Rank for a B2B buyer")
    monkeypatch.setenv("RERANK_DEMO_PASSWORD", "s3cret")
    settings = DemoSettings(port=9000)
    assert settings.base_url == "https://rerank.example.com"
    assert settings.instruction == "Rank for a B2B buyer"
    assert settings.port == 9000
    assert settings.read_password() == "s3cret"
    password_file = tmp_path / "password"
    password_file.write_text("from-file\n")
    assert DemoSettings(password_file=password_file).read_password() == "from-file"


def test_password_check_needs_both_parts() -> None:
    check = password_check("merch", "s3cret")
    assert check("merch", "s3cret")
    assert not check("merch", "wrong")
    assert not check("other", "s3cret")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "rerank-demo: no API key: pass --api-key-file"),
        (["--base-url", "gateway:8000", "--api-key-file", "k"], "rerank-demo: invalid setting --base-url"),
        (
            ["--api-key-file", "/nonexistent/key"],
            "rerank-demo: cannot read the API key file /nonexistent/key",
        ),
    ],
)
def test_command_line_mistakes_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["--api-key", "--password"])
def test_there_is_no_option_for_secrets_on_the_command_line(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key or password in argv would show in the process list: the CLI takes files, not abbreviations
    of them either (``--api-key`` is not read as ``--api-key-file``)."""
    with pytest.raises(SystemExit) as exited:
        main([option, "x"])
    assert exited.value.code == 2
    assert f"unrecognized arguments: {option} x" in capsys.readouterr().err
