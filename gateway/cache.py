"""The pair-score cache: a model's score for one (instruction, query, document text) never changes, and shop
traffic repeats its head queries with the same candidates, so scores are kept and only misses reach vLLM.
Each pair keeps its prompt's token count beside its score, so ``meta.tokens`` is the same whether a pair
came from the cache or from vLLM: like billing, it depends on the request alone (README "Score cache").

A pair's key is a 128-bit BLAKE2b digest of (model identity, scope, instruction, query, exact text sent to the
model: the rendered document or v1 chunk), each part length-prefixed so no two tuples share an encoding.

- In-process tier: an LRU bounded in bytes (every entry has the same size, counted conservatively).
- Shared tier (optional): the Redis the limiter uses, with a TTL. An outage bypasses it for a few seconds at a
  time (no request waits on a dead Redis twice) and it comes back by itself.
- Single-flight: a pair already on its way to vLLM for another request is awaited, not sent again.

Scope is a deployment setting: ``key`` (default) keeps each API key's pairs to itself, because a shared cache
answers a pair another tenant scored faster than one nobody has, and that timing tells one shop what another
searched for. ``global`` shares pairs across keys: for a single tenant, or tenants that trust each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from gateway.upstream import Scores
from model_setup.fetch import MANIFEST_NAME
from model_setup.serving import Precision

# vLLM's scores (and its token total) for the texts given, in their order
Fetch = Callable[[list[str]], Awaitable[Scores]]
# Each text's prompt in tokens, as vLLM counts it (gateway/tokens.py PromptBudget.prompt_tokens)
Count = Callable[[list[str]], Awaitable[list[int]]]
# A pair's score and its prompt's token count, packed: the form both tiers keep (12 bytes, not a tuple of two
# objects, so an in-process entry costs about a fifth less).
PAIR = struct.Struct("<dI")
Scope = Literal["key", "global"]
_log = structlog.get_logger("gateway.cache")

# What one in-process entry costs: the 16-byte key and the 12-byte packed pair (two bytes objects), and the
# OrderedDict's table slot plus its linked-list node, 130 to 200 bytes on CPython 3.11 depending on how full
# the table is (tests/test_cache_units.py measures it): counted at the most, so the bound holds.
ENTRY_BYTES = sys.getsizeof(b"\0" * 16) + sys.getsizeof(b"\0" * PAIR.size) + 200
# "sc2": entries carry the token count since issue 11. A new name rather than a second format under the old
# one, so that replicas of both versions, mid-rollout, skip each other's entries instead of overwriting them.
REDIS_PREFIX = "rerank:sc2:"
SHARED_RETRY_S = 5.0  # after a Redis failure, the shared tier is skipped for this long
SHARED_WRITES_PENDING = 64  # background write batches at once; beyond this a batch is dropped (it is a cache)


def model_identity(model_dir: Path, served_model_name: str, precision: Precision) -> bytes:
    """What scores depend on besides the text: the weights (the snapshot's manifest, which pins the revision
    and every file's sha256; without one, config and tokenizer), the served name and the precision (vLLM's
    dtype and quantisation)."""
    digest = hashlib.sha256()
    manifest = model_dir / MANIFEST_NAME
    sources = [manifest] if manifest.is_file() else [model_dir / "config.json", model_dir / "tokenizer.json"]
    for path in sources:
        if path.is_file():
            digest.update(path.read_bytes())
    for part in (served_model_name, precision.dtype, precision.quantization):
        digest.update(len(part).to_bytes(4, "little") + part.encode())
    return digest.digest()


def _redis_key(key: bytes) -> str:
    return REDIS_PREFIX + key.hex()  # hex, so operators can list and inspect them with redis-cli


def _framed(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(8, "little") + data


class _Lru:
    """Least recently used first out, at most ``max_bytes // ENTRY_BYTES`` entries."""

    def __init__(self, max_bytes: int) -> None:
        self.capacity = max_bytes // ENTRY_BYTES
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return len(self._entries) * ENTRY_BYTES

    def get(self, key: bytes) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class SharedTier:
    """Packed pairs in Redis under ``rerank:sc2:<hex digest>``, each with a TTL."""

    def __init__(self, url: str, *, ttl_s: int, timeout_s: float) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._ttl_s = ttl_s
        self._skip_until = 0.0
        self._writes: set[asyncio.Task[None]] = set()

    def _failed(self, exc: BaseException) -> None:
        if self._skip_until == 0.0:  # one line per outage, not one per request
            _log.warning(
                "score_cache_shared_tier_unavailable", error=type(exc).__name__, retry_s=SHARED_RETRY_S
            )
        self._skip_until = time.monotonic() + SHARED_RETRY_S

    def _succeeded(self) -> None:
        if self._skip_until != 0.0:
            _log.info("score_cache_shared_tier_recovered")
            self._skip_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        if not keys or not self.available:
            return {}
        try:
            values = await self._redis.mget([_redis_key(key) for key in keys])
        except (redis.exceptions.RedisError, OSError) as exc:
            self._failed(exc)
            return {}
        self._succeeded()
        return {
            key: value
            for key, value in zip(keys, values, strict=True)
            if isinstance(value, bytes) and len(value) == PAIR.size
        }

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Write in the background: a response never waits for the shared tier."""
        batch = [(_redis_key(key), value) for key, value in items]
        if not batch or not self.available or len(self._writes) >= SHARED_WRITES_PENDING:
            return
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, batch: list[tuple[str, bytes]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in batch:
                    pipe.set(key, value, ex=self._ttl_s)
                await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.wait(self._writes, timeout=2)
        await self._redis.aclose()


@dataclass(frozen=True, slots=True)
class Scored:
    """Scores in request order, where each came from (a cache tier, another request's call, or our own), and
    the tokens of every prompt in the request, wherever its score came from."""

    scores: list[float]
    tokens: int
    hits: int = 0
    shared: int = 0
    misses: int = 0


class _LeaderGone(Exception):
    """The request that was fetching a pair went away before vLLM answered; whoever waited fetches it."""


class _Flight:
    """One upstream call under way: a single future for the whole batch (not one per pair), and its scores."""

    __slots__ = ("done", "values")

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.values: dict[bytes, bytes] = {}


class ScoreCache:
    def __init__(
        self, *, identity: bytes, max_bytes: int, scope: Scope, shared: SharedTier | None = None
    ) -> None:
        self._identity = identity
        self._scope = scope
        self._local = _Lru(max_bytes)
        self._shared = shared
        self._pending: dict[bytes, _Flight] = {}

    @property
    def enabled(self) -> bool:
        return self._local.capacity > 0 or self._shared is not None

    @property
    def local(self) -> _Lru:
        return self._local

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    def keys(self, key_id: str, instruction: str, query: str, texts: Sequence[str]) -> list[bytes]:
        prefix = hashlib.blake2b(self._identity, digest_size=16)
        prefix.update(_framed(key_id if self._scope == "key" else ""))
        prefix.update(_framed(instruction))
        prefix.update(_framed(query))
        keys = []
        for text in texts:
            pair = prefix.copy()
            pair.update(_framed(text))
            keys.append(pair.digest())
        return keys

    async def scores(
        self,
        *,
        key_id: str,
        instruction: str,
        query: str,
        texts: list[str],
        fetch: Fetch,
        count: Count,
        use: bool = True,
    ) -> Scored:
        """Scores for ``texts``: from the cache where it has them, the rest from ``fetch`` in one call.

        Uncached, the token total is vLLM's; pairs to be kept are also counted with ``count`` (at the same
        time as vLLM scores them), since vLLM reports one total per call, not one count per pair.
        """
        if not use or not self.enabled:
            fetched = await fetch(texts)
            return Scored(fetched.scores, fetched.prompt_tokens, misses=len(texts))
        keys = self.keys(key_id, instruction, query, texts)
        found: dict[bytes, bytes] = {}
        for key in keys:
            value = self._local.get(key)
            if value is not None:
                found[key] = value
        unique = list(dict.fromkeys(keys))  # a product listed twice is one pair
        wanted = [key for key in unique if key not in found and key not in self._pending]
        if wanted and self._shared is not None:
            from_shared = await self._shared.get_many(wanted)
            for key, value in from_shared.items():
                self._local.put(key, value)
            found.update(from_shared)
            for key in wanted:  # another request may have finished these while we asked Redis
                if key not in found and (value := self._local.get(key)) is not None:
                    found[key] = value
        # Decided without awaiting from here on, so two requests cannot both take the same pair.
        own = [key for key in wanted if key not in found and key not in self._pending]
        joined: dict[bytes, _Flight] = {
            key: self._pending[key] for key in unique if key not in found and key in self._pending
        }
        if own:
            found.update(await self._lead(own, keys, texts, fetch, count))
        for flight in {id(flight): flight for flight in joined.values()}.values():
            try:
                await asyncio.shield(flight.done)
            except _LeaderGone:
                lost = [key for key, theirs in joined.items() if theirs is flight]
                found.update(await self._lead(lost, keys, texts, fetch, count))
            else:
                found.update({key: flight.values[key] for key, theirs in joined.items() if theirs is flight})
        mine = set(own)
        hits = sum(1 for key in keys if key not in mine and key not in joined)
        shared = sum(1 for key in keys if key in joined)
        pairs = [PAIR.unpack(found[key]) for key in keys]
        return Scored(
            [score for score, _ in pairs],
            sum(tokens for _, tokens in pairs),
            hits=hits,
            shared=shared,
            misses=len(keys) - hits - shared,
        )

    async def _lead(
        self, own: list[bytes], keys: list[bytes], texts: list[str], fetch: Fetch, count: Count
    ) -> dict[bytes, bytes]:
        """Fetch ``own`` pairs in one call, letting concurrent requests for the same pairs wait on it."""
        flight = _Flight()
        for key in own:
            self._pending[key] = flight
        text_of = dict(zip(keys, texts, strict=True))
        try:
            values = await _fetch_counted([text_of[key] for key in own], fetch, count)
        except BaseException as exc:
            flight.done.set_exception(exc if isinstance(exc, Exception) else _LeaderGone())
            flight.done.exception()  # seen: a flight nobody joined must not log "exception never retrieved"
            raise
        finally:
            for key in own:
                if self._pending.get(key) is flight:
                    del self._pending[key]
        flight.values = dict(zip(own, values, strict=True))
        flight.done.set_result(None)
        for key, value in flight.values.items():
            self._local.put(key, value)
        if self._shared is not None:
            self._shared.put_many(flight.values.items())
        return flight.values


async def _fetch_counted(texts: list[str], fetch: Fetch, count: Count) -> list[bytes]:
    """vLLM's scores and our per-pair token counts, computed side by side, packed."""
    counting = asyncio.ensure_future(count(texts))
    try:
        fetched = await fetch(texts)
    except BaseException:
        counting.cancel()
        raise
    tokens = await counting
    if sum(tokens) != fetched.prompt_tokens:  # the counts are exact by construction: say so if they are not
        _log.warning("prompt_tokens_mismatch", counted=sum(tokens), upstream=fetched.prompt_tokens)
    return [PAIR.pack(score, n) for score, n in zip(fetched.scores, tokens, strict=True)]
