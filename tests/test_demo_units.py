"""The try-it page's parts without a browser: reading products, the SDK calls and their error sentences
(the gateway stood in by httpx.MockTransport), the models offered, two models compared, the results'
rendering and the page's settings."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import render
from gateway.demo.__main__ import main
from gateway.demo.client import GatewayClient, ModelsUnavailable, Outcome, Ranked, RerankFailed
from gateway.demo.compare import PAGE_FAULT, Side, dropped, moves, rank_both
from gateway.demo.examples import EXAMPLES
from gateway.demo.models import Choice, choices
from gateway.demo.products import Format, Products, ProductsError, columns_of, parse
from gateway.demo.settings import DemoSettings, password_check
from gateway.schemas import CascadeCard, ModelCard
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


def test_no_instruction_or_model_leaves_the_deployment_defaults() -> None:
    seen: list[httpx.Request] = []
    body = {"results": [{"index": 0, "relevance_score": 0.5}], "meta": {"billed_units": {"search_units": 1}}}
    outcome = gateway_answering(200, body, seen=seen).rerank("q", ["a"])
    sent = json.loads(seen[0].content)
    assert "instruction" not in sent
    assert "model" not in sent
    assert outcome.tokens_by_model == {}  # an API without the extension: no cost by model
    assert outcome.results[0].model is None


def test_a_cascade_s_answer_says_who_scored_each_result_and_each_model_s_tokens() -> None:
    seen: list[httpx.Request] = []
    body = {
        "id": "r1",
        "results": [
            {"index": 2, "relevance_score": 0.8, "model": "large"},
            {"index": 0, "relevance_score": 0.3, "model": "small"},
        ],
        "meta": {
            "api_version": {"version": "1"},
            "billed_units": {"search_units": 1},
            "tokens": {"input_tokens": 140, "by_model": {"small": 100, "large": 40}},
        },
    }
    outcome = gateway_answering(200, body, seen=seen).rerank("q", ["a", "b", "c"], model="cascade")
    assert json.loads(seen[0].content)["model"] == "cascade"
    assert outcome.results == [Ranked(2, 0.8, "large"), Ranked(0, 0.3, "small")]
    assert outcome.tokens_by_model == {"small": 100, "large": 40}


LISTING: dict[str, Any] = {
    "object": "list",
    "data": [
        {"id": "qwen3-reranker-8b", "root": "qwen3-reranker-8b", "dtype": "bfloat16", "cascade": None},
        {"id": "rerank-v3.5", "root": "qwen3-reranker-8b", "dtype": "bfloat16", "cascade": None},
        {"id": "small", "root": "qwen3-reranker-0.6b", "dtype": "bfloat16", "cascade": None},
        {"id": "qwen3-reranker-0.6b", "root": "qwen3-reranker-0.6b", "dtype": "bfloat16", "cascade": None},
        {
            "id": "cascade",
            "root": "rerank-cascade",
            "cascade": {
                "first": "qwen3-reranker-0.6b",
                "second": "qwen3-reranker-8b",
                "top_k": 50,
                "max_top_k": 200,
            },
        },
        {
            "id": "rerank-cascade",
            "root": "rerank-cascade",
            "cascade": {
                "first": "qwen3-reranker-0.6b",
                "second": "qwen3-reranker-8b",
                "top_k": 50,
                "max_top_k": 200,
            },
        },
    ],
}


def test_models_are_read_from_the_listing_with_the_page_s_key() -> None:
    seen: list[httpx.Request] = []
    cards = gateway_answering(200, LISTING, seen=seen).models()
    [request] = seen
    assert request.method == "GET"
    assert request.url == "http://gateway.test/v1/models"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert [card.id for card in cards] == [item["id"] for item in LISTING["data"]]
    assert cards[4].cascade == CascadeCard("qwen3-reranker-0.6b", "qwen3-reranker-8b", 50, 200)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"message": "invalid api token"}),
        (200, {"models": [{"name": "rerank-v3.5", "endpoints": ["rerank"]}]}),  # Cohere's own shape
        (200, {"data": [{"root": "no id"}]}),
    ],
)
def test_a_listing_the_page_cannot_use_is_models_unavailable(status: int, body: dict[str, Any]) -> None:
    with pytest.raises(ModelsUnavailable) as caught:
        gateway_answering(status, body).models()
    assert "/v1/models" in str(caught.value)
    assert KEY not in str(caught.value)


# --- the models offered -------------------------------------------------------------------------------


def test_each_model_is_offered_once_by_its_root_the_default_first() -> None:
    cards = gateway_answering(200, LISTING).models()
    offered = choices(cards)
    assert [choice.name for choice in offered] == [
        "qwen3-reranker-8b",
        "qwen3-reranker-0.6b",
        "rerank-cascade",
    ]
    assert [choice.label for choice in offered] == [
        "qwen3-reranker-8b",
        "qwen3-reranker-0.6b",
        "rerank-cascade (cascade: qwen3-reranker-0.6b, then qwen3-reranker-8b on the top 50)",
    ]


def test_one_model_with_aliases_is_one_choice_and_a_card_without_root_is_its_own() -> None:
    one = [
        ModelCard("m", root="m"),
        ModelCard("rerank-v3.5", root="m"),
        ModelCard("rerank-english-v3.0", root="m"),
    ]
    assert choices(one) == [Choice("m")]
    assert choices([ModelCard("a"), ModelCard("b")]) == [
        Choice("a"),
        Choice("b"),
    ]  # a gateway sending no root


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


# --- two models compared -----------------------------------------------------------------------------


def ranked(*indices: int) -> list[Ranked]:
    return [Ranked(index, 1.0 - rank / 10) for rank, index in enumerate(indices)]


def test_each_product_of_b_says_where_a_had_it_and_how_far_it_moved() -> None:
    a = ranked(0, 1, 2, 3, 4)
    b = ranked(3, 1, 0, 2, 4)
    placed = moves(a, b)
    assert [(m.index, m.rank, m.rank_in_a) for m in placed] == [
        (3, 1, 4),
        (1, 2, 2),
        (0, 3, 1),
        (2, 4, 3),
        (4, 5, 5),
    ]
    assert [m.text for m in placed] == ["▲ 3", "=", "▼ 2", "▼ 1", "="]
    assert [m.direction for m in placed] == ["up", "same", "down", "down", "same"]
    assert dropped(a, b) == []


def test_a_product_only_b_s_top_n_holds_is_new_and_a_s_left_out_are_named() -> None:
    a = ranked(5, 2, 7)  # top 3 of more products
    b = ranked(2, 9, 5)
    placed = moves(a, b)
    assert [m.text for m in placed] == ["▲ 1", "new in top 3", "▼ 2"]
    assert placed[1].rank_in_a is None
    assert placed[1].direction == "new"
    assert dropped(a, b) == [7]


def test_both_models_are_asked_at_once() -> None:
    """Each call waits until the other has started: asked one after the other, the barrier breaks."""
    both_started = threading.Barrier(2, timeout=5)
    asked: list[str] = []

    def rank(model: str) -> Outcome:
        asked.append(model)
        both_started.wait()
        return Outcome(ranked(0, 1), 5.0, 1, {model: 10})

    a, b = rank_both(rank, ("large", "large"), ("cascade", "cascade (two stages)"))
    assert sorted(asked) == ["cascade", "large"]
    assert a.outcome is not None
    assert a.outcome.tokens_by_model == {"large": 10}
    assert b.outcome is not None
    assert b.outcome.tokens_by_model == {"cascade": 10}
    assert (a.model, b.model, b.label) == ("large", "cascade", "cascade (two stages)")


def test_one_side_failing_leaves_the_other() -> None:
    def rank(model: str) -> Outcome:
        if model == "down":
            raise RerankFailed("The model is not ready yet.")
        if model == "buggy":
            raise KeyError("a bug of the page")
        return Outcome(ranked(1, 0), 5.0, 1)

    a, b = rank_both(rank, ("down", "down"), ("up", "up"))
    assert (a.outcome, a.error) == (None, "The model is not ready yet.")
    assert b.outcome is not None
    assert b.error is None
    a, b = rank_both(rank, ("up", "up"), ("buggy", "buggy"))
    assert a.outcome is not None
    assert (b.outcome, b.error) == (None, PAGE_FAULT)


def cells(html: str, side: str) -> list[list[str]]:
    """The body rows of one side's table, as cell texts (the markup is regular: no nested tags in cells
    but the product's escaped text)."""
    part = html.split(f'<section class="side {side}">', 1)[1].split("</section>", 1)[0]
    body = part.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in part else ""
    rows = [row.split("</tr>", 1)[0] for row in body.split("<tr>")[1:]]
    return [[cell.split(">", 1)[1] for cell in row.split("</td>")[:-1]] for row in rows]


def test_the_comparison_shows_both_orders_the_moves_and_who_scored_what() -> None:
    products = Products(["boots", "sandals", "socks <b>", "gaiters"], [])
    a = Side("large", "large", Outcome(ranked(0, 1, 2), 21.4, 1, {"large": 300}))
    cascade = Outcome(
        [Ranked(2, 0.9, "large"), Ranked(0, 0.7, "large"), Ranked(3, 0.2, "small")],
        9.6,
        1,
        {"small": 400, "large": 200},
    )
    b = Side("cascade", "cascade (cascade: small, then large on the top 2)", cascade)
    html = render.comparison(a, b, products, [])

    assert cells(html, "a") == [
        ["1", "1.0000", "boots"],
        ["2", "0.9000", "sandals"],
        ["3", "0.8000", "socks &lt;b&gt;"],
    ]
    assert cells(html, "b") == [
        ["1", "3", "▲ 2", "0.9000", "large", "socks &lt;b&gt;"],
        ["2", "1", "▼ 1", "0.7000", "large", "boots"],
        ["3", "&ndash;", "new in top 3", "0.2000", "small", "gaiters"],
    ]
    assert "<th>Scored by</th>" in html.split('class="side b"')[1]
    assert "<th>Scored by</th>" not in html.split('class="side b"')[0]  # A is one model: no such column
    assert "A · large" in html
    assert "B · cascade (cascade: small, then large on the top 2)" in html
    assert '<b>21 ms</b> · <span class="tokens">large: <b>300</b> tokens</span>' in html
    assert 'small: <b>400</b> tokens</span> + <span class="tokens">large: <b>200</b> tokens' in html
    assert "Not in B's top 3: sandals." in html


def test_a_failed_side_reads_as_its_sentence_and_the_other_still_shows() -> None:
    products = Products(["boots", "sandals"], [])
    order = Outcome(ranked(1, 0), 8.0, 1, {"large": 30})
    html = render.comparison(
        Side("down", "down", None, "The model is not ready yet."), Side("large", "large", order), products, []
    )
    assert "⚠ The model is not ready yet." in html.split('class="side b"')[0]
    assert cells(html, "a") == []
    assert cells(html, "b") == [["1", "1.0000", "sandals"], ["2", "0.9000", "boots"]]  # nothing to move from
    html = render.comparison(Side("large", "large", order), Side("down", "down", None, "Gone."), products, [])
    assert cells(html, "a") == [["1", "1.0000", "sandals"], ["2", "0.9000", "boots"]]
    assert "⚠ Gone." in html.split('class="side b"')[1]


def test_the_status_names_the_model_when_one_was_picked() -> None:
    outcome = Outcome(ranked(0), 7.0, 1)
    assert "Ranked 1 products with <b>qwen3-reranker-8b</b> in <b>7 ms</b>" in render.summary(
        outcome, 1, "qwen3-reranker-8b"
    )
    assert "Ranked 1 products in <b>7 ms</b>" in render.summary(outcome, 1)


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
