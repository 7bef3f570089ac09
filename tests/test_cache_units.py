"""The pair-score cache on its own: keys, merging by index, the byte bound, single-flight and its failures."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from gateway.cache import ENTRY_BYTES, PAIR, ScoreCache, _Lru
from gateway.upstream import Scores

IDENTITY = b"model-a"
pytestmark = [pytest.mark.anyio, pytest.mark.unit]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the gateway's loop (granian runs asyncio on uvloop)


async def count(texts: list[str]) -> list[int]:
    """A stand-in for the tokenizer: a prompt's tokens are a function of its text."""
    return [300 + len(text) for text in texts]


def answer(texts: list[str]) -> Scores:
    """What the stand-in vLLM says: scores a function of the text, tokens as ``count`` counts them."""
    return Scores([len(text) / 100 for text in texts], sum(300 + len(text) for text in texts))


class CountingFetch:
    """A stand-in for the upstream call; every call is recorded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay

    async def __call__(self, texts: list[str]) -> Scores:
        self.calls.append(list(texts))
        if self.delay:
            await asyncio.sleep(self.delay)
        return answer(texts)


def cache(**overrides: object) -> ScoreCache:
    options: dict[str, object] = {"identity": IDENTITY, "max_bytes": 1 << 20, "scope": "key"}
    options.update(overrides)
    return ScoreCache(**options)  # type: ignore[arg-type]


async def test_partial_hit_fetches_only_misses_and_merges_by_index() -> None:
    c, fetch = cache(), CountingFetch()
    await c.scores(key_id="a", instruction="i", query="q", texts=["bb", "dddd"], fetch=fetch, count=count)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    scored = await c.scores(key_id="a", instruction="i", query="q", texts=texts, fetch=fetch, count=count)
    assert fetch.calls[-1] == ["a", "ccc", "eeeee"], "one call, misses only, in request order"
    assert scored.scores == [0.01, 0.02, 0.03, 0.04, 0.05]
    assert (scored.hits, scored.shared, scored.misses) == (2, 0, 3)


async def test_a_repeated_text_in_one_request_is_fetched_once() -> None:
    c, fetch = cache(), CountingFetch()
    scored = await c.scores(
        key_id="a", instruction="i", query="q", texts=["x", "y", "x"], fetch=fetch, count=count
    )
    assert fetch.calls == [["x", "y"]]
    assert scored.scores == [0.01, 0.01, 0.01]
    assert scored.hits + scored.shared + scored.misses == 3


async def test_tokens_are_the_requests_whether_pairs_are_cached_shared_or_fetched() -> None:
    """``meta.tokens`` must not tell a client what the cache holds: every way of answering the same texts
    reports the same total, duplicates included, and it is vLLM's when nothing is kept."""
    texts = ["a", "bb", "a", "dddd"]
    want = sum(300 + len(text) for text in texts)
    c, fetch = cache(), CountingFetch(delay=0.02)
    cold, joined = await asyncio.gather(
        c.scores(key_id="a", instruction="i", query="q", texts=texts, fetch=fetch, count=count),
        c.scores(key_id="a", instruction="i", query="q", texts=texts, fetch=fetch, count=count),
    )
    hot = await c.scores(key_id="a", instruction="i", query="q", texts=texts, fetch=fetch, count=count)
    partly = await c.scores(
        key_id="a", instruction="i", query="q", texts=[*texts, "eee"], fetch=fetch, count=count
    )
    bypass = await c.scores(
        key_id="a", instruction="i", query="q", texts=texts, fetch=fetch, count=count, use=False
    )
    assert (cold.misses, joined.shared, hot.hits, partly.hits) == (4, 4, 4, 4)
    assert cold.tokens == joined.tokens == hot.tokens == bypass.tokens == want
    assert partly.tokens == want + 303


@pytest.mark.parametrize(
    ("changed", "value"),
    [("instruction", "other instruction"), ("query", "other query"), ("key_id", "b"), ("texts", ["x "])],
)
async def test_any_part_of_the_pair_changes_the_key(changed: str, value: object) -> None:
    c, fetch = cache(), CountingFetch()
    request: dict[str, object] = {"key_id": "a", "instruction": "i", "query": "q", "texts": ["x"]}
    await c.scores(**request, fetch=fetch, count=count)  # type: ignore[arg-type]
    scored = await c.scores(**{**request, changed: value}, fetch=fetch, count=count)  # type: ignore[arg-type]
    assert scored.misses == 1
    again = await c.scores(**request, fetch=fetch, count=count)  # type: ignore[arg-type]
    assert again.hits == 1, "the original pair is still cached"


def test_model_identity_and_scope_are_in_the_key() -> None:
    per_key, other_model = cache(), cache(identity=b"model-b")
    global_scope = cache(scope="global")
    args = ("i", "q", ["text"])
    assert per_key.keys("a", *args) != other_model.keys("a", *args)
    assert per_key.keys("a", *args) != per_key.keys("b", *args)
    assert global_scope.keys("a", *args) == global_scope.keys("b", *args)
    # Length-prefixed parts: moving characters between query and text is another pair.
    assert per_key.keys("a", "i", "ab", ["c"]) != per_key.keys("a", "i", "a", ["bc"])


async def test_global_scope_shares_between_keys() -> None:
    c, fetch = cache(scope="global"), CountingFetch()
    await c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=fetch, count=count)
    scored = await c.scores(key_id="b", instruction="i", query="q", texts=["x"], fetch=fetch, count=count)
    assert (scored.hits, len(fetch.calls)) == (1, 1)


async def test_bypass_neither_reads_nor_writes() -> None:
    c, fetch = cache(), CountingFetch()
    await c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=fetch, count=count, use=False)
    assert len(c.local) == 0
    await c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=fetch, count=count)
    scored = await c.scores(
        key_id="a", instruction="i", query="q", texts=["x"], fetch=fetch, count=count, use=False
    )
    assert scored.misses == 1
    assert len(fetch.calls) == 3


async def test_concurrent_identical_requests_share_one_fetch() -> None:
    c, fetch = cache(), CountingFetch(delay=0.05)
    texts = ["a", "bb", "ccc"]
    results = await asyncio.gather(
        *(
            c.scores(key_id="a", instruction="i", query="q", texts=texts, fetch=fetch, count=count)
            for _ in range(20)
        )
    )
    assert fetch.calls == [texts]
    assert {tuple(r.scores) for r in results} == {(0.01, 0.02, 0.03)}
    assert sorted(r.misses for r in results) == [0] * 19 + [3]
    assert sum(r.shared for r in results) == 19 * 3


async def test_overlapping_requests_share_the_pairs_they_have_in_common() -> None:
    c, fetch = cache(), CountingFetch(delay=0.05)
    first = c.scores(key_id="a", instruction="i", query="q", texts=["a", "bb"], fetch=fetch, count=count)
    second = c.scores(key_id="a", instruction="i", query="q", texts=["bb", "ccc"], fetch=fetch, count=count)
    one, two = await asyncio.gather(first, second)
    assert fetch.calls == [["a", "bb"], ["ccc"]]
    assert (two.shared, two.misses) == (1, 1)
    assert two.scores == [0.02, 0.03]
    assert one.scores == [0.01, 0.02]


async def test_an_upstream_error_reaches_every_waiter_and_nothing_is_cached() -> None:
    c = cache()
    calls = 0

    async def failing(texts: list[str]) -> Scores:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise RuntimeError("vLLM is down")

    results = await asyncio.gather(
        *(
            c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=failing, count=count)
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(c.local) == 0
    fetch = CountingFetch()
    assert (
        await c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=fetch, count=count)
    ).misses == 1


async def test_a_cancelled_leader_hands_its_pairs_to_the_waiters() -> None:
    """The client that started a fetch hung up: the requests waiting on it still get their scores."""
    c, slow = cache(), CountingFetch(delay=0.2)
    leader = asyncio.ensure_future(
        c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=slow, count=count)
    )
    await asyncio.sleep(0.01)
    fast = CountingFetch()
    waiter = asyncio.ensure_future(
        c.scores(key_id="a", instruction="i", query="q", texts=["x"], fetch=fast, count=count)
    )
    await asyncio.sleep(0.01)
    leader.cancel()
    scored = await asyncio.wait_for(waiter, 2)
    assert scored.scores == [0.01]
    assert fast.calls == [["x"]], "the waiter fetched the pair itself"


def test_one_entry_costs_no_more_than_it_is_counted() -> None:
    lru = _Lru(1 << 30)
    keys = [i.to_bytes(16, "little") for i in range(50_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, key in enumerate(keys):
            lru.put(bytes(key), PAIR.pack(i / 7, 1000 + i))  # fresh key objects, as digests are
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / len(keys) <= ENTRY_BYTES, f"{used / len(keys):.0f} bytes per entry"
    assert used / len(keys) >= ENTRY_BYTES * 0.4, "the estimate is not wildly generous either"


async def test_the_byte_bound_holds_under_a_flood_of_unique_pairs() -> None:
    max_bytes = 256 * 1024
    c = cache(max_bytes=max_bytes)

    async def fetch(texts: list[str]) -> Scores:  # keeps nothing, unlike CountingFetch
        return answer(texts)

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in range(200):  # 20,000 unique pairs, ~20x what fits
            texts = [f"product {batch}-{i}" for i in range(100)]
            await c.scores(
                key_id="a", instruction="i", query=f"q{batch}", texts=texts, fetch=fetch, count=count
            )
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(c.local) == max_bytes // ENTRY_BYTES
    assert c.local.size_bytes <= max_bytes
    assert grown <= max_bytes, f"the cache grew the heap by {grown} bytes"
    last = await c.scores(
        key_id="a", instruction="i", query="q199", texts=["product 199-99"], fetch=fetch, count=count
    )
    first = await c.scores(
        key_id="a", instruction="i", query="q0", texts=["product 0-0"], fetch=fetch, count=count
    )
    assert (last.hits, first.misses) == (1, 1), "least recently used goes first"


def test_zero_bytes_and_no_shared_tier_turns_the_cache_off() -> None:
    assert not cache(max_bytes=0).enabled
    assert cache().enabled
