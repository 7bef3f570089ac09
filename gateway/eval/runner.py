"""Ask one endpoint about every query: stored answers first, the rest with bounded concurrency."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from gateway.eval.client import Endpoint, EndpointClient, Ranked
from gateway.eval.dataset import LabelledQuery
from gateway.eval.store import ResultStore, request_key


@dataclass(frozen=True, slots=True)
class Collected:
    endpoint: Endpoint
    answers: dict[str, Ranked]  # query id -> the endpoint's answer
    sent: int  # requests made by this run
    stored: int  # answers taken from the result store
    seconds: float  # wall time of the requests this run made
    stored_before_tokens: int = 0  # of the stored answers, those kept before rerank-eval kept tokens


def collect(
    client: EndpointClient,
    queries: Sequence[LabelledQuery],
    *,
    store: ResultStore,
    rank_fields: list[str] | None,
    top_n: int | None,
    concurrency: int,
    advance: Callable[[], None] = lambda: None,
) -> Collected:
    """Every query's answer; raises EndpointFailed at the first query the endpoint cannot rank, keeping
    the answers already stored so the next run resumes."""
    answers: dict[str, Ranked] = {}
    todo: list[tuple[LabelledQuery, str]] = []
    before_tokens = 0
    for query in queries:
        key = request_key(query, rank_fields, top_n)
        known = store.get(key)
        if known is None:
            todo.append((query, key))
        else:
            answers[query.id] = known
            before_tokens += store.predates_tokens(key)
            advance()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="rerank-eval") as pool:
        pending: dict[Future[Ranked], tuple[LabelledQuery, str]] = {
            pool.submit(client.rank, query, rank_fields=rank_fields, top_n=top_n): (query, key)
            for query, key in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                query, key = pending.pop(future)
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                ranked = future.result()
                store.put(key, ranked)  # only this thread writes: no lock needed
                answers[query.id] = ranked
                advance()
    seconds = time.perf_counter() - started
    return Collected(client.endpoint, answers, len(todo), len(queries) - len(todo), seconds, before_tokens)
