"""wrk as the load generator for every HTTP benchmark here: Lua request scripts and parsed results."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Result = dict[str, float]


def _long_string(text: str) -> str:
    """A Lua long-bracket literal: no escaping needed for JSON with quotes, backslashes or UTF-8."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def script(path: Path, body: Any, *, key: str | None = None, method: str = "POST") -> Path:
    """One request, repeated: ``body`` as JSON."""
    lines = [f'wrk.method = "{method}"', 'wrk.headers["Content-Type"] = "application/json"']
    if key is not None:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    lines.append(f"wrk.body = {_long_string(json.dumps(body, ensure_ascii=False))}")
    path.write_text("\n".join(lines) + "\n")
    return path


def weighted_script(
    path: Path, bodies: Sequence[Any], weights: Sequence[float], *, key: str, seed: int
) -> Path:
    """Each request draws one of ``bodies`` with probability proportional to ``weights`` (seeded)."""
    total = sum(weights)
    cdf, running = [], 0.0
    for weight in weights:
        running += weight / total
        cdf.append(f"{running:.12f}")
    cdf[-1] = "1.0"
    literals = ",\n".join(_long_string(json.dumps(body, ensure_ascii=False)) for body in bodies)
    path.write_text(
        f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local bodies = {{
{literals}
}}
local cdf = {{{", ".join(cdf)}}}
math.randomseed({seed})
request = function()
  local r = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format(nil, nil, nil, bodies[lo])
end
"""
    )
    return path


def run(url: str, lua: Path | None, *, seconds: float, connections: int, threads: int = 1) -> Result:
    """requests/s, p50/p99 in ms, and counts of non-2xx answers and socket errors."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "60s"]
    if lua is not None:
        command += ["-s", str(lua)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout  # noqa: S603

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else 0.0

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"wrk printed no {label} latency:\n{out}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": number(r"(\d+) requests in"),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": number(r"Non-2xx or 3xx responses: (\d+)"),
        "socket_errors": float(errors),
    }


def merge(results: Sequence[Result]) -> Result:
    """Interleaved rounds of the same target: summed counts, mean rate, median of the percentiles and of the
    CPU time per request (when measured)."""
    middle = sorted(results, key=lambda r: r["p50_ms"])[len(results) // 2]
    cpu = sorted(r["cpu_us_per_request"] for r in results if "cpu_us_per_request" in r)
    return {
        **({"cpu_us_per_request": round(cpu[len(cpu) // 2], 1)} if cpu else {}),
        "rps": round(sum(r["rps"] for r in results) / len(results), 1),
        "requests": sum(r["requests"] for r in results),
        "p50_ms": round(middle["p50_ms"], 3),
        "p99_ms": round(sorted(r["p99_ms"] for r in results)[len(results) // 2], 3),
        "non_2xx": sum(r["non_2xx"] for r in results),
        "socket_errors": sum(r["socket_errors"] for r in results),
    }
