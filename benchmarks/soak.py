"""A bounded soak of the real stack: memory and file descriptors of every gateway process (docs/http.md).

    .venv/bin/python benchmarks/soak.py [--minutes 5] [--clients 6] [--sample-s 5]

The real vLLM (tiny model, float32, CPU), Redis, and the gateway with two workers sharing Redis for rate
limits. ``--clients`` threads send, on keep-alive connections of Python's http.client (which never checks a
pooled connection before reusing it), a mix of valid rerank requests (half of them from a small set the
score cache holds, half new to vLLM), invalid ones (wrong key with a 110 KB body, unknown path, wrong media
type, broken JSON, a gzip body that inflates past the body limit, a 16 KiB path) and, on raw sockets,
uploads abandoned mid-head or mid-body. Every ``--sample-s`` the RSS (VmRSS) and open descriptors of the
master and each worker are read from /proc.

Flat means: after the warm-up (the first quarter, at least 60 s), no process's RSS rises more than 16 MiB
above its level at the end of the warm-up, and its descriptors more than 16; the exit status says so.
Also counted: 5xx answers, answers other than the ones each request expects, and keep-alive connections
the gateway dropped without saying `Connection: close` (issue 19 found 86 in 300 s before the fix).
Markdown on stdout, JSON under var/bench/soak.json.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hot_path import OUT, Procs, documents, gateway, processes, start_vllm  # noqa: E402
from gateway.keys import generate  # noqa: E402
from tests.support.procs import free_port, workers_of  # noqa: E402

MiB = 1024 * 1024
RSS_BOUND = 16 * MiB
FD_BOUND = 16
MAX_BODY = 1024 * 1024  # small, so a gzip bomb past it is cheap to send and to refuse


@dataclass(frozen=True)
class Call:
    """One request on the keep-alive connection and the status it must get."""

    kind: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    expect: int


def calls(key: str, rng: random.Random) -> list[tuple[float, Any]]:
    """(weight, maker) pairs; a maker returns a Call (or "abandon" for a raw-socket upload)."""
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    hot = [documents(12, tag=f"set{i} ") for i in range(20)]
    bomb = gzip.compress(b'{"query": "' + b" " * (4 * MAX_BODY) + b'"}')
    big = json.dumps({"query": "q", "documents": ["x" * 1000] * 110}).encode()

    def rerank(body: dict[str, Any], kind: str) -> Call:
        return Call(kind, "POST", "/v2/rerank", json.dumps(body).encode(), auth, 200)

    def cached() -> Call:
        return rerank(
            {"model": "rerank-v3.5", "query": "trail shoes", "documents": rng.choice(hot)}, "cached"
        )

    def fresh() -> Call:
        salt = rng.randrange(1 << 30)
        docs = documents(rng.randint(4, 24), tag=f"{salt} ")
        return rerank(
            {"model": "rerank-v3.5", "query": f"shoes {salt}", "documents": docs, "cache": False}, "fresh"
        )

    wrong = {"Authorization": "Bearer rk_" + "x" * 43, "Content-Type": "application/json"}
    return [
        (30, cached),
        (30, fresh),
        (4, lambda: Call("wrong key 110 KB", "POST", "/v2/rerank", big, wrong, 401)),
        (4, lambda: Call("unknown path", "POST", "/v3/rerank", b"{}", auth, 404)),
        (
            4,
            lambda: Call(
                "text/plain", "POST", "/v2/rerank", b"q", {**auth, "Content-Type": "text/plain"}, 415
            ),
        ),
        (4, lambda: Call("broken JSON", "POST", "/v2/rerank", b'{"query": ', auth, 400)),
        (2, lambda: Call("gzip bomb", "POST", "/v2/rerank", bomb, {**auth, "Content-Encoding": "gzip"}, 413)),
        (2, lambda: Call("16 KiB path", "GET", "/" + "a" * 16384, b"", auth, 414)),
        (20, lambda: "abandon"),
    ]


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[str] = field(default_factory=Counter)  # "kind status"
    unexpected: Counter[str] = field(default_factory=Counter)
    dropped_without_notice: int = 0
    closed_with_notice: int = 0
    abandoned: int = 0
    latencies: list[float] = field(default_factory=list)


def abandon(host: str, port: int, rng: random.Random) -> None:
    """An upload that stops mid-head or mid-body and closes."""
    with socket.create_connection((host, port), timeout=10) as sock:
        head = f"POST /v2/rerank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        if rng.random() < 0.5:
            sock.sendall(head.encode())  # the head never ends
        else:
            sock.sendall(f"{head}Content-Length: 60000\r\n\r\n".encode() + b'{"query": "' + b"x" * 20000)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    key: str


def client(target: Target, seed: int, stop: threading.Event, tally: Tally) -> None:
    host, port = target.host, target.port
    rng = random.Random(seed)  # noqa: S311  # a reproducible mix, not a secret
    menu = calls(target.key, rng)
    weights = [w for w, _ in menu]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    announced_close = False
    while not stop.is_set():
        made = rng.choices([m for _, m in menu], weights)[0]()
        if made == "abandon":
            try:
                abandon(host, port, rng)
            except OSError as exc:
                with tally.lock:
                    tally.unexpected[f"abandon {type(exc).__name__}"] += 1
            with tally.lock:
                tally.abandoned += 1
            continue
        reused = connection.sock is not None
        sent = time.monotonic()
        try:
            connection.request(made.method, made.path, made.body, made.headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            with tally.lock:
                if reused and not announced_close:
                    tally.dropped_without_notice += 1
                else:
                    tally.unexpected[f"{made.kind} {type(exc).__name__}"] += 1
            continue
        announced_close = response.will_close
        with tally.lock:
            tally.answers[f"{made.kind} {response.status}"] += 1
            if response.status != made.expect:
                tally.unexpected[f"{made.kind} {response.status}"] += 1
            if announced_close:
                tally.closed_with_notice += 1
            if made.kind in ("cached", "fresh"):
                tally.latencies.append(time.monotonic() - sent)
        if announced_close:
            connection.close()
    connection.close()


def workers(master: int) -> dict[str, int]:
    """The master and each worker by name ("worker-N"), for the table."""
    return {"master": master} | {f"worker-{n}": pid for n, pid in sorted(workers_of(master).items())}


def sample(pids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Process name -> (RSS bytes, open descriptors)."""
    taken = {}
    for name, pid in pids.items():
        status = Path(f"/proc/{pid}/status").read_text()
        (rss_kib,) = (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        taken[name] = (rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd")))
    return taken


def start_redis(procs: Procs) -> str:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs.start(command, env=dict(os.environ), log=OUT / "soak-redis.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--sample-s", type=float, default=5.0)
    ns = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raw, line = generate("soak")
    seconds = ns.minutes * 60
    warm_up = max(60.0, seconds / 4)
    with processes() as procs:
        upstream = start_vllm(procs, "soak-vllm.log")
        redis_url = start_redis(procs)
        url = gateway(
            procs, "soak-gateway", upstream=upstream, keys=line,
            RERANK_WORKERS="2", RERANK_RATE_LIMIT_STORE="redis", RERANK_REDIS_URL=redis_url,
            RERANK_MAX_BODY_BYTES=str(MAX_BODY), RERANK_LOG_LEVEL="warning",
        )  # fmt: skip
        host, port = url.removeprefix("http://").split(":")
        master = procs.started[-1].pid
        pids = workers(master)
        stop, tally = threading.Event(), Tally()
        threads = [
            threading.Thread(
                target=client, args=(Target(host, int(port), raw), seed, stop, tally), daemon=True
            )
            for seed in range(ns.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        while (elapsed := time.monotonic() - started) < seconds:
            assert workers(master) == pids, "a gateway process was replaced during the soak"
            samples.append((elapsed, sample(pids)))
            time.sleep(ns.sample_s)
        stop.set()
        for thread in threads:
            thread.join(90)
        samples.append((time.monotonic() - started, sample(pids)))

    baseline = min(samples, key=lambda s: abs(s[0] - warm_up))[1]
    after = [taken for t, taken in samples if t >= warm_up]
    rows, flat = [], True
    report: dict[str, Any] = {
        "minutes": ns.minutes,
        "clients": ns.clients,
        "warm_up_s": warm_up,
        "processes": {},
    }
    for name in pids:
        rss_growth = max(taken[name][0] for taken in after) - baseline[name][0]
        fd_growth = max(taken[name][1] for taken in after) - baseline[name][1]
        flat &= rss_growth <= RSS_BOUND and fd_growth <= FD_BOUND
        first, last = samples[0][1][name], samples[-1][1][name]
        report["processes"][name] = {
            "rss_start": first[0], "rss_warm": baseline[name][0], "rss_end": last[0],
            "rss_growth_after_warm_up": rss_growth,
            "fds_start": first[1], "fds_warm": baseline[name][1], "fds_end": last[1],
            "fd_growth_after_warm_up": fd_growth,
        }  # fmt: skip
        rows.append(
            f"| {name} | {first[0] / MiB:.0f} | {baseline[name][0] / MiB:.0f} | {last[0] / MiB:.0f} "
            f"| {rss_growth / MiB:+.1f} | {first[1]} | {baseline[name][1]} | {last[1]} | {fd_growth:+d} |"
        )
    valid = sum(n for k, n in tally.answers.items() if k.endswith(" 200"))
    invalid = sum(tally.answers.values()) - valid
    server_errors = sum(n for k, n in tally.answers.items() if k.rsplit(" ", 1)[1].startswith("5"))
    latencies = sorted(tally.latencies) or [0.0]
    p50, p99 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000
    report |= {
        "answers": dict(tally.answers),
        "unexpected": dict(tally.unexpected),
        "valid": valid,
        "invalid": invalid,
        "abandoned": tally.abandoned,
        "server_errors": server_errors,
        "dropped_without_notice": tally.dropped_without_notice,
        "closed_with_notice": tally.closed_with_notice,
        "valid_p50_ms": p50,
        "valid_p99_ms": p99,
        "flat": flat,
    }
    (OUT / "soak.json").write_text(json.dumps(report, indent=2))
    print(
        f"{ns.minutes:g} min, {ns.clients} clients, warm-up {warm_up:.0f} s, sampled every {ns.sample_s:g} s"
    )
    print("\n| process | RSS start MiB | RSS at warm-up MiB | RSS end MiB | max rise after warm-up MiB "
          "| fds start | fds at warm-up | fds end | max rise after warm-up |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"\n{valid:,} valid answers (p50 {p50:.0f} ms, p99 {p99:.0f} ms), {invalid:,} invalid, "
        f"{tally.abandoned:,} uploads abandoned; {server_errors} 5xx; "
        f"{sum(tally.unexpected.values())} unexpected ({dict(tally.unexpected)}); "
        f"{tally.dropped_without_notice} keep-alive connections dropped without notice, "
        f"{tally.closed_with_notice} closed with `Connection: close`; flat: {flat}"
    )
    return 0 if flat and not tally.unexpected and not tally.dropped_without_notice else 1


if __name__ == "__main__":
    raise SystemExit(main())
