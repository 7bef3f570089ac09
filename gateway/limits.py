"""Per-key limits: requests per minute, search units per minute (GCRA) and requests in flight.

GCRA (the generic cell rate algorithm) is a token bucket kept as one timestamp per key: smooth, with no
window edges to burst across. Each key may spend a whole minute's allowance at once and then earns it back
continuously. Admission is all-or-nothing across the three limits, so a refused request consumes nothing.

Two stores share that contract: in-process (one worker) and Redis (one Lua script, one round trip, the
Redis server's clock for every replica). State is keyed by key id, never by the key itself.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from gateway.errors import ApiError, ErrorKind, invalid
from gateway.requestlog import current_record

WINDOW_MS = 60_000
LimitKind = Literal["rpm", "units", "concurrency"]
_log = structlog.get_logger("gateway.limits")


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """``None`` means unlimited."""

    rpm: int | None = None
    units_per_minute: int | None = None
    concurrency: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.units_per_minute, self.concurrency))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    refused_by: LimitKind | None = None
    retry_after_ms: int = 0
    # per limit: (remaining, ms until the full allowance is back); concurrency: (free slots, 0)
    state: dict[LimitKind, tuple[int, int]] = field(default_factory=dict)


class StoreUnavailable(Exception):
    """The shared store could not be reached; the caller applies the failure mode."""


class LimitStore(Protocol):
    async def admit(self, key_id: str, limits: KeyLimits, units: int, request_id: str) -> Decision: ...
    async def release(self, key_id: str, request_id: str) -> None: ...
    async def aclose(self) -> None: ...


def _gcra(tat: float, now: float, limit: int, cost: int) -> tuple[bool, float, int, int, int]:
    """One GCRA step. Returns (allowed, new_tat, remaining, reset_ms, retry_ms)."""
    interval = WINDOW_MS / limit
    tat = max(tat, now)
    new_tat = tat + cost * interval
    allow_at = new_tat - WINDOW_MS
    if now < allow_at:
        return (
            False,
            tat,
            math.floor((now + WINDOW_MS - tat) / interval),
            math.ceil(tat - now),
            math.ceil(allow_at - now),
        )
    return True, new_tat, math.floor((now + WINDOW_MS - new_tat) / interval), math.ceil(new_tat - now), 0


class MemoryStore:
    """Exact within one process (asyncio: admit runs without awaiting, so it is atomic)."""

    def __init__(self) -> None:
        self._tat: dict[tuple[str, LimitKind], float] = {}
        self._in_flight: Counter[str] = Counter()

    async def admit(self, key_id: str, limits: KeyLimits, units: int, request_id: str) -> Decision:
        now = time.time() * 1000
        state: dict[LimitKind, tuple[int, int]] = {}
        updates: dict[tuple[str, LimitKind], float] = {}
        checks: tuple[tuple[LimitKind, int | None, int], ...] = (
            ("rpm", limits.rpm, 1),
            ("units", limits.units_per_minute, units),
        )
        for kind, limit, cost in checks:
            if limit is None:
                continue
            ok, new_tat, remaining, reset_ms, retry_ms = _gcra(
                self._tat.get((key_id, kind), now), now, limit, cost
            )
            state[kind] = (remaining, reset_ms)
            if not ok:
                return Decision(False, kind, retry_ms, state)
            updates[(key_id, kind)] = new_tat
        if limits.concurrency is not None:
            free = limits.concurrency - self._in_flight[key_id]
            if free <= 0:
                state["concurrency"] = (0, 0)
                return Decision(False, "concurrency", 1000, state)
            state["concurrency"] = (free - 1, 0)
            self._in_flight[key_id] += 1
        self._tat.update(updates)
        return Decision(True, None, 0, state)

    async def release(self, key_id: str, request_id: str) -> None:
        if self._in_flight[key_id] > 0:
            self._in_flight[key_id] -= 1

    async def aclose(self) -> None:
        return None


class RedisStore:
    """Exact across replicas: the whole decision is one Lua script on the Redis server."""

    def __init__(self, url: str, *, timeout_s: float, in_flight_ttl_s: float) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._script = self._redis.register_script(Path(__file__).with_name("limits.lua").read_text())
        self._ttl_ms = int(in_flight_ttl_s * 1000)

    @staticmethod
    def _keys(key_id: str) -> list[str]:
        tag = f"rerank:rl:{{{key_id}}}"  # one hash slot per key id, so the script is cluster-safe
        return [f"{tag}:rpm", f"{tag}:units", f"{tag}:inflight"]

    async def admit(self, key_id: str, limits: KeyLimits, units: int, request_id: str) -> Decision:
        args: list[int | str] = [
            limits.rpm or 0,
            limits.units_per_minute or 0,
            units,
            limits.concurrency or 0,
            request_id,
            self._ttl_ms,
        ]
        try:
            reply = await self._script(keys=self._keys(key_id), args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None
        allowed, refused, retry_ms, rpm_r, rpm_t, units_r, units_t, free = (int(x) for x in reply)
        state: dict[LimitKind, tuple[int, int]] = {}
        if limits.rpm is not None:
            state["rpm"] = (rpm_r, rpm_t)
        if limits.units_per_minute is not None and (refused != 1):
            state["units"] = (units_r, units_t)
        if limits.concurrency is not None and refused not in (1, 2):
            state["concurrency"] = (free, 0)
        kinds: dict[int, LimitKind] = {1: "rpm", 2: "units", 3: "concurrency"}
        return Decision(bool(allowed), kinds.get(refused), retry_ms, state)

    async def release(self, key_id: str, request_id: str) -> None:
        # Unreachable Redis: the entry expires by itself after the in-flight TTL.
        with contextlib.suppress(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            await self._redis.zrem(self._keys(key_id)[2], request_id)

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass(slots=True)
class Admission:
    """An admitted request: headers to send and the in-flight slot to give back."""

    headers: list[tuple[str, str]]
    holds_slot: bool


def _headers(limits: KeyLimits, state: dict[LimitKind, tuple[int, int]]) -> list[tuple[str, str]]:
    """IETF draft-ietf-httpapi-ratelimit-headers-11: RateLimit-Policy (the quotas) and RateLimit (now)."""
    policies: list[str] = []
    current: list[str] = []
    if limits.rpm is not None:
        policies.append(f'"rpm";q={limits.rpm};w=60')
    if limits.units_per_minute is not None:
        policies.append(f'"units";q={limits.units_per_minute};w=60;qu="search-units"')
    if limits.concurrency is not None:
        policies.append(f'"concurrency";q={limits.concurrency};qu="concurrent-requests"')
    for kind in ("rpm", "units", "concurrency"):
        if kind in state:
            remaining, reset_ms = state[kind]
            item = f'"{kind}";r={max(remaining, 0)}'
            current.append(item if kind == "concurrency" else f"{item};t={math.ceil(reset_ms / 1000)}")
    headers = [("RateLimit-Policy", ", ".join(policies))] if policies else []
    return headers + ([("RateLimit", ", ".join(current))] if current else [])


class Limiter:
    """Applies a store's decisions: refusal messages, headers, the failure mode, and counts for metrics."""

    def __init__(self, store: LimitStore, *, fail_open: bool) -> None:
        self._store = store
        self._fail_open = fail_open
        # Hook for metrics: admitted, limited:<kind>, unlimited, fail_open, fail_closed.
        self.counts: Counter[str] = Counter()

    async def aclose(self) -> None:
        await self._store.aclose()

    async def admit(self, key_id: str, limits: KeyLimits, units: int, request_id: str) -> Admission:
        admission = await self._decide(key_id, limits, units, request_id)
        record = current_record()
        if record is not None:
            record.response_headers += admission.headers
        return admission

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        record = current_record()
        if record is not None:
            record.limit = outcome

    async def _decide(self, key_id: str, limits: KeyLimits, units: int, request_id: str) -> Admission:
        if not limits.any:
            self._count("unlimited")
            return Admission([], holds_slot=False)
        if limits.units_per_minute is not None and units > limits.units_per_minute:
            raise invalid(
                f"this request needs {units} search units but key '{key_id}' may use "
                f"{limits.units_per_minute} per minute; send fewer or shorter documents"
            )
        try:
            decision = await self._store.admit(key_id, limits, units, request_id)
        except StoreUnavailable as exc:
            self._count("fail_open" if self._fail_open else "fail_closed")
            _log.error(
                "rate_limit_store_unavailable", key_id=key_id, error=str(exc), fail_open=self._fail_open
            )
            if self._fail_open:
                return Admission([], holds_slot=False)
            raise ApiError(
                ErrorKind.UPSTREAM_UNAVAILABLE,
                "rate limiting is unavailable; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        headers = _headers(limits, decision.state)
        if decision.allowed:
            self._count("admitted")
            return Admission(headers, holds_slot=limits.concurrency is not None)
        kind = decision.refused_by or "rpm"
        self._count(f"limited:{kind}")
        retry_after = max(1, math.ceil(decision.retry_after_ms / 1000))
        messages = {
            "rpm": f"rate limit exceeded: key '{key_id}' may send {limits.rpm} requests per minute",
            "units": f"search unit limit exceeded: key '{key_id}' may use {limits.units_per_minute} "
            f"search units per minute and this request needs {units}",
            "concurrency": f"concurrency limit exceeded: key '{key_id}' may have {limits.concurrency} "
            "requests in flight",
        }
        raise ApiError(
            ErrorKind.RATE_LIMITED,
            f"{messages[kind]}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after), **dict(headers)},
        )

    async def release(self, key_id: str, request_id: str) -> None:
        await self._store.release(key_id, request_id)
