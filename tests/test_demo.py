"""The try-it page (gateway/demo) in a real browser, next to the real stack.

The page runs as its own process (``python -m gateway.demo``) pointed at the session gateway with a key
file, like an operator would start it; Debian's chromium, driven by Playwright, uses it like a
merchandiser. What the page shows is compared with a direct Cohere SDK call for the same input.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cohere
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from gateway import keys as keylib
from tests.support.fake_vllm import fake_vllm
from tests.support.procs import Service, free_port, wait_http
from tests.support.stack import Gateway, GatewayStarter, Keys

PAGE_START_BUDGET_S = 90.0  # importing gradio on a busy 2-core machine
RESULT_TIMEOUT_MS = 60_000

LAPTOP_QUERY = "适合程序员的轻薄笔记本，续航长，键盘手感好"
LAPTOPS = [
    "MacBook Air M2，超长续航，极致轻薄",
    "联想拯救者Y9000P，高性能游戏本，RTX4060显卡",
    "ThinkPad X1 Carbon，经典商务本，键盘手感优秀，支持快充",
    "华为MateBook X Pro，3K全面屏，指纹解锁，重量1.3kg",
    "iPad Pro + 妙控键盘，移动办公神器",
]
SHOE_QUERY = "breathable summer running shoes"
SHOES_CSV = """\
sku,title,brand,category,price
N-41,Pegasus 41 Road Running Shoes,Nike,Running shoes,139.99
T-07,Waterproof Leather Chukka Boots,Timberland,Boots,179.00
O-12,Cloudmonster Mesh Running Shoes,On,Running shoes,169.99
C-01,Classic Clog,Crocs,Sandals,49.99
A-55,Ultraboost Light Running Shoes,adidas,Running shoes,189.99
"""


@dataclass
class DemoPage:
    service: Service
    url: str
    api_key: str


@dataclass
class Row:
    rank: int
    was: int
    moved: str
    score: str
    product: str


@dataclass
class Traffic:
    """Everything the browser sent and received, as text, to search for secrets."""

    texts: list[str] = field(default_factory=list)
    bodies: int = 0

    def __contains__(self, secret: object) -> bool:
        return any(str(secret) in text for text in self.texts)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context on conftest's browser for each test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    yield page
    # A relaying route handler may still be reading an open event stream: closing under it must not
    # surface as an error in whatever Playwright call comes next (the next test's set-up).
    page.unroute_all(behavior="ignoreErrors")
    context.close()


def start_page(name: str, base_url: str, api_key: str, tmp: Path, artifacts: Path, **env: str) -> DemoPage:
    """``python -m gateway.demo`` as an operator would run it, the key in a file only it reads."""
    key_file = tmp / f"{name}.key"
    key_file.write_text(api_key + "\n")
    key_file.chmod(0o600)
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_DEMO_", "GRADIO_"))}
    command = [sys.executable, "-m", "gateway.demo", "--base-url", base_url, "--api-key-file", str(key_file)]
    command += ["--port", str(port)]
    service = Service(
        f"demo-{name}",
        command,
        {**clean, "GRADIO_TEMP_DIR": str(tmp / "gradio"), **env},
        artifacts / f"demo-{name}.log",
    )
    service.start()
    assert service.proc is not None
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/", timeout=PAGE_START_BUDGET_S, proc=service.proc)
    except Exception:
        service.stop()
        pytest.fail(f"the demo page did not start:\n{service.log_text()[-4000:]}")
    return DemoPage(service, url, api_key)


@pytest.fixture(scope="module")
def demo(
    gateway: Gateway, api_keys: Keys, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[DemoPage]:
    started = start_page(
        "shop-a", gateway.url, api_keys["shop-a"], tmp_path_factory.mktemp("demo"), artifacts
    )
    yield started
    started.service.stop()


def open_page(page: Page, demo: DemoPage) -> None:
    page.goto(demo.url)
    expect(page.locator("#rerank")).to_be_visible(timeout=30_000)


def fill(page: Page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def click_rerank(page: Page) -> None:
    page.locator("#rerank").click()


def ranked_rows(page: Page, count: int) -> list[Row]:
    rows = page.locator("#ranked table.ranked tbody tr")
    expect(rows).to_have_count(count, timeout=RESULT_TIMEOUT_MS)
    out = []
    for i in range(count):
        cells = [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        out.append(Row(int(cells[0]), int(cells[1]), cells[2], cells[3], cells[4]))
    return out


def status_text(page: Page, containing: str) -> str:
    status = page.locator("#status")
    expect(status).to_contain_text(containing, timeout=RESULT_TIMEOUT_MS)
    return status.inner_text()


def assert_cjk_font() -> None:
    """The screenshot goes to the docs: Chinese text must render as text, not as boxes."""
    fc_list = shutil.which("fc-list")
    found = (
        subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True, check=False).stdout
        if fc_list
        else ""
    )
    if not found.strip():
        pytest.fail("no font with Chinese glyphs: scripts/system-deps.sh installs fonts-noto-cjk")


def moved(was: int, rank: int) -> str:
    return f"▲ {was - rank}" if was > rank else f"▼ {rank - was}" if was < rank else "="


def test_lines_rank_like_the_sdk(page: Page, demo: DemoPage, client: cohere.Client, artifacts: Path) -> None:
    """The brief's example typed in one product per line: the table's order, scores (4 decimals), moves
    and products are those of a direct SDK call; latency and search units are shown; a chart is drawn."""
    open_page(page, demo)
    fill(page, "query", LAPTOP_QUERY)
    fill(page, "products", "\n".join(LAPTOPS))
    click_rerank(page)
    rows = ranked_rows(page, len(LAPTOPS))

    want = client.rerank(query=LAPTOP_QUERY, documents=LAPTOPS)
    assert [row.was - 1 for row in rows] == [r.index for r in want.results]
    assert [row.score for row in rows] == [f"{r.relevance_score:.4f}" for r in want.results]
    assert [row.rank for row in rows] == [1, 2, 3, 4, 5]
    assert [row.product for row in rows] == [LAPTOPS[r.index] for r in want.results]
    assert [row.moved for row in rows] == [moved(row.was, row.rank) for row in rows]
    status = status_text(page, "search unit")
    assert "Ranked 5 products in" in status
    assert " ms" in status
    assert "· 1 search unit" in status
    expect(page.locator("#scores svg, #scores canvas").first).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    # One model served: nothing to pick or compare (tests/test_fleet.py has the page with a fleet).
    expect(page.locator("#model")).to_be_hidden()
    expect(page.locator("#compare-with")).to_be_hidden()
    expect(page.locator("#compare table")).to_have_count(0)
    assert_cjk_font()
    page.screenshot(path=str(artifacts / "demo.png"), full_page=True)
    assert (artifacts / "demo.png").stat().st_size > 10_000


def test_csv_objects_rank_on_two_fields_like_the_sdk(
    page: Page, demo: DemoPage, client: cohere.Client
) -> None:
    """Product objects as CSV, ranked on title and category (rank_fields), top 3: same as the SDK."""
    open_page(page, demo)
    fill(page, "query", SHOE_QUERY)
    page.locator("#format").get_by_label("CSV (header row)").check()
    fill(page, "products", SHOES_CSV)
    page.locator("#products textarea").press("Tab")  # leaving the box offers its columns
    fields = page.locator("#rank-fields")
    # The page offers the CSV's columns and preselects the likely ones; keep title and category.
    expect(fields.get_by_label("sku")).to_be_visible(timeout=30_000)
    expect(fields.get_by_label("brand")).to_be_checked()
    fields.get_by_label("brand").uncheck()
    expect(fields.get_by_label("title")).to_be_checked()
    expect(fields.get_by_label("category")).to_be_checked()
    expect(fields.get_by_label("price")).not_to_be_checked()
    fill(page, "top-n", "3")
    click_rerank(page)
    rows = ranked_rows(page, 3)

    products = list(csv.DictReader(io.StringIO(SHOES_CSV)))
    want = client.rerank(query=SHOE_QUERY, documents=products, rank_fields=["title", "category"], top_n=3)
    assert [row.was - 1 for row in rows] == [r.index for r in want.results]
    assert [row.score for row in rows] == [f"{r.relevance_score:.4f}" for r in want.results]
    labels = [f"{products[r.index]['title']} · {products[r.index]['category']}" for r in want.results]
    assert [row.product for row in rows] == labels
    assert "Ranked top 3 of 5 products" in status_text(page, "search unit")


def test_too_many_products_reads_as_the_gateways_message(page: Page, demo: DemoPage) -> None:
    """1001 products against the default limit of 1000: the gateway's 400 message, as a sentence."""
    open_page(page, demo)
    fill(page, "products", "\n".join(f"product {i}" for i in range(1001)))
    click_rerank(page)
    text = status_text(page, "too many documents")
    assert (
        "The gateway refused these products or settings: too many documents: 1001; the limit is 1000." in text
    )
    expect(page.locator("#ranked table")).to_have_count(0)


def test_wrong_key_reads_as_a_sentence(page: Page, gateway: Gateway, tmp_path: Path, artifacts: Path) -> None:
    """A page started with a key the gateway does not know says so, and how to fix it."""
    wrong = start_page("wrong-key", gateway.url, "rk_" + "x" * 43, tmp_path, artifacts)
    try:
        open_page(page, wrong)
        click_rerank(page)
        text = status_text(page, "API key")
        assert "The gateway refused this page's API key" in text
        assert "--api-key-file" in text
        assert "Traceback" not in page.content()
    finally:
        wrong.service.stop()


def test_gateway_down_reads_as_a_sentence(
    page: Page, tmp_path: Path, artifacts: Path, api_keys: Keys
) -> None:
    """Nothing listening at the base URL: the page names the address and what to check."""
    closed = f"http://127.0.0.1:{free_port()}"
    down = start_page("gateway-down", closed, api_keys["shop-a"], tmp_path, artifacts)
    try:
        open_page(page, down)
        click_rerank(page)
        text = status_text(page, "Cannot reach")
        assert f"Cannot reach the gateway at {closed}: check that it is running" in text
        assert "Traceback" not in page.content()
    finally:
        down.service.stop()


def test_loading_model_and_rate_limit_read_as_sentences(
    page: Page, tmp_path: Path, artifacts: Path, start_gateway: GatewayStarter
) -> None:
    """A gateway whose model server is unavailable answers 503 with Retry-After: the page says the model is
    not ready and when to retry. Its key allows one request a minute, and a 503 costs nothing (the gateway
    refunds it): once a request has been served, the next click says how long to wait (the 429's
    Retry-After). The model server is a stand-in, to be unavailable on cue."""
    raw, line = keylib.generate("page-rpm-1")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{line} rpm=1\n")
    with fake_vllm() as model_server:
        url = start_gateway("limited", model_server.url, keys=Keys({"page-rpm-1": raw}, keys_file)).url
        demo_page: DemoPage | None = None
        try:
            demo_page = start_page("limited", url, raw, tmp_path, artifacts)
            open_page(page, demo_page)
            model_server.mode = "drop"
            click_rerank(page)
            text = status_text(page, "not ready")
            not_ready = "The model is not ready yet (it may still be loading) or is unavailable."
            assert f"{not_ready} Try again in 5 seconds." in text
            model_server.mode = "ok"
            click_rerank(page)
            assert "Ranked" in status_text(page, "Ranked"), "the 503 did not spend the key's one request"
            click_rerank(page)
            text = status_text(page, "rate limit")
            assert "This page's API key has reached its rate limit: wait " in text
            assert " seconds and try again." in text
        finally:
            if demo_page is not None:
                demo_page.service.stop()


def record_traffic(page: Page) -> Traffic:
    """Pass every request of the page through Playwright, keeping what went out and the whole body of
    what came back (event streams included) before the browser gets it."""
    traffic = Traffic()

    def relay(route: Route) -> None:
        request = route.request
        traffic.texts.append(f"{request.url}\n{request.headers}\n{request.post_data or ''}")
        response = route.fetch()
        body = response.body()
        traffic.texts.append(f"{response.headers}\n{body.decode('utf-8', errors='replace')}")
        traffic.bodies += 1
        route.fulfill(response=response, body=body)

    page.route("**/*", relay)
    return traffic


def test_the_key_never_reaches_the_browser(page: Page, demo: DemoPage) -> None:
    """The page's HTML and every response the browser receives (HTML with the app's config, scripts,
    the ranking's event stream) are free of the API key, while they do carry the ranking."""
    traffic = record_traffic(page)
    open_page(page, demo)
    page.get_by_role("button", name="Breathable running shoes (CSV)").click()
    expect(page.locator("#rank-fields").get_by_label("title")).to_be_checked(timeout=30_000)
    click_rerank(page)
    ranked_rows(page, 9)
    html = page.content()

    assert traffic.bodies >= 20  # the page, its scripts and styles, the queue's requests and streams
    assert "Ranked 9 products in" in html
    assert any("Ranked 9 products in" in text for text in traffic.texts)  # the recording saw the result
    assert demo.api_key not in html
    assert demo.api_key not in traffic
    assert demo.api_key[3:15] not in traffic  # nor a recognisable part of it


def test_page_listens_on_loopback_only(demo: DemoPage) -> None:
    """By default the page binds 127.0.0.1: other machines cannot reach it (and spend its key)."""
    port = int(demo.url.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian


def test_password_protects_the_page(
    page: Page, gateway: Gateway, api_keys: Keys, tmp_path: Path, artifacts: Path
) -> None:
    """With a password file the page asks for username and password first; a wrong one is refused."""
    password_file = tmp_path / "password"
    password_file.write_text("correct horse battery staple\n")
    locked = start_page(
        "password",
        gateway.url,
        api_keys["shop-a"],
        tmp_path,
        artifacts,
        RERANK_DEMO_USERNAME="merch",
        RERANK_DEMO_PASSWORD_FILE=str(password_file),
    )
    try:
        page.goto(locked.url)
        login = page.get_by_role("button", name="Login")
        expect(login).to_be_visible(timeout=30_000)
        expect(page.locator("#rerank")).to_have_count(0)
        page.get_by_label("username").fill("merch")
        page.get_by_label("password").fill("wrong")
        login.click()
        expect(page.get_by_text("Incorrect Credentials")).to_be_visible(timeout=30_000)
        page.get_by_label("username").fill("merch")  # the form clears both after a refusal
        page.get_by_label("password").fill("correct horse battery staple")
        login.click()
        expect(page.locator("#rerank")).to_be_visible(timeout=30_000)
        assert api_keys["shop-a"] not in page.content()
    finally:
        locked.service.stop()
