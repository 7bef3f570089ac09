"""A slowloris against the gateway before and after the slow-client work, side by side (docs/slow-clients.md).

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/slowloris.py [--connections 500] [--seconds 40]

Two gateways run at once on the stand-in vLLM (tests/support/fake_vllm.py): ``before`` is the source at
``--baseline-rev`` (exported with ``git archive``, run from the same venv), ``after`` is this tree with its
default settings. For each kind of slow connection (tests/support/slowloris.py: headers that never end, a body
that never comes, idle keep-alive, silent) both are attacked at the same moment with ``--connections`` each,
while a normal request is sent to each every 0.5 s; the table says how many attacking connections were still
open after 1, 6, 12, 17, 25 and 34 s and how the normal requests fared. JSON under var/bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hot_path import OUT, gateway, processes, stand_in_vllm  # noqa: E402
from gateway.keys import generate  # noqa: E402
from tests.support.slowloris import MODES, Outcome, attack  # noqa: E402

CHECKPOINTS = (1, 6, 12, 17, 25, 34)  # just past the deadlines: 10 s and 15 s after, 30 s before


def export(rev: str) -> Path:
    """The gateway's source at ``rev``, without registering a git worktree."""
    path = OUT / f"source-{rev}"
    if not path.exists():
        archive = subprocess.run(  # noqa: S603  # our git, our arguments
            ["git", "archive", "--format=tar", rev, "gateway", "model_setup"],  # noqa: S607
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        path.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(path, filter="data")
    return path


def row(name: str, outcome: Outcome, seconds: float) -> str:
    still = [str(outcome.open_at(t)) for t in CHECKPOINTS if t <= seconds]
    ok = sum(1 for status, _ in outcome.probes if status == 200)
    latencies = sorted(t for _, t in outcome.probes) or [0.0]
    p50 = statistics.median(latencies) * 1000
    worst = latencies[-1] * 1000
    probes = f"{ok}/{len(outcome.probes)}"
    return f"| {outcome.mode} | {name} | {' | '.join(still)} | {probes} | {p50:.1f} | {worst:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--baseline-rev", default="0730b18", help="the gateway before the slow-client work")
    ns = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raw, line = generate("slowloris")
    results: dict[str, Any] = {"connections": ns.connections, "seconds": ns.seconds, "modes": {}}
    lines = []
    with processes() as procs:
        upstream = stand_in_vllm(procs)
        urls = {
            "before": gateway(
                procs, "slowloris-before", upstream=upstream, keys=line, python_path=export(ns.baseline_rev)
            ),
            "after": gateway(procs, "slowloris-after", upstream=upstream, keys=line),
        }

        async def both(mode: str) -> list[Outcome]:
            return await asyncio.gather(
                *(
                    attack(url, raw, mode, connections=ns.connections, duration=ns.seconds)  # type: ignore[arg-type]
                    for url in urls.values()
                )
            )

        for mode in MODES:
            outcomes = asyncio.run(both(mode))
            for name, outcome in zip(urls, outcomes, strict=True):
                lines.append(row(name, outcome, ns.seconds))
                results["modes"].setdefault(mode, {})[name] = {
                    "opened": outcome.opened,
                    "refused": outcome.refused,
                    "open_at": {t: outcome.open_at(t) for t in CHECKPOINTS},
                    "probes_ok": sum(1 for status, _ in outcome.probes if status == 200),
                    "probes": len(outcome.probes),
                }
    header = " | ".join(f"open after {t} s" for t in CHECKPOINTS if t <= ns.seconds)
    print(f"| connections | gateway | {header} | normal requests OK | p50 ms | worst ms |")
    print("|---|---|" + "---|" * (sum(1 for t in CHECKPOINTS if t <= ns.seconds) + 3))
    print("\n".join(lines))
    (OUT / "slowloris.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
