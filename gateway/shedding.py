"""Load shedding: a bounded number of query-document pairs in flight to vLLM, a short priority queue in front.

Without a bound every request goes to vLLM, where it queues until the upstream timeout (60 s) under overload,
while the Cohere SDK would rather get a fast 503 with a Retry-After and try again. Here a request needing more
pairs than are free waits in a bounded queue ordered by Cohere v2's ``priority`` (lower first, 0 the default;
arrival order within one priority) for at most ``wait_s``, then is refused with 503 and a Retry-After
estimated from the pairs ahead of it and the pairs per second vLLM has been finishing. When the queue is full
a request of better priority takes the place of the worst waiting one (which is refused at once), so a shop's
interactive traffic overtakes a batch job's instead of being turned away by it.

The queue is strict: its head is served first even if a smaller request behind it would fit, so a large
request is never starved by small ones. A request needing more pairs than the whole bound runs alone.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field

from gateway.errors import ApiError, ErrorKind
from gateway.record import current_record

THROUGHPUT_WINDOW_S = 30.0  # vLLM calls finished this recently give the rate behind Retry-After
RATE_REUSE_S = 1.0  # a burst of refusals computes that rate once, not once each
MAX_RETRY_AFTER_S = 60


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    pairs: int = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class Shedder:
    """``async with shedder.slot(pairs, priority):`` around a vLLM call; raises ApiError(OVERLOADED)."""

    def __init__(
        self,
        *,
        max_pairs: int,
        max_queued: int,
        wait_s: float,
    ) -> None:
        self.max_pairs = max_pairs
        self._free = max_pairs
        self._max_queued = max_queued
        self._wait_s = wait_s
        self._heap: list[_Waiter] = []
        self._waiting = 0  # live waiters (the heap may hold ones that left)
        self._seq = itertools.count()
        # (start, end, pairs) of the vLLM calls finished within the window, in the order they finished
        self._finished: deque[tuple[float, float, int]] = deque()
        self._rate = (float("-inf"), 0.0)  # (when computed, pairs per second)

    @property
    def in_flight(self) -> int:
        return self.max_pairs - self._free

    @property
    def queued(self) -> int:
        return self._waiting

    def slot(self, pairs: int, priority: int) -> _Slot:
        return _Slot(self, pairs, priority)

    async def acquire(self, pairs: int, priority: int) -> int:
        """Take ``pairs`` (queueing if need be; at most the whole bound) and return how many were taken."""
        need = min(pairs, self.max_pairs)
        if self._waiting == 0 and self._free >= need:
            self._free -= need
            waited_ms = 0.0
        else:
            started = time.perf_counter()
            await self._queue(need, priority)
            waited_ms = (time.perf_counter() - started) * 1000
        record = current_record()
        if record is not None:  # a cascade's two stages each wait: the request waited for both
            record.queue_ms = (record.queue_ms or 0.0) + waited_ms
        return need

    def release(self, need: int, pairs: int, called: float) -> None:
        """Give back what ``acquire`` took; the call (from ``called``, monotonic) counts towards the rate."""
        self._give(need)
        now = time.monotonic()
        self._finished.append((called, now, pairs))
        self._forget_before(now - THROUGHPUT_WINDOW_S)

    def _give(self, need: int) -> None:
        self._free += need
        self._grant()

    def _grant(self) -> None:
        """Hand free pairs to the head of the queue for as long as it fits."""
        heap = self._heap
        while heap:
            head = heap[0]
            if head.granted.done():  # left (timed out, evicted, client gone)
                heapq.heappop(heap)
                continue
            if head.pairs > self._free:
                return
            heapq.heappop(heap)
            self._waiting -= 1
            self._free -= head.pairs
            head.granted.set_result(None)

    async def _queue(self, need: int, priority: int) -> None:
        if self._waiting >= self._max_queued:
            worst = max((w for w in self._heap if not w.granted.done()), default=None)
            if worst is None or worst.priority <= priority:
                raise self._refusal("queue_full", need, priority)
            self._waiting -= 1  # the worst waiter makes room: refused now rather than at its timeout
            worst.granted.set_exception(self._refusal("evicted", worst.pairs, worst.priority, record=False))
        waiter = _Waiter(priority, next(self._seq), need, asyncio.get_running_loop().create_future())
        heapq.heappush(self._heap, waiter)
        self._waiting += 1
        self._grant()  # it may be the new head, and fit where the old head did not
        try:
            async with asyncio.timeout(self._wait_s):
                await asyncio.shield(waiter.granted)
        except TimeoutError:
            if waiter.granted.done() and waiter.granted.exception() is None:
                return  # granted as the timer fired: the pairs are ours
            self._leave(waiter)
            raise self._refusal("queue_timeout", need, priority) from None
        except ApiError as exc:  # evicted
            record = current_record()
            if record is not None:
                record.shed = "evicted"
            raise exc from None
        except asyncio.CancelledError:  # the client went away while waiting
            if waiter.granted.done() and waiter.granted.exception() is None:
                self._give(need)
            else:
                self._leave(waiter)
            raise

    def _leave(self, waiter: _Waiter) -> None:
        if not waiter.granted.done():
            waiter.granted.cancel()
            self._waiting -= 1
            self._grant()  # it may have been the head that blocked smaller ones behind it

    def retry_after(self, need: int, priority: int) -> int:
        """Seconds until ``need`` pairs at ``priority`` could start: the pairs in flight and queued ahead of
        it, at the rate vLLM has been finishing pairs lately (the wait bound while nothing is known)."""
        rate = self._pairs_per_second()
        if rate is None:
            return max(1, math.ceil(self._wait_s))
        ahead = sum(w.pairs for w in self._heap if not w.granted.done() and w.priority <= priority)
        backlog = self.in_flight + ahead + need
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(backlog / rate)))

    def _forget_before(self, cutoff: float) -> None:
        finished = self._finished
        while finished and finished[0][1] < cutoff:
            finished.popleft()

    def _pairs_per_second(self) -> float | None:
        """Pairs vLLM finished per second while it was busy with ours (idle time does not count), lately."""
        now = time.monotonic()
        computed, rate = self._rate
        if now - computed < RATE_REUSE_S:
            return rate
        self._forget_before(now - THROUGHPUT_WINDOW_S)
        finished = self._finished
        if not finished:
            return None
        busy, covered = 0.0, float("-inf")  # length of the union of the calls' intervals
        for start, end, _ in sorted(finished):
            if end > covered:
                busy += end - max(start, covered)
                covered = end
        rate = sum(pairs for _, _, pairs in finished) / max(busy, 0.001)
        self._rate = (now, rate)
        return rate

    def _refusal(self, reason: str, need: int, priority: int, *, record: bool = True) -> ApiError:
        current = current_record() if record else None
        if current is not None:
            current.shed = reason
        retry_after = self.retry_after(need, priority)
        why = {
            "queue_full": "the queue is full",
            "queue_timeout": f"no capacity freed within {self._wait_s:g} s",
            "evicted": "requests of higher priority took its place in the queue",
        }[reason]
        return ApiError(
            ErrorKind.OVERLOADED,
            f"the model server is overloaded ({why}); retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class _Slot:
    """``Shedder.slot``: pairs taken on entry, waiting in the queue if need be, and given back on exit. A
    class, not a generator-based context manager: it is on every vLLM call's path, and costs a quarter."""

    __slots__ = ("_called", "_need", "_pairs", "_priority", "_shedder")

    def __init__(self, shedder: Shedder, pairs: int, priority: int) -> None:
        self._shedder, self._pairs, self._priority = shedder, pairs, priority
        self._need, self._called = 0, 0.0

    async def __aenter__(self) -> None:
        self._need = await self._shedder.acquire(self._pairs, self._priority)
        self._called = time.monotonic()

    async def __aexit__(self, *exc_info: object) -> None:
        self._shedder.release(self._need, self._pairs, self._called)
