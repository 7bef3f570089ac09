"""Per-key limits: requests per minute, search units per minute (GCRA) and requests in flight.

GCRA (the generic cell rate algorithm) is a token bucket kept as one timestamp per key: smooth, with no
window edges to burst across. Each key may spend a whole minute's allowance at once and then earns it back
continuously. Admission is all-or-nothing across the three limits, so a refused request consumes nothing.
Times are integer microseconds and intervals integers, so remaining counts are exact for every limit.

Two stores share that contract: in-process (one worker) and Redis (one Lua script, one round trip, the
Redis server's clock for every replica). State is keyed by key id, never by the key itself; in-flight slots
are held by a token minted per admission, never by anything the client chose.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import anyio
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from gateway.errors import ApiError, ErrorKind, invalid
from gateway.record import current_record

WINDOW_US = 60_000_000
MAX_PER_MINUTE = 1_000_000  # keeps every GCRA interval at 60 us or more: exact integer arithmetic
LimitKind = Literal["rpm", "units", "concurrency"]
_KINDS: tuple[LimitKind, ...] = ("rpm", "units", "concurrency")
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
    retry_after_us: int = 0
    # per limit: (remaining, us until the full allowance is back); concurrency: (free slots, 0)
    state: dict[LimitKind, tuple[int, int]] = field(default_factory=dict)


class StoreUnavailable(Exception):
    """The shared store could not answer; the caller applies the failure mode."""


class LimitStore(Protocol):
    async def admit(self, key_id: str, limits: KeyLimits, units: int, token: str) -> Decision: ...
    async def release(self, key_id: str, token: str) -> None: ...
    async def refund(self, key_id: str, limits: KeyLimits, units: int) -> None: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Bucket:
    """One GCRA limit at one instant, mirroring limits.lua."""

    interval: int
    burst: int
    tat: int
    new_tat: int
    retry_us: int

    @classmethod
    def load(cls, stored: int | None, now: int, limit: int, cost: int) -> _Bucket:
        interval = WINDOW_US // limit
        tat = max(stored if stored is not None else now, now)
        new_tat = tat + cost * interval
        return cls(interval, limit * interval, tat, new_tat, max(0, new_tat - limit * interval - now))

    def state(self, now: int, admitted: bool) -> tuple[int, int]:
        tat = self.new_tat if admitted else self.tat
        return (now + self.burst - tat) // self.interval, tat - now


class MemoryStore:
    """Exact within one process (asyncio: admit never awaits, so each decision is atomic)."""

    def __init__(self) -> None:
        self._tat: dict[tuple[str, LimitKind], int] = {}
        self._in_flight: dict[str, set[str]] = {}

    async def admit(self, key_id: str, limits: KeyLimits, units: int, token: str) -> Decision:
        now = time.time_ns() // 1000
        buckets: dict[LimitKind, _Bucket] = {}
        if limits.rpm is not None:
            buckets["rpm"] = _Bucket.load(self._tat.get((key_id, "rpm")), now, limits.rpm, 1)
        if limits.units_per_minute is not None:
            buckets["units"] = _Bucket.load(
                self._tat.get((key_id, "units")), now, limits.units_per_minute, units
            )
        refused: LimitKind | None = next((k for k, b in buckets.items() if b.retry_us > 0), None)
        retry = buckets[refused].retry_us if refused else 0
        slots = self._in_flight.setdefault(key_id, set())
        free = 0
        if refused is None and limits.concurrency is not None:
            free = limits.concurrency - len(slots)
            if free <= 0:
                refused, retry, free = "concurrency", 1_000_000, 0
        admitted = refused is None
        state = {kind: bucket.state(now, admitted) for kind, bucket in buckets.items()}
        if admitted:
            for kind, bucket in buckets.items():
                self._tat[(key_id, kind)] = bucket.new_tat
            if limits.concurrency is not None:
                slots.add(token)
                free -= 1
        if limits.concurrency is not None and refused in (None, "concurrency"):
            state["concurrency"] = (free, 0)
        return Decision(admitted, refused, retry, state)

    async def release(self, key_id: str, token: str) -> None:
        self._in_flight.get(key_id, set()).discard(token)

    async def refund(self, key_id: str, limits: KeyLimits, units: int) -> None:
        now = time.time_ns() // 1000
        charges: tuple[tuple[LimitKind, int | None, int], ...] = (
            ("rpm", limits.rpm, 1),
            ("units", limits.units_per_minute, units),
        )
        for kind, limit, cost in charges:
            stored = self._tat.get((key_id, kind))
            if limit is not None and stored is not None:
                self._tat[(key_id, kind)] = max(stored - cost * (WINDOW_US // limit), now)

    async def aclose(self) -> None:
        return None


class RedisStore:
    """Exact across replicas: the whole decision is one Lua script on the Redis server."""

    def __init__(self, url: str, *, timeout_s: float, in_flight_ttl_s: float) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._script = self._redis.register_script(Path(__file__).with_name("limits.lua").read_text())
        self._refund = self._redis.register_script(Path(__file__).with_name("refund.lua").read_text())
        self._ttl_us = int(in_flight_ttl_s * 1_000_000)

    @staticmethod
    def _keys(key_id: str) -> list[str]:
        tag = f"rerank:rl:{{{key_id}}}"  # one hash slot per key id, so the script is cluster-safe
        return [f"{tag}:rpm", f"{tag}:units", f"{tag}:inflight"]

    async def admit(self, key_id: str, limits: KeyLimits, units: int, token: str) -> Decision:
        args: list[int | str] = [
            limits.rpm or 0, limits.units_per_minute or 0, units, limits.concurrency or 0, token, self._ttl_us
        ]  # fmt: skip
        try:
            reply = await self._script(keys=self._keys(key_id), args=args)
        except (redis.exceptions.RedisError, OSError) as exc:  # READONLY, OOM, BUSY... as well as timeouts
            raise StoreUnavailable(type(exc).__name__) from None
        allowed, refused, retry_us, rpm_r, rpm_t, units_r, units_t, free = (int(x) for x in reply)
        refused_by = {1: "rpm", 2: "units", 3: "concurrency"}.get(refused)
        state: dict[LimitKind, tuple[int, int]] = {}
        if limits.rpm is not None:
            state["rpm"] = (rpm_r, rpm_t)
        if limits.units_per_minute is not None:
            state["units"] = (units_r, units_t)
        if limits.concurrency is not None and refused in (0, 3):
            state["concurrency"] = (free, 0)
        return Decision(bool(allowed), refused_by, retry_us, state)  # type: ignore[arg-type]

    async def release(self, key_id: str, token: str) -> None:
        # Unreachable Redis: the entry expires by itself after the in-flight TTL.
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._redis.zrem(self._keys(key_id)[2], token)

    async def refund(self, key_id: str, limits: KeyLimits, units: int) -> None:
        args = [limits.rpm or 0, limits.units_per_minute or 0, units]
        try:
            await self._refund(keys=self._keys(key_id)[:2], args=args)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass(slots=True)
class Admission:
    """An admitted request: the in-flight slot token to give back (None: nothing held), and what it was
    charged (``limits`` None: nothing), which a refund gives back."""

    key_id: str
    token: str | None
    limits: KeyLimits | None = None
    units: int = 0


def _headers(limits: KeyLimits, state: dict[LimitKind, tuple[int, int]]) -> list[tuple[str, str]]:
    """IETF draft-ietf-httpapi-ratelimit-headers-11: RateLimit-Policy (the quotas) and RateLimit (now)."""
    policies: list[str] = []
    if limits.rpm is not None:
        policies.append(f'"rpm";q={limits.rpm};w=60')
    if limits.units_per_minute is not None:
        policies.append(f'"units";q={limits.units_per_minute};w=60;qu="search-units"')
    if limits.concurrency is not None:
        policies.append(f'"concurrency";q={limits.concurrency};qu="concurrent-requests"')
    current: list[str] = []
    for kind in _KINDS:
        if kind in state:
            remaining, reset_us = state[kind]
            item = f'"{kind}";r={max(remaining, 0)}'
            current.append(item if kind == "concurrency" else f"{item};t={math.ceil(reset_us / 1_000_000)}")
    headers = [("RateLimit-Policy", ", ".join(policies))] if policies else []
    return headers + ([("RateLimit", ", ".join(current))] if current else [])


class Limiter:
    """Applies a store's decisions: refusal messages, headers, the failure mode, and counts for metrics."""

    def __init__(self, store: LimitStore, *, fail_open: bool) -> None:
        self._store = store
        self._fail_open = fail_open
        # Hook for metrics: admitted, limited:<kind>, unlimited, fail_open, fail_closed.
        self.counts: Counter[str] = Counter()
        # key id -> monotonic time before which its rpm cannot admit anything (a refusal told us so).
        self._rpm_blocked_until: dict[str, float] = {}

    async def aclose(self) -> None:
        await self._store.aclose()

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        record = current_record()
        if record is not None:
            record.limit = outcome

    def precheck(self, key_id: str, limits: KeyLimits) -> None:
        """Refuse at once, before any tokenizing, a key whose request rate is known to be spent.

        Exact, never early: GCRA refused this key's rpm until that instant, and nothing can change it.
        """
        blocked_until = self._rpm_blocked_until.get(key_id)
        if blocked_until is None or limits.rpm is None:
            return
        wait = blocked_until - time.monotonic()
        if wait <= 0:
            del self._rpm_blocked_until[key_id]
            return
        self._count("limited:rpm")
        headers = _headers(limits, {"rpm": (0, math.ceil(wait * 1_000_000))})
        raise self._refusal("rpm", key_id, limits, units=0, retry_after=math.ceil(wait), headers=headers)

    async def admit(self, key_id: str, limits: KeyLimits, units: int) -> Admission:
        if not limits.any:
            self._count("unlimited")
            return Admission(key_id, None)
        if limits.units_per_minute is not None and units > limits.units_per_minute:
            error = invalid(
                f"this request needs {units} search units but key '{key_id}' may use "
                f"{limits.units_per_minute} per minute; send fewer or shorter documents"
            )
            error.headers.update(_headers(limits, {}))  # the policy that makes it impossible
            raise error
        token = uuid.uuid4().hex
        try:
            decision = await self._store.admit(key_id, limits, units, token)
        except StoreUnavailable as exc:
            self._count("fail_open" if self._fail_open else "fail_closed")
            _log.error(
                "rate_limit_store_unavailable", key_id=key_id, error=str(exc), fail_open=self._fail_open
            )
            # A slow store may still run the admission later: give back the slot it would take.
            await self.release(Admission(key_id, token if limits.concurrency is not None else None))
            if self._fail_open:
                return Admission(key_id, None)
            raise ApiError(
                ErrorKind.UPSTREAM_UNAVAILABLE,
                "rate limiting is unavailable; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        headers = _headers(limits, decision.state)
        if decision.allowed:
            self._count("admitted")
            record = current_record()
            if record is not None:
                record.response_headers += headers
            charged = limits if limits.rpm is not None or limits.units_per_minute is not None else None
            return Admission(key_id, token if limits.concurrency is not None else None, charged, units)
        kind = decision.refused_by or "rpm"
        self._count(f"limited:{kind}")
        retry_after = max(1, math.ceil(decision.retry_after_us / 1_000_000))
        if kind == "rpm":
            self._rpm_blocked_until[key_id] = time.monotonic() + decision.retry_after_us / 1_000_000
        raise self._refusal(kind, key_id, limits, units=units, retry_after=retry_after, headers=headers)

    @staticmethod
    def _refusal(
        kind: LimitKind,
        key_id: str,
        limits: KeyLimits,
        *,
        units: int,
        retry_after: int,
        headers: list[tuple[str, str]],
    ) -> ApiError:
        messages = {
            "rpm": f"rate limit exceeded: key '{key_id}' may send {limits.rpm} requests per minute",
            "units": f"search unit limit exceeded: key '{key_id}' may use {limits.units_per_minute} "
            f"search units per minute and this request needs {units}",
            "concurrency": f"concurrency limit exceeded: key '{key_id}' may have {limits.concurrency} "
            "requests in flight",
        }
        return ApiError(
            ErrorKind.RATE_LIMITED,
            f"{messages[kind]}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after), **dict(headers)},
        )

    async def release(self, admission: Admission) -> None:
        if admission.token is None:
            return
        with anyio.CancelScope(shield=True):  # a client that hung up still frees its slot
            await self._store.release(admission.key_id, admission.token)

    async def refund(self, admission: Admission) -> None:
        """Give back the request and units an admitted request was charged: it failed through no fault of
        the caller (vLLM's 5xx), and the Cohere SDK retries a 5xx twice, so an outage must not cost triple."""
        if admission.limits is None:
            return
        limits, admission.limits = admission.limits, None  # once only
        self._rpm_blocked_until.pop(admission.key_id, None)  # the refund may open the key's rpm early
        with anyio.CancelScope(shield=True):
            try:
                await self._store.refund(admission.key_id, limits, admission.units)
            except StoreUnavailable as exc:  # the charge stands; it expires as any other
                _log.error("rate_limit_refund_failed", key_id=admission.key_id, error=str(exc))
                return
        record = current_record()
        if record is not None:
            record.refunded = True
