"""The evaluation command's parts without a server: metrics against ranx and a worked example, the readers
(our JSONL, the ESCI layout), the result store, the SDK call (httpx.MockTransport) and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import ranx
from scipy import stats

from gateway.eval import metrics, report
from gateway.eval.__main__ import main, sweep_grid
from gateway.eval.client import Endpoint, EndpointClient, EndpointFailed, Ranked
from gateway.eval.dataset import (
    SMOKE,
    Candidate,
    DatasetError,
    LabelledQuery,
    LabelledSet,
    load,
    read_esci,
    smoke_path,
)
from gateway.eval.store import ResultStore, request_key
from tests.support.jsonl import write_lines

pytestmark = pytest.mark.unit

# --- metrics --------------------------------------------------------------------------------------------


# Two searches with known labels. The shop's engine returned them in this order (the baseline):
def labelled(query_id: str, labels: dict[str, int]) -> LabelledQuery:
    return LabelledQuery(
        query_id, f"query {query_id}", tuple(Candidate(c, g, {"text": c}) for c, g in labels.items())
    )


Q1 = labelled("q1", {"a": 3, "b": 0, "c": 2, "d": 0, "e": 1})
Q2 = labelled("q2", {"f": 0, "g": 0, "h": 3, "i": 1})
# ... and the model answered (positions into the candidates, best first):
MODEL = {
    "q1": Ranked((2, 0, 4, 1, 3), (0.9, 0.8, 0.7, 0.2, 0.1)),
    "q2": Ranked((2, 3, 0, 1), (0.9, 0.5, 0.2, 0.1)),
}


def dcg(gains: list[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def test_metrics_on_a_hand_checkable_case_equal_ranx_and_the_worked_example() -> None:
    """NDCG takes the labels as gains over log2(rank + 1) (Järvelin and Kekäläinen, ranx's ``ndcg``):

    q1 baseline a b c d e, gains 3 0 2 0 1: DCG = 3 + 2/2 + 1/log2 6 = 4.3869; ideal 3 2 1: 3 + 2/log2 3 + 1/2
       = 4.7619; NDCG = 0.9212. Model c a e b d, gains 2 3 1 0 0: 2 + 3/log2 3 + 1/2 = 4.3928, NDCG = 0.9225.
    q2 baseline f g h i, gains 0 0 3 1: 3/2 + 1/log2 5 = 1.9307; ideal 3 1: 3 + 1/log2 3 = 3.6309;
       NDCG = 0.5317.
       Model h i f g is ideal: 1.
    MRR@10 with label >= 2 relevant: baseline 1 (q1: a first) and 1/3 (q2: h third), mean 0.6667; model 1.
    Recall@10: every relevant product is in the top 10 either way: 1.
    """
    queries = [Q1, Q2]
    runs = {
        metrics.BASELINE: metrics.baseline_run(queries, None),
        "model": metrics.answer_run(queries, MODEL),
    }
    result = metrics.evaluate(queries, runs, pairs=[("model", metrics.BASELINE)], relevant=2)

    ideal1, ideal2 = dcg([3, 2, 1]), dcg([3, 1])
    worked = {
        metrics.BASELINE: {"q1": dcg([3, 0, 2, 0, 1]) / ideal1, "q2": dcg([0, 0, 3, 1]) / ideal2},
        "model": {"q1": dcg([2, 3, 1, 0, 0]) / ideal1, "q2": 1.0},
    }
    assert worked[metrics.BASELINE]["q1"] == pytest.approx(0.9212, abs=1e-4)
    assert worked["model"]["q1"] == pytest.approx(0.9225, abs=1e-4)
    assert worked[metrics.BASELINE]["q2"] == pytest.approx(0.5317, abs=1e-4)
    for run in runs:
        for label in ("NDCG@5", "NDCG@10"):
            assert result.per_query[run][label] == pytest.approx(worked[run])
    assert result.means[metrics.BASELINE]["MRR@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert result.means["model"]["MRR@10"] == 1.0
    assert result.means[metrics.BASELINE]["Recall@10"] == result.means["model"]["Recall@10"] == 1.0

    # The same numbers straight from ranx, on the same dictionaries.
    qrels = ranx.Qrels({q.id: q.labels() for q in queries})
    for run, scores in runs.items():
        direct = ranx.evaluate(qrels, ranx.Run(scores), ["ndcg@5", "ndcg@10", "mrr@10-l2", "recall@10-l2"])
        assert result.means[run] == pytest.approx(
            {"NDCG@5": direct["ndcg@5"], "NDCG@10": direct["ndcg@10"], "MRR@10": direct["mrr@10-l2"]}
            | {"Recall@10": direct["recall@10-l2"]}
        )

    # The paired comparison is scipy's paired t-test: its p-value and its confidence interval.
    versus = result.versus["model", metrics.BASELINE]["NDCG@10"]
    model, base = (
        [worked["model"][q] for q in ("q1", "q2")],
        [worked[metrics.BASELINE][q] for q in ("q1", "q2")],
    )
    test = stats.ttest_rel(model, base)
    assert versus.p_value == pytest.approx(test.pvalue)
    interval = test.confidence_interval(confidence_level=0.95)
    assert versus.ci == pytest.approx((interval.low, interval.high))
    assert versus.delta == pytest.approx((0.9225 - 0.9212 + 1 - 0.5317) / 2, abs=1e-3)
    assert (versus.wins, versus.ties, versus.losses) == (2, 0, 0)
    assert not versus.significant, "two queries prove nothing"
    identical = result.versus["model", metrics.BASELINE]["Recall@10"]
    assert (identical.delta, identical.p_value, identical.ci) == (0.0, 1.0, (0.0, 0.0))


def test_runs_follow_the_answers_order_and_top_n_cuts_the_baseline() -> None:
    assert metrics.answer_run([Q2], {"q2": MODEL["q2"]}) == {"q2": {"h": 4.0, "i": 3.0, "f": 2.0, "g": 1.0}}
    assert metrics.baseline_run([Q1], 2) == {"q1": {"a": 2.0, "b": 1.0}}


def test_queries_without_a_relevant_candidate_are_left_out() -> None:
    empty = LabelledQuery("q3", "x", (Candidate("z", 1, {"text": "z"}), Candidate("y", 0, {"text": "y"})))
    queries = [Q1, Q2, empty]
    runs = {metrics.BASELINE: metrics.baseline_run(queries, None)}
    result = metrics.evaluate(queries, runs, pairs=[], relevant=2)
    assert result.query_ids == ("q1", "q2")
    assert result.skipped == ("q3",)
    with pytest.raises(DatasetError, match="no query has a candidate labelled 2 or more"):
        metrics.evaluate(
            [empty], {metrics.BASELINE: metrics.baseline_run([empty], None)}, pairs=[], relevant=2
        )


def test_relevance_threshold_suits_the_scale() -> None:
    assert [metrics.default_relevant(top) for top in (1, 2, 3, 4)] == [1, 2, 2, 2]


# --- readers --------------------------------------------------------------------------------------------


def test_the_smoke_set_is_bilingual_graded_and_holds_the_demo_laptop_query() -> None:
    data = load(SMOKE)
    assert data.name == SMOKE
    assert len(data.queries) >= 20
    assert all(len(q.candidates) == 20 for q in data.queries)
    chinese = [q for q in data.queries if any("\u4e00" <= ch <= "\u9fff" for ch in q.query)]
    assert 0 < len(chinese) < len(data.queries)
    laptop = next(q for q in data.queries if q.id == "zh-laptop")
    assert laptop.query == "适合程序员的轻薄笔记本，续航长，键盘手感好"
    assert {c.label for q in data.queries for c in q.candidates} == {0, 1, 2, 3}
    assert data.rank_fields == ("title", "brand", "category")
    assert all(isinstance(c.document["ctr"], float) for q in data.queries for c in q.candidates)
    assert data.limited(3).queries == data.queries[:3]
    assert smoke_path().read_text(encoding="utf-8").count("\n") == len(data.queries)


def test_jsonl_reader_keeps_order_and_strips_our_fields(tmp_path: Path) -> None:
    rows = [
        {
            "query": "tent",
            "candidates": [
                {"label": 2, "title": "2-person tent", "brand": "MSR", "text": "Freestanding, 1.6 kg"},
                {"id": "x", "label": 0, "title": "Mug", "brand": "Stanley"},
            ],
        },
        {
            "query_id": "b",
            "query": "mug",
            "candidates": [{"label": 1, "brand": "Yeti", "title": "Mug", "ctr": 0.1}],
        },
    ]
    data = load(str(write_lines(tmp_path / "shop.jsonl", rows)))
    assert data.name == "shop"
    assert [q.id for q in data.queries] == ["q1", "b"]
    assert [(c.id, c.label) for c in data.queries[0].candidates] == [("0", 2), ("x", 0)]
    assert data.queries[1].candidates[0].document == {"brand": "Yeti", "title": "Mug", "ctr": 0.1}
    assert data.rank_fields == ("title", "brand"), "not every product has text: the string fields all have"
    texts = [{"query": "q", "candidates": [{"label": 1, "text": "a", "title": "A"}]}]
    assert load(str(write_lines(tmp_path / "texts.jsonl", texts))).rank_fields is None, "text is the default"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"candidates": [{"label": 1, "text": "a"}]}, "line 1: 'query' must be a non-empty string"),
        ({"query": "q", "candidates": []}, "'candidates' must be a non-empty list"),
        (
            {"query": "q", "candidates": [{"label": "E", "text": "a"}]},
            "candidates[0]: 'label' must be a whole number",
        ),
        ({"query": "q", "candidates": [{"label": -1, "text": "a"}]}, "'label' must be a whole number"),
        ({"query": "q", "candidates": [{"label": 1}]}, "candidates[0] has no product fields"),
        ({"query": "q", "candidates": [{"id": 1, "label": 1, "text": "a"}] * 2}, "candidate ids repeat"),
        ([1, 2], "expected an object with query and candidates"),
    ],
)
def test_jsonl_reader_says_where_the_set_is_wrong(tmp_path: Path, row: Any, message: str) -> None:
    with pytest.raises(DatasetError, match=None) as raised:
        load(str(write_lines(tmp_path / "bad.jsonl", [row])))
    assert message in str(raised.value)


def test_jsonl_reader_rejects_repeated_query_ids_and_junk(tmp_path: Path) -> None:
    row = {"query_id": "a", "query": "q", "candidates": [{"label": 1, "text": "x"}]}
    with pytest.raises(DatasetError, match="line 2: query_id 'a' appears twice"):
        load(str(write_lines(tmp_path / "twice.jsonl", [row, row])))
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="line 1: not JSON"):
        load(str(tmp_path / "junk.jsonl"))
    with pytest.raises(DatasetError, match="no such file"):
        load(str(tmp_path / "missing.jsonl"))


# A few rows in the layout of ESCI's shopping_queries_dataset_examples.parquet and _products.parquet.
ESCI_EXAMPLES = pd.DataFrame(
    {
        "example_id": [0, 1, 2, 3, 4, 5, 6],
        "query": [
            "revent 80 cfm",
            "revent 80 cfm",
            "revent 80 cfm",
            "!qscreen fence",
            "!qscreen fence",
            "bathroom fan",
            "revent 80 cfm",
        ],
        "query_id": [0, 0, 0, 1, 1, 2, 0],
        "product_id": [
            "B000MOO21W",
            "B07X3Y6B1V",
            "B07WDM7MQQ",
            "B07D8WNFDQ",
            "B07FM5ZMFH",
            "B0049PQ0ZS",
            "B000MOO21W",  # listed twice for one query: the first row counts
        ],
        "product_locale": ["us", "us", "us", "us", "us", "es", "us"],
        "esci_label": ["I", "E", "S", "C", "E", "E", "E"],
        "small_version": [1, 1, 1, 1, 0, 1, 1],
        "large_version": [1, 1, 1, 1, 1, 1, 1],
        "split": ["test", "test", "test", "train", "test", "test", "test"],
    }
)
ESCI_PRODUCTS = pd.DataFrame(
    {
        "product_id": ["B000MOO21W", "B07X3Y6B1V", "B07WDM7MQQ", "B07D8WNFDQ", "B07FM5ZMFH", "B0049PQ0ZS"],
        "product_title": [
            "Panasonic FV-20VQ3 WhisperCeiling 190 CFM",
            "Homewerks 7141-80 Bathroom Fan",
            "Delta 80",
            "Zippity Outdoor Fence Screen",
            "Privacy screen 6 ft",
            "Extractor baño",
        ],
        "product_description": [None, "Quiet 80 CFM fan", None, None, None, None],
        "product_bullet_point": ["Ceiling mount", None, None, None, None, None],
        "product_brand": ["Panasonic", "Homewerks", None, "Zippity", None, "S&P"],
        "product_color": ["White", None, None, "Green", None, None],
        "product_locale": ["us", "us", "us", "us", "us", "es"],
    }
)


def test_esci_reader_joins_products_maps_labels_and_keeps_file_order(tmp_path: Path) -> None:
    examples, products = tmp_path / "shopping_queries_dataset_examples.parquet", tmp_path / "products.parquet"
    ESCI_EXAMPLES.to_parquet(examples)
    ESCI_PRODUCTS.to_parquet(products)
    data = load(str(examples), products=products)
    assert [q.id for q in data.queries] == ["0", "1", "2"]
    revent = data.queries[0]
    assert revent.query == "revent 80 cfm"
    assert [(c.id, c.label) for c in revent.candidates] == [
        ("B000MOO21W", 0),
        ("B07X3Y6B1V", 3),
        ("B07WDM7MQQ", 2),
    ]
    assert revent.candidates[1].document == {
        "product_title": "Homewerks 7141-80 Bathroom Fan",
        "product_brand": "Homewerks",
        "product_color": "",
        "product_bullet_point": "",
        "product_description": "Quiet 80 CFM fan",
    }
    assert data.rank_fields == ("product_title", "product_brand", "product_color")
    assert [c.label for c in data.queries[1].candidates] == [1, 3]


def test_esci_filters_split_version_and_locale(tmp_path: Path) -> None:
    examples, products = tmp_path / "examples.parquet", tmp_path / "products.parquet"
    ESCI_EXAMPLES.to_parquet(examples)
    ESCI_PRODUCTS.to_parquet(products)
    data = read_esci(examples, products=products, split="test", version="small", locale="us")
    assert [(q.id, len(q.candidates)) for q in data.queries] == [("0", 3)]


def test_esci_rows_already_merged_as_csv_or_jsonl(tmp_path: Path) -> None:
    merged = ESCI_EXAMPLES.merge(ESCI_PRODUCTS, on=["product_locale", "product_id"])
    merged.to_csv(tmp_path / "merged.csv", index=False)
    from_csv = load(str(tmp_path / "merged.csv"))
    merged.to_json(tmp_path / "merged.jsonl", orient="records", lines=True, force_ascii=False)
    from_jsonl = load(str(tmp_path / "merged.jsonl"))  # told apart from our JSONL by its esci_label
    for data in (from_csv, from_jsonl):
        assert [q.query for q in data.queries] == ["revent 80 cfm", "!qscreen fence", "bathroom fan"]
        assert data.queries[2].candidates[0].document["product_title"] == "Extractor baño"
        assert data.queries[0].candidates[0].document["product_brand"] == "Panasonic"


def test_esci_reader_errors(tmp_path: Path) -> None:
    ESCI_EXAMPLES.to_parquet(tmp_path / "examples.parquet")
    with pytest.raises(DatasetError, match="no product text: pass --esci-products"):
        load(str(tmp_path / "examples.parquet"))
    ESCI_EXAMPLES.drop(columns=["esci_label"]).to_parquet(tmp_path / "unlabelled.parquet")
    with pytest.raises(DatasetError, match="lacks ESCI column"):
        load(str(tmp_path / "unlabelled.parquet"))
    bad = ESCI_EXAMPLES.merge(ESCI_PRODUCTS, on=["product_locale", "product_id"]).assign(esci_label="X")
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match="esci_label must be E, S, C or I"):
        load(str(tmp_path / "bad.parquet"))
    with pytest.raises(DatasetError, match="no rows left"):
        read_esci(tmp_path / "bad.parquet", split="validation")


# --- store --------------------------------------------------------------------------------------------

OURS = Endpoint("ours", "http://gateway.test", "rk_test")


def test_the_store_resumes_and_ignores_a_cut_line(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, OURS)
    key = request_key(Q1, ["title"], 5)
    store.put(key, MODEL["q1"])
    assert store.path is not None
    with store.path.open("a") as out:
        out.write('{"key": "half a li')  # the run was killed mid-write
    again = ResultStore(tmp_path, OURS)
    assert len(again) == 1
    assert again.get(key) == MODEL["q1"]
    fused = OURS.fused("ours+ctr=1", {"fields": {"ctr": 1.0}})
    assert ResultStore(tmp_path, fused).get(key) is None, "another endpoint setting, another file"
    assert "rk_test" not in store.path.name
    assert ResultStore(tmp_path, Endpoint("ours", "http://gateway.test", "rk_rotated")).get(key) is not None
    assert request_key(Q1, ["title"], 5) != request_key(Q1, ["title"], 10)
    assert request_key(Q1, None, 5) != request_key(Q1, ["title"], 5)
    assert ResultStore(None, OURS).path is None


# --- client ---------------------------------------------------------------------------------------------


def answering(
    status: int, body: dict[str, Any], seen: list[dict[str, Any]], endpoint: Endpoint = OURS
) -> EndpointClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(status, json=body)

    return EndpointClient(
        endpoint, max_retries=0, httpx_client=httpx.Client(transport=httpx.MockTransport(answer))
    )


def results(*pairs: tuple[int, float], **extra: Any) -> dict[str, Any]:
    return {"id": "r", "results": [{"index": i, "relevance_score": s, **extra} for i, s in pairs]}


def test_client_sends_only_what_is_set_and_reads_the_order() -> None:
    seen: list[dict[str, Any]] = []
    client = answering(200, results((3, 0.9), (1, 0.5)), seen)
    ranked = client.rank(Q2, rank_fields=None, top_n=2)
    assert ranked == Ranked((3, 1), (0.9, 0.5), None)
    assert seen[0] == {"query": "query q2", "documents": [{"text": c} for c in "fghi"], "top_n": 2}
    tuned = Endpoint("tuned", "http://x.test", "k", model="rerank-v3.5", instruction="Find camping gear")
    answering(200, results((0, 1.0), (1, 0.9), (2, 0.8), (3, 0.7)), seen, tuned).rank(
        Q2, rank_fields=["text"], top_n=None
    )
    assert seen[1]["model"] == "rerank-v3.5"
    assert seen[1]["instruction"] == "Find camping gear"
    assert seen[1]["rank_fields"] == ["text"]
    assert "top_n" not in seen[1]


def test_client_reads_fused_scores_and_refuses_an_endpoint_without_fusion() -> None:
    seen: list[dict[str, Any]] = []
    fused = OURS.fused("ours+ctr=1", {"fields": {"ctr": 1.0}})
    ranked = answering(200, results((1, 0.2), (0, 0.7), fused_score=0.5), seen, fused).rank(
        Q2, rank_fields=None, top_n=2
    )
    assert ranked.fused == (0.5, 0.5)
    assert seen[0]["fusion"] == {"fields": {"ctr": 1.0}}
    with pytest.raises(EndpointFailed, match="no fused_score in the answer"):
        answering(200, results((1, 0.2), (0, 0.7)), seen, fused).rank(Q2, rank_fields=None, top_n=2)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            {"id": "r", "message": "documents[0] has no field 'title'"},
            "HTTP 400: documents[0] has no field 'title'",
        ),
        (200, results((0, 0.9)), "1 results, expected 4"),
        (200, results((0, 0.9), (0, 0.8), (1, 0.1), (2, 0.0)), "not distinct positions"),
        (200, results((0, 0.9), (1, 0.8), (2, 0.1), (7, 0.0)), "not distinct positions"),
    ],
)
def test_client_failures_name_the_endpoint_and_the_query(
    status: int, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(EndpointFailed) as raised:
        answering(status, body, []).rank(Q2, rank_fields=None, top_n=None)
    assert str(raised.value).startswith("endpoint 'ours' (http://gateway.test), query 'q2': ")
    assert message in str(raised.value)


# --- command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([SMOKE], "name at least one --endpoint NAME=URL"),
        ([SMOKE, "--endpoint", "ours"], "expected NAME=http(s)://host[:port]"),
        ([SMOKE, "--endpoint", "baseline=http://x"], "names must be unique and not 'baseline'"),
        (
            [SMOKE, "--endpoint", "ours=http://x", "--api-key-file", "/nonexistent/key"],
            "cannot read the API key file",
        ),
        (
            [SMOKE, "--endpoint", "ours=http://x", "--sweep", "ctr=0,2", "--api-key-file", "KEY"],
            "--sweep ctr=0,2",
        ),
        (
            [SMOKE, "--endpoint", "ours=http://x", "--top-n", "0", "--api-key-file", "KEY"],
            "--top-n must be at least 1",
        ),
        (["/nonexistent.jsonl", "--endpoint", "ours=http://x"], "no such file"),
        (
            [SMOKE, "--esci-split", "test", "--endpoint", "ours=http://x"],
            "are for ESCI data",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("RERANK_EVAL_API_KEY", raising=False)
    key = tmp_path / "key"
    key.write_text("rk_test\n")
    assert main([str(key) if arg == "KEY" else arg for arg in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rerank-eval: ")
    assert message in err


def test_a_keys_file_line_is_not_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys"
    key.write_text("shop-1 sha256:" + "a" * 64 + "\n")
    assert main([SMOKE, "--endpoint", "ours=http://x", "--api-key-file", f"ours={key}"]) == 2
    assert "must hold exactly one raw key" in capsys.readouterr().err


def test_gateway_eval_subcommand_shows_the_commands_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "eval", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.startswith("usage: rerank-eval")
    assert "--sweep FIELD=W1,W2,..." in done.stdout


def test_labelled_set_limit_and_max_label() -> None:
    data = LabelledSet("t", (Q1, Q2), None)
    assert data.max_label == 3
    assert data.limited(None) is data
    assert data.limited(1).queries == (Q1,)


def test_sweep_grid_crosses_fields_and_drops_blends_over_one() -> None:
    grid = sweep_grid(["ctr=0,0.5,1", "conversion_rate=0,0.5"])
    assert grid == [
        {"ctr": 0.0, "conversion_rate": 0.0},
        {"ctr": 0.0, "conversion_rate": 0.5},
        {"ctr": 0.5, "conversion_rate": 0.0},
        {"ctr": 0.5, "conversion_rate": 0.5},
        {"ctr": 1.0, "conversion_rate": 0.0},
    ]


# --- report ---------------------------------------------------------------------------------------------


def test_the_report_says_in_words_which_way_a_difference_goes(tmp_path: Path) -> None:
    """Eight searches where the one exact product sits at the bottom of the given order and the model
    puts it first: significantly better; the reverse order is significantly worse."""
    queries = [labelled(f"s{n}", {f"p{i}": 3 if i == n % 3 + 2 else 0 for i in range(5)}) for n in range(8)]
    best = {
        q.id: Ranked(tuple(sorted(range(5), key=lambda i: -q.labels()[q.candidates[i].id])), (1.0,) * 5)
        for q in queries
    }
    worst = {
        q.id: Ranked(tuple(sorted(range(5), key=lambda i: q.labels()[q.candidates[i].id])), (1.0,) * 5)
        for q in queries
    }
    runs = {
        metrics.BASELINE: metrics.baseline_run(queries, None),
        "model": metrics.answer_run(queries, best),
        "reversed": metrics.answer_run(queries, worst),
    }
    pairs = [("model", metrics.BASELINE), ("reversed", metrics.BASELINE)]
    result = metrics.evaluate(queries, runs, pairs=pairs, relevant=2)
    better = report.verdict("model", metrics.BASELINE, result.versus[pairs[0]]["NDCG@10"], result)
    worse = report.verdict("reversed", metrics.BASELINE, result.versus[pairs[1]]["NDCG@10"], result)
    assert better.startswith("model is significantly better than the baseline on NDCG@10: 1.000 against ")
    assert "8 wins, 0 ties, 0 losses over 8 queries" in better
    assert worse.startswith("reversed is significantly worse than the baseline on NDCG@10")
    assert report.summary(result).startswith("Significantly different from the baseline (paired t-test")
    context = report.Context(dataset="unit", queries=8, rank_fields=None, top_n=None, collected=[])
    written = report.write(result, context, tmp_path)
    assert {path.name for path in written} == {"results.json", "report.md", "metrics.png", "wins.png"}
    assert better in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rankings"]["model"]["s0"][0] == "p2"
    assert saved["summary"] == report.summary(result)
