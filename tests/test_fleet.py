"""A fleet on the real vLLM, served by entrypoint.sh: two tiny models of different seeds ("small", started by
the entrypoint, and "large", the session's vLLM as a remote upstream) and a cascade over them
(tests/support/fleet.py). Routing, the listing, the cascade's order against each model called alone, the
tokens each vLLM counted, the page's comparison, rerank-eval's cost columns; last, one vLLM dying stops the
whole container. The second vLLM starts for this module only and is gone when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from prometheus_client.parser import text_string_to_metric_families

from gateway.eval.dataset import SMOKE, load
from tests.support.fleet import CASCADE, LARGE, MAX_TOP_K, SMALL, TOP_K, FleetRun, start_fleet
from tests.support.procs import ROOT
from tests.support.stack import Keys, Vllm, vllm_score
from tests.test_demo import moved, start_page

QUERY = "waterproof hiking boots for women"
PRODUCTS = [
    "Women's waterproof leather hiking boots, Vibram sole",
    "Men's running shoes, breathable mesh",
    "Kids' rain boots with handles",
    "Waterproof hiking boots for women, wide fit",
    "Trekking poles, carbon, pair",
    "Wool hiking socks, 3 pack",
    "Women's trail running shoes, Gore-Tex",
    "Insulated winter boots for women",
    "Hiking backpack 30 l with rain cover",
    "Waterproofing spray for leather boots",
    "Ankle gaiters for hiking, waterproof",
    "Men's waterproof hiking boots",
    "Women's hiking sandals",
    "Camping stove, compact",
    "Women's softshell hiking trousers",
    "Boot laces, 2 pairs, 150 cm",
]


@pytest.fixture(scope="module")
def fleet(
    vllm: Vllm, model_dir: Path, second_model_dir: Path, api_keys: Keys, artifacts: Path
) -> Iterator[FleetRun]:
    try:
        served = start_fleet(
            artifacts,
            keys_file=api_keys.file,
            small_dir=second_model_dir,
            large_dir=model_dir,
            large_url=vllm.url,
        )
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc))
    yield served
    served.run.close()


@pytest.fixture
def http(fleet: FleetRun, api_keys: Keys) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_keys['shop-a']}"}
    with httpx.Client(base_url=fleet.url, headers=headers, timeout=120) as client:
        yield client


def rerank(
    http: httpx.Client, model: str | None, documents: list[str] = PRODUCTS, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"query": QUERY, "documents": documents, **fields}
    if model is not None:
        body["model"] = model
    response = http.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def order(answer: dict[str, Any]) -> list[int]:
    return [result["index"] for result in answer["results"]]


def scores(answer: dict[str, Any]) -> dict[int, float]:
    return {result["index"]: result["relevance_score"] for result in answer["results"]}


def vllm_scores(url: str, model: str, documents: list[str]) -> list[float]:
    """What a vLLM answers for these pairs itself, in document order."""
    data = vllm_score(url, model, QUERY, documents)["data"]
    return [item["score"] for item in sorted(data, key=lambda item: item["index"])]


def prompt_tokens_counted(url: str, model: str) -> float:
    """vLLM's own count of the prompt tokens it has processed for ``model`` (its Prometheus counter)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vllm:prompt_tokens_total" and sample.labels.get("model_name") == model
    )


# --- the listing and routing ------------------------------------------------------------------------------


def test_the_listing_names_every_model_alias_and_the_cascade(http: httpx.Client) -> None:
    response = http.get("/v1/models")
    assert response.status_code == 200
    cards = {card["id"]: card for card in response.json()["data"]}
    # The default model first, with the deployment's aliases (Cohere's names) after it.
    assert list(cards)[:3] == [LARGE, "rerank-v3.5", "rerank-multilingual-v3.0"]
    assert {name: card["root"] for name, card in cards.items()} == {
        LARGE: LARGE,
        "rerank-v3.5": LARGE,
        "rerank-multilingual-v3.0": LARGE,
        SMALL: SMALL,
        "small": SMALL,
        "large": LARGE,
        CASCADE: CASCADE,
        "cascade": CASCADE,
    }
    assert cards[SMALL]["dtype"] == "float32"
    assert cards[SMALL]["cascade"] is None
    assert cards["cascade"]["cascade"] == {
        "first": SMALL,
        "second": LARGE,
        "top_k": TOP_K,
        "max_top_k": MAX_TOP_K,
    }


def test_each_name_and_alias_reaches_its_own_vllm(http: httpx.Client, fleet: FleetRun) -> None:
    small_alone = vllm_scores(fleet.small_vllm_url, SMALL, PRODUCTS)
    large_alone = vllm_scores(fleet.large_vllm_url, LARGE, PRODUCTS)
    assert max(abs(a - b) for a, b in zip(small_alone, large_alone, strict=True)) > 1e-3  # two models
    for model, alone in (
        (SMALL, small_alone),
        ("small", small_alone),
        (LARGE, large_alone),
        ("large", large_alone),
    ):
        got = scores(rerank(http, model))
        assert [got[i] for i in range(len(PRODUCTS))] == pytest.approx(alone, abs=1e-6), model
    # No model named: the fleet's default, as are the deployment's aliases.
    assert scores(rerank(http, None)) == pytest.approx(scores(rerank(http, "rerank-v3.5")))
    assert [scores(rerank(http, None))[i] for i in range(len(PRODUCTS))] == pytest.approx(
        large_alone, abs=1e-6
    )


def test_an_unknown_model_is_a_404_naming_the_fleet(http: httpx.Client) -> None:
    for route, body in (
        ("/v1/rerank", {"model": "qwen3-reranker-8b", "query": QUERY, "documents": PRODUCTS}),
        ("/v2/rerank", {"model": "qwen3-reranker-8b", "query": QUERY, "documents": PRODUCTS}),
        ("/rerank", {"model": "qwen3-reranker-8b", "query": QUERY, "documents": PRODUCTS}),
    ):
        response = http.post(route, json=body)
        assert response.status_code == 404, route
        message = response.json()["message"]
        assert "model 'qwen3-reranker-8b' not found" in message
        assert all(name in message for name in (SMALL, LARGE, CASCADE, "cascade"))


def test_every_route_takes_the_model_and_the_jina_route_names_it(http: httpx.Client) -> None:
    v2 = http.post("/v2/rerank", json={"model": "small", "query": QUERY, "documents": PRODUCTS}).json()
    jina = http.post("/rerank", json={"model": "small", "query": QUERY, "documents": PRODUCTS}).json()
    assert scores(v2) == pytest.approx(scores(rerank(http, SMALL)))
    assert scores(jina) == pytest.approx(scores(v2))
    assert jina["model"] == "small"
    assert v2["meta"]["tokens"]["by_model"] == {SMALL: v2["meta"]["tokens"]["input_tokens"]}


# --- the cascade --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "fields"), [(TOP_K, {}), (8, {"cascade_top_k": 8}), (15, {"cascade_top_k": 15})]
)
def test_the_cascade_ranks_the_large_model_s_order_of_the_small_model_s_top_k(
    http: httpx.Client, k: int, fields: dict[str, Any]
) -> None:
    """Each stage is checked against its model called alone through the same gateway: the small model on
    every product, the large model on the small model's best k, sent in the small model's order."""
    small = rerank(http, SMALL)
    top = order(small)[:k]
    large = rerank(http, LARGE, [PRODUCTS[i] for i in top])
    cascade = rerank(http, "cascade", **fields)

    assert order(cascade)[:k] == [top[i] for i in order(large)]
    assert order(cascade)[k:] == order(small)[k:]
    got = scores(cascade)
    assert [got[top[i]] for i in range(len(top))] == pytest.approx(
        [scores(large)[i] for i in range(len(top))]
    )
    assert all(got[i] == pytest.approx(scores(small)[i]) for i in order(small)[k:])
    assert [result["model"] for result in cascade["results"]] == [LARGE] * k + [SMALL] * (len(PRODUCTS) - k)
    # Billed like any request of these documents; the tokens are both models', each by name.
    tokens = cascade["meta"]["tokens"]
    assert tokens["by_model"] == {
        SMALL: small["meta"]["tokens"]["input_tokens"],
        LARGE: large["meta"]["tokens"]["input_tokens"],
    }
    assert tokens["input_tokens"] == sum(tokens["by_model"].values())
    assert cascade["meta"]["billed_units"] == small["meta"]["billed_units"]


@pytest.mark.parametrize("k", [len(PRODUCTS), MAX_TOP_K])
def test_a_k_of_every_document_skips_the_first_stage(http: httpx.Client, k: int) -> None:
    """The first stage would pass every product on: the large model scores them alone, and only it is
    asked (and counted)."""
    large = rerank(http, LARGE)
    cascade = rerank(http, CASCADE, cascade_top_k=k)
    assert order(cascade) == order(large)
    assert scores(cascade) == pytest.approx(scores(large))
    assert [result["model"] for result in cascade["results"]] == [LARGE] * len(PRODUCTS)
    assert cascade["meta"]["tokens"]["by_model"] == {LARGE: large["meta"]["tokens"]["input_tokens"]}


def test_top_n_and_the_threshold_cut_the_cascade_s_answer(http: httpx.Client) -> None:
    whole = rerank(http, CASCADE)
    assert order(rerank(http, CASCADE, top_n=3)) == order(whole)[:3]
    threshold = sorted(scores(whole).values())[len(PRODUCTS) // 2]
    kept = rerank(http, CASCADE, score_threshold=threshold)
    assert order(kept) == [i for i in order(whole) if scores(whole)[i] >= threshold]


def test_cascade_top_k_is_bounded_and_only_for_a_cascade(http: httpx.Client) -> None:
    for model, k, message in (
        (CASCADE, MAX_TOP_K + 1, f"cascade_top_k must be between 1 and {MAX_TOP_K}"),
        (CASCADE, 0, "cascade_top_k must be between 1"),
        (SMALL, 5, "cascade_top_k applies to a cascade"),
    ):
        response = http.post(
            "/v2/rerank", json={"model": model, "query": QUERY, "documents": PRODUCTS, "cascade_top_k": k}
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["message"]


def test_tokens_per_model_are_what_each_vllm_counted(http: httpx.Client, fleet: FleetRun) -> None:
    before = {SMALL: prompt_tokens_counted(fleet.small_vllm_url, SMALL)}
    before[LARGE] = prompt_tokens_counted(fleet.large_vllm_url, LARGE)
    answer = rerank(http, CASCADE, cascade_top_k=7)
    by_model = answer["meta"]["tokens"]["by_model"]
    deadline = time.monotonic() + 10  # vLLM's counters follow its answer within its own stats loop
    while True:
        counted = {
            SMALL: prompt_tokens_counted(fleet.small_vllm_url, SMALL) - before[SMALL],
            LARGE: prompt_tokens_counted(fleet.large_vllm_url, LARGE) - before[LARGE],
        }
        if counted == by_model or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted == by_model
    assert by_model[LARGE] < by_model[SMALL]  # 7 of 16 products went on to the large model


def test_the_log_line_and_metrics_carry_the_model_and_its_tokens(http: httpx.Client, fleet: FleetRun) -> None:
    response = http.post("/v1/rerank", json={"model": "cascade", "query": QUERY, "documents": PRODUCTS})
    request_id = response.headers["x-request-id"]
    tokens = response.json()["meta"]["tokens"]
    deadline = time.monotonic() + 10
    line: dict[str, Any] = {}
    while not line and time.monotonic() < deadline:
        for text in fleet.run.log_text().splitlines():
            if request_id in text and text.startswith("{"):
                record = json.loads(text)
                if record.get("event") == "request":
                    line = record
        time.sleep(0.1)
    assert line["model"] == CASCADE
    assert line["tokens_by_model"] == tokens["by_model"]
    assert line["input_tokens"] == tokens["input_tokens"]

    deadline = time.monotonic() + 10  # workers flush their counts once a second
    while True:
        families = {
            family.name: family
            for family in text_string_to_metric_families(httpx.get(f"{fleet.metrics_url}/metrics").text)
        }
        served = {
            s.labels["model"]: s.value
            for s in families["rerank_model_input_tokens"].samples
            if s.name.endswith("_total")
        }
        if served.get(SMALL, 0) >= tokens["by_model"][SMALL] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served[SMALL] >= tokens["by_model"][SMALL]
    assert served[LARGE] >= tokens["by_model"][LARGE]
    requests = {
        s.labels["model"]
        for s in families["rerank_requests"].samples
        if s.labels.get("route") == "/v1/rerank"
    }
    assert {CASCADE, SMALL, LARGE} <= requests
    up = {s.labels["model"]: s.value for s in families["rerank_vllm_metrics_up"].samples}
    assert up == {SMALL: 1.0}  # the pod's own vLLM; a remote model's metrics are its own pod's
    built = {s.labels["served_model"] for s in families["rerank_build_info"].samples}
    assert built == {SMALL, LARGE}


def test_ready_lists_the_remote_model_it_does_not_wait_for(fleet: FleetRun) -> None:
    """Ready: this pod's models answer. The remote one (another pod's vLLM) is listed with its state; an
    outage of it must not take this pod's models out of the Service (docs/fleet.md)."""
    response = httpx.get(f"{fleet.url}/ready", timeout=10)
    assert response.status_code == 200
    assert response.json()["remote_models"] == {LARGE: "answering"}


# --- the page: both orders side by side ---------------------------------------------------------------


def page_side(page: Page, side: str, count: int) -> list[list[str]]:
    """The cell texts of one side's rows in the page's comparison ("a" or "b"), once it has ``count``."""
    rows = page.locator(f"#compare .side.{side} table tbody tr")
    expect(rows).to_have_count(count, timeout=120_000)
    return [[cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()] for i in range(count)]


def test_the_page_compares_the_large_model_with_the_cascade(
    fleet: FleetRun, browser: Browser, api_keys: Keys, http: httpx.Client, tmp_path: Path, artifacts: Path
) -> None:
    """The try-it page lists the fleet's models once each (aliases are the same model) and the cascade as a
    cascade; the large model against the cascade, top 8, with an instruction of the page's: each column is
    that model's order as the API gives it, B's rows say where A ranked each product and how far it moved
    ("new in top 8" when A's top 8 left it out) and which model scored it, and each side shows its tokens
    by model as the API counted them."""
    top_n, instruction = 8, "Rank the products a hiker would buy for this search first."
    cascade_label = f"{CASCADE} (cascade: {SMALL}, then {LARGE} on the top {TOP_K})"
    demo = start_page("fleet", fleet.url, api_keys["shop-a"], tmp_path, artifacts)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    try:
        page = context.new_page()
        page.goto(demo.url)
        picker, versus = page.locator("#model"), page.locator("#compare-with")
        expect(versus).to_be_visible(timeout=60_000)  # once the page has listed the models
        assert [label.strip() for label in picker.locator("label").all_inner_texts()] == [
            LARGE,
            SMALL,
            cascade_label,
        ]
        expect(picker.get_by_label(LARGE, exact=True)).to_be_checked()  # the fleet's default
        expect(versus.get_by_label("No comparison")).to_be_checked()
        versus.get_by_label(cascade_label, exact=True).check()
        page.locator("#query textarea, #query input").first.fill(QUERY)
        page.locator("#products textarea").fill("\n".join(PRODUCTS))
        page.locator("#instruction textarea").fill(instruction)
        page.locator("#top-n input").fill(str(top_n))
        page.locator("#rerank").click()
        shown_b = page_side(page, "b", top_n)
        shown_a = page_side(page, "a", top_n)

        fields: dict[str, Any] = {"instruction": instruction, "top_n": top_n}
        large, cascade = rerank(http, LARGE, **fields), rerank(http, CASCADE, **fields)
        order_a, order_b = order(large), order(cascade)
        assert [row[2] for row in shown_a] == [PRODUCTS[i] for i in order_a]  # Rank, Score, Product
        assert [float(row[1]) for row in shown_a] == pytest.approx(
            [r["relevance_score"] for r in large["results"]], abs=1e-4
        )
        # B: Rank, In A, Moved, Score, Scored by, Product
        assert [row[5] for row in shown_b] == [PRODUCTS[i] for i in order_b]
        assert [row[0] for row in shown_b] == [str(rank) for rank in range(1, top_n + 1)]
        rank_in_a = {index: rank for rank, index in enumerate(order_a, start=1)}
        assert [row[1] for row in shown_b] == [str(rank_in_a.get(i, "\u2013")) for i in order_b]
        assert [row[2] for row in shown_b] == [
            moved(rank_in_a[i], rank) if i in rank_in_a else f"new in top {top_n}"
            for rank, i in enumerate(order_b, start=1)
        ]
        assert [row[4] for row in shown_b] == [r["model"] for r in cascade["results"]]
        assert [row[4] for row in shown_b] == [LARGE] * TOP_K + [SMALL] * (top_n - TOP_K)
        assert [float(row[3]) for row in shown_b] == pytest.approx(
            [r["relevance_score"] for r in cascade["results"]], abs=1e-4
        )
        for side, answer in (("a", large), ("b", cascade)):
            cost = page.locator(f"#compare .side.{side} p.cost").inner_text()
            for name, tokens in answer["meta"]["tokens"]["by_model"].items():
                assert f"{name}: {tokens:,} tokens" in cost, side
        compared = page.locator("#compare").inner_text()
        assert f"A · {LARGE}" in compared
        assert f"B · {cascade_label}" in compared
        left_out = [PRODUCTS[i] for i in order_a if i not in set(order_b)]
        if left_out:
            assert f"Not in B's top {top_n}: {'; '.join(left_out)}." in compared
        status = page.locator("#status").inner_text()
        assert f"Ranked top {top_n} of {len(PRODUCTS)} products with {LARGE} in" in status
        assert f"Compared with {CASCADE} (B)" in status
        assert api_keys["shop-a"] not in page.content()
        page.screenshot(path=str(artifacts / "demo-compare.png"), full_page=True)
    finally:
        context.close()
        demo.service.stop()


# --- rerank-eval: quality against each model's tokens ----------------------------------------------

EVAL_SEARCHES = 6  # the smoke set's first six: 20 products each, so the cascade re-scores 5 of 20
EVAL_RANK_FIELDS = ["title", "brand", "category"]
EVAL_ENDPOINTS = {"large": LARGE, "cascade": CASCADE, "small": SMALL}  # --endpoint name -> --model


def tokens_by_model(http: httpx.Client, model: str) -> dict[str, int]:
    """The tokens each model scored for the evaluated searches, from the gateway's own answers to the same
    requests (what rerank-eval sends: the products as objects, rank_fields, no top_n), summed here."""
    total: dict[str, int] = {}
    for query in load(SMOKE).limited(EVAL_SEARCHES).queries:
        documents = [candidate.document for candidate in query.candidates]
        body = {"model": model, "query": query.query, "documents": documents, "rank_fields": EVAL_RANK_FIELDS}
        response = http.post("/v1/rerank", json=body)
        assert response.status_code == 200, response.text
        for name, tokens in response.json()["meta"]["tokens"]["by_model"].items():
            total[name] = total.get(name, 0) + tokens
    return total


def test_rerank_eval_reports_each_model_s_tokens_beside_ndcg(
    fleet: FleetRun, api_keys: Keys, http: httpx.Client, tmp_path: Path
) -> None:
    """Large-only, the cascade and small-only at the one fleet URL, chosen by --model: the report's tokens per
    model are what the gateway answers for the same searches; the cascade asks the large model for less than
    large-only does (5 of 20 products), small-only never asks it; the GPU-work estimate ranks them so."""
    key_file = tmp_path / "key"
    key_file.write_text(api_keys["shop-a"] + "\n")
    report = tmp_path / "report"
    command = [sys.executable, "-m", "gateway", "eval", SMOKE, "--limit", str(EVAL_SEARCHES)]
    command += ["--rank-fields", ",".join(EVAL_RANK_FIELDS), "--api-key-file", str(key_file)]
    command += ["--no-store", "--out", str(report), "--quiet"]  # --no-store: every answer asked now
    for name, model in EVAL_ENDPOINTS.items():
        command += ["--endpoint", f"{name}={fleet.url}", "--model", f"{name}={model}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr

    results: dict[str, Any] = json.loads((report / "results.json").read_text())
    runs = results["gpu_work"]["runs"]
    reported = {name: {m: t["tokens"] for m, t in runs[name]["by_model"].items()} for name in EVAL_ENDPOINTS}
    expected = {name: tokens_by_model(http, model) for name, model in EVAL_ENDPOINTS.items()}
    assert reported == expected
    assert set(expected["large"]) == {LARGE}
    assert set(expected["small"]) == {SMALL}, "small-only asks the large model for nothing"
    assert expected["cascade"][SMALL] == expected["small"][SMALL]  # the first stage reads every product
    assert expected["cascade"][LARGE] < expected["large"][LARGE]
    for name in EVAL_ENDPOINTS:
        run = runs[name]
        assert run["answers"] == run["reported"] == EVAL_SEARCHES
        assert run["stored_before_tokens"] == 0
        assert run["input_tokens"] == sum(expected[name].values())
        assert run["per_search"] == pytest.approx(run["input_tokens"] / EVAL_SEARCHES)
    # Sizes from the names (qwen3-reranker-4b, -0.6b; the tiny weights behind them do not change the names):
    # large-only costs the most, the cascade less, small-only the least.
    assert results["gpu_work"]["reference"] == "large"
    shares = [runs[name]["share_of_most"] for name in ("large", "cascade", "small")]
    assert shares[0] == 1.0
    assert shares[0] > shares[1] > shares[2] > 0
    markdown = (report / "report.md").read_text()
    table = markdown[markdown.index("## Quality against GPU work") :]
    assert f"| cascade | {results['metrics']['cascade']['NDCG@10']:.3f} | {SMALL} | 0.6B | " in table
    assert f"|  |  | {LARGE} | 4B | {expected['cascade'][LARGE]:,} | " in table
    assert "Quality against GPU work" in done.stdout


# --- last: one vLLM dying ends the container (this module's fleet is gone after it) -------------------------


def test_one_model_s_vllm_dying_stops_the_container_with_70(fleet: FleetRun) -> None:
    pid = fleet.small_vllm_pid()
    fleet.run.descendants()  # remembered, so leftovers() sees the whole tree
    os.kill(pid, signal.SIGKILL)
    assert fleet.run.wait(timeout=60) == 70
    log = fleet.run.log_text()
    assert f"vLLM of {SMALL} exited" in log
    assert '"event":"gateway_stopped"' in log
    assert fleet.run.leftovers() == []
    # The session's vLLM, the fleet's remote model, is another pod's: untouched.
    assert httpx.get(f"{fleet.large_vllm_url}/health", timeout=10).status_code == 200
