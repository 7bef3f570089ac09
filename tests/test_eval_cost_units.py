"""What the evaluation reports of cost, without a server: the tokens an answer's ``meta.tokens`` reports (read
through the SDK), kept in the result store (and answers stored before tokens were kept: unknown, said so),
the totals per model and per search, the GPU-work estimate from parameter counts, and the command end to
end on answers already in the result store: large-only, cascade and small-only worked by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.eval import cost
from gateway.eval.__main__ import main, model_params
from gateway.eval.client import Endpoint, EndpointClient, Ranked, Tokens
from gateway.eval.dataset import Candidate, LabelledQuery, load
from gateway.eval.runner import Collected
from gateway.eval.store import ResultStore, request_key
from tests.support.jsonl import write_lines

pytestmark = pytest.mark.unit

SMALL, LARGE = "qwen3-reranker-0.6b", "qwen3-reranker-4b"
OURS = Endpoint("ours", "http://gateway.test", "rk_test")
QUERY = LabelledQuery("q1", "tent", tuple(Candidate(c, 0, {"text": c}) for c in "abc"))

# --- reading an answer's tokens -------------------------------------------------------------------------


def answer(meta: dict[str, Any] | None) -> Ranked:
    body: dict[str, Any] = {
        "id": "r",
        "results": [{"index": i, "relevance_score": 1 - i / 10} for i in range(3)],
    }
    if meta is not None:
        body["meta"] = meta
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=body))
    client = EndpointClient(OURS, max_retries=0, httpx_client=httpx.Client(transport=transport))
    return client.rank(QUERY, rank_fields=None, top_n=None)


@pytest.mark.parametrize(
    ("tokens", "read"),
    [
        # A cascade's answer: both models by name, in the order they scored.
        ({"input_tokens": 130, "by_model": {SMALL: 100, LARGE: 30}}, Tokens(130, {SMALL: 100, LARGE: 30})),
        # An endpoint without the extension: the total, no model named.
        ({"input_tokens": 57}, Tokens(57, {})),
        # Another API's idea of by_model is not ours: the total stands alone.
        ({"input_tokens": 57, "by_model": {LARGE: "many"}}, Tokens(57, {})),
        ({"input_tokens": 57, "by_model": [57]}, Tokens(57, {})),
        ({"by_model": {LARGE: 12}}, Tokens(12, {LARGE: 12})),
    ],
)
def test_the_client_reads_meta_tokens_and_by_model(tokens: dict[str, Any], read: Tokens) -> None:
    """The SDK keeps the extension ``by_model`` as an extra field of ``meta.tokens``: read from there."""
    ranked = answer({"api_version": {"version": "1"}, "billed_units": {"search_units": 1}, "tokens": tokens})
    assert ranked.tokens == read
    assert ranked.order == (0, 1, 2)


def test_an_answer_without_tokens_has_none() -> None:
    assert answer(None).tokens is None
    assert answer({"billed_units": {"search_units": 1}}).tokens is None
    assert Tokens(130, {SMALL: 100, LARGE: 30}).unattributed == 0
    assert Tokens(57, {}).unattributed == 57


# --- the result store -----------------------------------------------------------------------------------


def test_the_store_keeps_tokens_and_knows_lines_from_before_them(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, OURS)
    key, other, bare = "k" * 32, "o" * 32, "n" * 32
    with_tokens = Ranked((0, 1), (0.9, 0.1), None, Tokens(130, {SMALL: 100, LARGE: 30}))
    store.put(key, with_tokens)
    store.put(bare, Ranked((0, 1), (0.9, 0.1)))  # the endpoint reported none: a known unknown
    assert store.path is not None
    with store.path.open("a") as out:  # written by rerank-eval before it kept tokens
        out.write(json.dumps({"key": other, "order": [1, 0], "scores": [0.8, 0.2], "fused": None}) + "\n")
    again = ResultStore(tmp_path, OURS)
    assert again.get(key) == with_tokens
    assert again.get(other) == Ranked((1, 0), (0.8, 0.2))
    assert [again.predates_tokens(k) for k in (key, other, bare)] == [False, True, False]
    again.put(other, with_tokens)  # asked again: no longer from before
    assert not again.predates_tokens(other)
    assert not ResultStore(tmp_path, OURS).predates_tokens(other), "the later line wins"


# --- totals and the estimate ----------------------------------------------------------------------------


def collected(name: str, *tokens: Tokens | None, stored_before_tokens: int = 0) -> Collected:
    answers = {f"q{n}": Ranked((0,), (0.5,), None, t) for n, t in enumerate(tokens)}
    endpoint = Endpoint(name, "http://gateway.test", "rk_test")
    return Collected(endpoint, answers, len(answers), 0, 0.0, stored_before_tokens)


def test_model_sizes_come_from_names_or_the_command_line() -> None:
    assert [
        cost.params_from_name(name)
        for name in (
            SMALL,
            "Qwen/Qwen3-Reranker-4B",
            "qwen3-reranker-8b-fp8",
            "Qwen3-Reranker-0.6B:int8",
            "rerank-v3.5",
            "bge-reranker-v2-m3",
            "qwen3",
            "mix-1b-7b",
        )
    ] == [0.6, 4.0, 8.0, 0.6, None, None, None, None]
    assert model_params(["rerank-v3.5=7", "my=model=0.5"]) == {"rerank-v3.5": 7.0, "my=model": 0.5}
    for bad in ("rerank-v3.5", "=4", "x=0", "x=-1", "x=nan", "x=four"):
        with pytest.raises(ValueError, match=re.escape(f"--model-params {bad}: expected MODEL=BILLIONS")):
            model_params([bad])


def test_tokens_partly_unknown_unnamed_or_of_unknown_size_get_no_estimate() -> None:
    """Totals are over the answers that reported tokens, per search over those too; the estimate needs
    every token's model and its size."""
    costs = cost.tally(
        [
            collected(
                "partly", Tokens(40, {LARGE: 40}), None, Tokens(60, {LARGE: 60}), stored_before_tokens=1
            ),
            collected("unnamed", Tokens(57, {}), Tokens(43, {})),
            collected("unsized", Tokens(30, {"rerank-v3.5": 30})),
            collected("none", None, None),
        ],
        {"another-model": 1.0},
    )
    partly, unnamed, unsized, none = costs
    assert (partly.answers, partly.reported, partly.input_tokens, partly.per_search) == (3, 2, 100, 50.0)
    assert partly.models == (cost.ModelTokens(LARGE, 100, 50.0, 4.0),)
    assert partly.work_per_search == 200.0
    assert partly.share == 1.0
    assert (unnamed.unattributed, unnamed.models, unnamed.work_per_search) == (100, (), None)
    assert unsized.unknown_sizes() == ["rerank-v3.5"]
    assert (unsized.work_per_search, unsized.share) == (None, None)
    assert (none.reported, none.input_tokens, none.per_search) == (0, 0, None)
    assert cost.most_expensive(costs) is partly
    with_size = cost.tally([collected("sized", Tokens(30, {"rerank-v3.5": 30}))], {"rerank-v3.5": 7.0})
    assert with_size[0].work_per_search == 210.0


# --- the command: large-only, cascade and small-only ----------------------------------------------------

SEARCHES = [
    {
        "query_id": f"s{n}",
        "query": f"search {n}",
        "candidates": [{"id": c, "label": 3 - i, "text": c} for i, c in enumerate("abc")],
    }
    for n in range(3)
]
# Per search: the small model reads 100, 120 and 80 prompt tokens of the three products; the large model as
# many on its own, and the cascade sends it the best K, 30, 36 and 24 tokens of them.
PROMPTS = [100, 120, 80]
ANSWERS = {
    "large": [Tokens(n, {LARGE: n}) for n in PROMPTS],
    "cascade": [Tokens(n + n * 3 // 10, {SMALL: n, LARGE: n * 3 // 10}) for n in PROMPTS],
    "small": [Tokens(n, {SMALL: n}) for n in PROMPTS],
}


def fill_store(tmp_path: Path) -> tuple[Path, Path]:
    """Labelled searches and a result store already holding every endpoint's answers: the command asks
    nobody (the .test hosts do not resolve, so a request would fail the run with exit 1). ``old`` holds
    lines written before rerank-eval kept tokens."""
    data, store, key = tmp_path / "shop.jsonl", tmp_path / "store", tmp_path / "key"
    write_lines(data, SEARCHES)
    key.write_text("rk_test\n")
    queries = load(str(data)).queries
    for name, tokens in ANSWERS.items():
        keep = ResultStore(store, Endpoint(name, f"http://{name}.test", "rk_test"))
        for query, t in zip(queries, tokens, strict=True):
            keep.put(request_key(query, None, None), Ranked((0, 2, 1), (0.9, 0.5, 0.1), None, t))
    old = ResultStore(store, Endpoint("old", "http://old.test", "rk_test"))
    assert old.path is not None
    old.path.parent.mkdir(parents=True, exist_ok=True)
    old.path.write_text(
        "".join(
            json.dumps({"key": request_key(q, None, None), "order": [0, 1, 2], "scores": [0.9, 0.5, 0.1]})
            + "\n"
            for q in queries
        )
    )
    return data, key


def test_the_report_shows_each_model_s_tokens_and_the_share_of_gpu_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Worked by hand, three searches:

    large:   4B 100 + 120 + 80 = 300 tokens, 100 per search; work 100 x 4 = 400 (the most: 100%).
    cascade: 0.6B 300 (100 per search) + 4B 30 + 36 + 24 = 90 (30 per search); 100 x 0.6 + 30 x 4 = 180: 45%.
    small:   0.6B 300, 100 per search; 100 x 0.6 = 60: 15%.
    old:     answers stored before tokens were kept: unknown, and the report says why.
    """
    data, key = fill_store(tmp_path)
    endpoints = [arg for name in (*ANSWERS, "old") for arg in ("--endpoint", f"{name}=http://{name}.test")]
    args = [str(data), *endpoints, "--api-key-file", str(key), "--retries", "0", "--quiet"]
    args += ["--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    work = saved["gpu_work"]
    assert work["reference"] == "large"
    runs = work["runs"]
    assert {name: run["by_model"] for name, run in runs.items()} == {
        "large": {LARGE: {"tokens": 300, "per_search": 100.0, "params_b": 4.0}},
        "cascade": {
            SMALL: {"tokens": 300, "per_search": 100.0, "params_b": 0.6},
            LARGE: {"tokens": 90, "per_search": 30.0, "params_b": 4.0},
        },
        "small": {SMALL: {"tokens": 300, "per_search": 100.0, "params_b": 0.6}},
        "old": {},
    }
    assert [runs[name]["input_tokens"] for name in runs] == [300, 390, 300, 0]
    assert [runs[name]["estimated_work_per_search"] for name in runs] == pytest.approx([400, 180, 60, None])
    assert [runs[name]["share_of_most"] for name in runs] == pytest.approx([1.0, 0.45, 0.15, None])
    assert runs["old"] | {"by_model": None} == {
        "answers": 3,
        "reported": 0,
        "stored_before_tokens": 3,
        "input_tokens": 0,
        "per_search": None,
        "by_model": None,
        "unattributed": 0,
        "estimated_work_per_search": None,
        "share_of_most": None,
    }

    ndcg = {name: f"{saved['metrics'][name]['NDCG@10']:.3f}" for name in runs}
    markdown = (tmp_path / "out" / "report.md").read_text()
    table = markdown[markdown.index("## Quality against GPU work") :]
    assert (
        "| run | NDCG@10 | model | params | tokens | per search | GPU work (est.) |\n"
        "|---|---:|---|---:|---:|---:|---:|\n"
        f"| large | {ndcg['large']} | {LARGE} | 4B | 300 | 100 | 100% |\n"
        f"| cascade | {ndcg['cascade']} | {SMALL} | 0.6B | 300 | 100 | 45% |\n"
        f"|  |  | {LARGE} | 4B | 90 | 30 |  |\n"
        f"| small | {ndcg['small']} | {SMALL} | 0.6B | 300 | 100 | 15% |\n"
        f"| old | {ndcg['old']} | tokens unknown |  |  |  | n/a |\n"
    ) in table
    assert "as a share of large's; an estimate from parameter counts, not a measurement." in table
    old_note = (
        "old: tokens unknown for 3 of 3 answers: 3 from a result store written before rerank-eval kept "
        "tokens (--no-store, or another --store, asks again)."
    )
    assert f"- {old_note}" in table
    # The terminal says the same.
    assert "Quality against GPU work" in out
    assert re.search(
        rf"cascade\s+{ndcg['cascade']}\s+{SMALL}\s+0\.6B\s+300\s+100\s+45% *\n\s+{LARGE}\s+4B\s+90\s+30 *\n",
        out,
    )
    assert old_note in " ".join(out.split())


def test_a_bad_model_size_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, key = fill_store(tmp_path)
    args = [str(data), "--endpoint", "large=http://large.test", "--api-key-file", str(key)]
    assert main([*args, "--model-params", f"{LARGE}=4B", "--store", str(tmp_path / "store")]) == 2
    assert f"--model-params {LARGE}=4B: expected MODEL=BILLIONS" in capsys.readouterr().err
