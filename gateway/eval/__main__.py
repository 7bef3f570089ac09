"""``rerank-eval`` (also ``python -m gateway eval``): does reranking beat the order a shop has today,
and does a cheaper deployment still rank like the reference?

    rerank-eval smoke --endpoint ours=http://localhost:8000 --api-key-file ours=./key
    rerank-eval export.jsonl --endpoint small=http://a:8000 --endpoint large=http://b:8000 \\
        --api-key-file ./key --sweep ctr=0,0.1,0.2,0.4
    rerank-eval shopping_queries_dataset_examples.parquet \\
        --esci-products shopping_queries_dataset_products.parquet --esci-split test --esci-locale us \\
        --limit 500 --endpoint ours=http://localhost:8000 --api-key-file ours=./key
    rerank-eval query-log.jsonl --endpoint fp32=http://a:8000 --endpoint fp8=http://b:8000 \\
        --api-key-file ./key --reference fp32 --candidate fp8 --min-tau 0.9 --max-score-diff 0.05

Options that differ per endpoint take NAME=VALUE (for that endpoint) or VALUE (for every endpoint):
--api-key-file, --model, --instruction. Keys come from files (or RERANK_EVAL_API_KEY), never the
command line. Answers are kept in the result store, so an interrupted run resumes where it stopped.
Beside each endpoint's NDCG the report shows the tokens each model scored (meta.tokens.by_model) and the
GPU work they stand for, estimated from the models' sizes: large-only, cascade and small-only side by side.

With --reference and --candidate it is the agreement gate instead of the relevance report, on labelled
searches or a query log: one line "rerank-eval: FAIL ..." per bound missed, on stderr.
Exit status: 0 done (gate passed), 1 an endpoint failed, 2 a usage or data error, 3 the gate failed.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.eval.bounds import THRESHOLDS, Bound, bounds_from
from gateway.eval.dataset import SMOKE, DatasetError, LabelledSet, load

if TYPE_CHECKING:
    from gateway.eval.client import Endpoint

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
DEFAULT_OUT = Path("var/eval")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "data",
        help=f"searches: a JSONL file (labelled, or a query log for the gate), ESCI examples, or '{SMOKE}'",
    )
    parser.add_argument("--format", choices=["auto", "jsonl", "esci"], default="auto", dest="layout")
    esci = parser.add_argument_group("ESCI")
    esci.add_argument("--esci-products", type=Path, help="shopping_queries_dataset_products (product text)")
    esci.add_argument("--esci-split", help="keep one split: train or test")
    esci.add_argument("--esci-version", choices=["small", "large"], help="keep the rows of one version")
    esci.add_argument("--esci-locale", help="keep one product_locale: us, es or jp")
    calls = parser.add_argument_group("endpoints")
    calls.add_argument("--endpoint", action="append", default=[], metavar="NAME=URL", help="repeatable")
    calls.add_argument("--api-key-file", action="append", default=[], metavar="[NAME=]PATH")
    calls.add_argument("--model", action="append", default=[], metavar="[NAME=]MODEL")
    calls.add_argument("--instruction", action="append", default=[], metavar="[NAME=]TEXT")
    calls.add_argument("--rank-fields", help="comma-separated product fields (default: the data set's)")
    calls.add_argument("--top-n", type=int, help="ask for (and measure) only the top N")
    calls.add_argument("--concurrency", type=int, default=4, help="requests in flight per endpoint")
    calls.add_argument("--limit", type=int, help="only the first N queries")
    calls.add_argument("--timeout-s", type=float, default=60.0)
    calls.add_argument("--retries", type=int, default=3, help="per request, on 429 and 5xx (Retry-After)")
    fusion = parser.add_argument_group("fusion sweep (this gateway's extension)")
    fusion.add_argument(
        "--sweep", action="append", default=[], metavar="FIELD=W1,W2,...", help="repeatable: a grid"
    )
    fusion.add_argument("--sweep-endpoint", metavar="NAME", help="the endpoint to blend (default: the first)")
    fusion.add_argument("--sweep-normalize", choices=["minmax", "none"], default="minmax")
    measure = parser.add_argument_group("measuring")
    measure.add_argument("--relevant", type=int, help="label counted relevant by MRR and recall (default 2)")
    measure.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    measure.add_argument("--test", choices=["student", "fisher"], default="student")
    measure.add_argument(
        "--model-params",
        action="append",
        default=[],
        metavar="MODEL=BILLIONS",
        help="a model's size for the GPU-work estimate (default: from its name, e.g. qwen3-reranker-0.6b)",
    )
    gate = parser.add_argument_group(
        "agreement gate", "the candidate against the reference on the same searches; exit 3 outside a bound"
    )
    gate.add_argument("--reference", metavar="NAME", help="the --endpoint that ranks as it should")
    gate.add_argument(
        "--candidate", metavar="NAME", help="the --endpoint to release (smaller, quantised, ...)"
    )
    gate.add_argument(
        "--overlap-at", type=int, default=10, metavar="K", help="top-k overlap's k (default 10)"
    )
    for threshold in THRESHOLDS:
        gate.add_argument(threshold.flag, type=float, metavar="X", help=threshold.help)
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="report directory (default var/eval/<data set>)")
    output.add_argument("--store", type=Path, help="result store directory (default var/eval/store)")
    output.add_argument("--no-store", action="store_true", help="ask every endpoint afresh, keep nothing")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


class UsageError(ValueError):
    """A setting the command cannot run with; the message says what to change."""


def _per_endpoint(values: list[str], names: Sequence[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` for one endpoint, a bare ``VALUE`` for every endpoint without its own."""
    chosen: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        key = name if sep and name in names else "*"
        if key in chosen:
            raise UsageError(f"{option} given twice for {'every endpoint' if key == '*' else key}")
        chosen[key] = rest if key != "*" else value
    return chosen


def _read_key(path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read the API key file {path}: {exc.strerror}") from None
    if not text or len(text.split()) != 1:
        raise UsageError(f"the API key file {path} must hold exactly one raw key")
    return text


def sweep_grid(specs: list[str]) -> list[dict[str, float]]:
    axes: list[list[tuple[str, float]]] = []
    for spec in specs:
        name, sep, weights = spec.partition("=")
        try:
            values = [float(w) for w in weights.split(",")] if sep and name else []
        except ValueError:
            values = []
        if not values or not all(0.0 <= w <= 1.0 for w in values):
            raise UsageError(f"--sweep {spec}: expected FIELD=W1,W2,... with weights from 0 to 1")
        axes.append([(name, w) for w in values])
    grid = [dict(point) for point in itertools.product(*axes)]
    return [weights for weights in grid if sum(weights.values()) <= 1.0 + 1e-9]


def model_params(specs: list[str]) -> dict[str, float]:
    """--model-params MODEL=BILLIONS, by the model name the answers give (meta.tokens.by_model)."""
    params: dict[str, float] = {}
    for spec in specs:
        model, sep, value = spec.rpartition("=")
        try:
            billions = float(value) if sep and model else math.nan
        except ValueError:
            billions = math.nan
        if not (math.isfinite(billions) and billions > 0):
            raise UsageError(f"--model-params {spec}: expected MODEL=BILLIONS, a positive number (4 for 4B)")
        params[model] = billions
    return params


def _endpoints(ns: argparse.Namespace, baseline: str) -> list[Endpoint]:
    """The --endpoint list with each one's key, model and instruction; ``baseline`` is a reserved name."""
    from gateway.eval.client import Endpoint  # noqa: PLC0415  # the SDK is large: not for --help or usage

    names: list[str] = []
    for spec in ns.endpoint:
        name, sep, url = spec.partition("=")
        if not sep or not NAME_RE.match(name) or not url.startswith(("http://", "https://")):
            raise UsageError(f"--endpoint {spec}: expected NAME=http(s)://host[:port]")
        if name in names or name == baseline:
            raise UsageError(f"--endpoint {name}: names must be unique and not '{baseline}'")
        names.append(name)
    if not names:
        raise UsageError("name at least one --endpoint NAME=URL")
    keys = _per_endpoint(ns.api_key_file, names, "--api-key-file")
    models = _per_endpoint(ns.model, names, "--model")
    instructions = _per_endpoint(ns.instruction, names, "--instruction")
    endpoints: list[Endpoint] = []
    for spec, name in zip(ns.endpoint, names, strict=True):
        key_file = keys.get(name, keys.get("*"))
        api_key = _read_key(key_file) if key_file else os.environ.get("RERANK_EVAL_API_KEY", "").strip()
        if not api_key:
            raise UsageError(f"no API key for {name}: --api-key-file {name}=PATH (or RERANK_EVAL_API_KEY)")
        model, instruction = models.get(name, models.get("*")), instructions.get(name, instructions.get("*"))
        endpoints.append(Endpoint(name, spec.partition("=")[2], api_key, model, instruction))
    return endpoints


def gate_bounds(ns: argparse.Namespace, data: LabelledSet, names: Sequence[str]) -> list[Bound]:
    """The gate's settings checked before any endpoint is asked: a pipeline learns of a typo at once."""
    if ns.reference is None or ns.candidate is None:
        raise UsageError("the agreement gate needs both --reference NAME and --candidate NAME")
    for option, name in (("--reference", ns.reference), ("--candidate", ns.candidate)):
        if name not in names:
            raise UsageError(f"{option} {name}: no such --endpoint")
    if ns.reference == ns.candidate:
        raise UsageError(
            "--reference and --candidate name the same endpoint: give the candidate its own name"
        )
    others = sorted(set(names) - {ns.reference, ns.candidate})
    if others or ns.sweep:
        extra = ", ".join(others) or "--sweep"
        raise UsageError(
            f"the gate compares two endpoints, nothing else ({extra}): run the report separately"
        )
    if ns.overlap_at < 1:
        raise UsageError("--overlap-at must be at least 1")
    try:
        bounds = bounds_from(vars(ns))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not data.labelled and any(b.threshold.flag == "--max-ndcg-drop" for b in bounds):
        raise UsageError(f"--max-ndcg-drop needs labels; {data.name} has none (a query log)")
    return bounds


def run(ns: argparse.Namespace) -> int:  # noqa: PLR0912, PLR0915  # one straight pipeline, top to bottom
    # Imported here: ranx compiles with numba and matplotlib is large; --help and usage errors stay fast.
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from gateway.eval import agreement, gate, metrics, report  # noqa: PLC0415
    from gateway.eval.client import EndpointClient, EndpointFailed  # noqa: PLC0415
    from gateway.eval.runner import Collected, collect  # noqa: PLC0415
    from gateway.eval.store import ResultStore  # noqa: PLC0415

    data: LabelledSet = load(
        ns.data,
        layout=ns.layout,
        products=ns.esci_products,
        split=ns.esci_split,
        version=ns.esci_version,
        locale=ns.esci_locale,
    ).limited(ns.limit)
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    if not out.is_terminal:  # a log or a file: no window to fit, keep the table's rows on one line each
        out = Console(highlight=False, width=140)

    endpoints = _endpoints(ns, metrics.BASELINE)
    names = [endpoint.name for endpoint in endpoints]
    gating = ns.reference is not None or ns.candidate is not None
    bounds = gate_bounds(ns, data, names) if gating else []
    if not gating and not data.labelled:
        raise UsageError(
            f"{data.name} has no labels (a query log): relevance needs labels; "
            "compare two endpoints on it with --reference NAME --candidate NAME"
        )
    if data.name == SMOKE:
        err.print("rerank-eval: the smoke set checks the pipeline; it is too small to choose a model by")

    sweep: list[report.SweepPoint] = []
    if ns.sweep:
        plain = next((e for e in endpoints if e.name == (ns.sweep_endpoint or names[0])), None)
        if plain is None:
            raise UsageError(f"--sweep-endpoint {ns.sweep_endpoint}: no such --endpoint")
        for weights in sweep_grid(ns.sweep):
            name = plain.name + "+" + "+".join(f"{field}={weight:g}" for field, weight in weights.items())
            fusion = {"fields": weights, "normalize": ns.sweep_normalize}
            endpoints.append(plain.fused(name, fusion))
            sweep.append(report.SweepPoint(name, plain.name, weights))

    rank_fields = ns.rank_fields.split(",") if ns.rank_fields else list(data.rank_fields or []) or None
    if rank_fields:
        err.print(f"rerank-eval: ranking on {', '.join(rank_fields)} (--rank-fields to choose)")
    for option in ("top_n", "concurrency", "limit"):
        value = getattr(ns, option)
        if value is not None and value < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be at least 1")
    relevant = ns.relevant if ns.relevant is not None else metrics.default_relevant(data.max_label)
    params = model_params(ns.model_params)
    store_dir = None if ns.no_store else (ns.store or DEFAULT_OUT / "store")
    queries = data.queries

    collected: list[Collected] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=ns.quiet) as progress:
        for endpoint in endpoints:
            task = progress.add_task(endpoint.name, total=len(queries))
            client = EndpointClient(endpoint, timeout_s=ns.timeout_s, max_retries=ns.retries)
            try:
                collected.append(
                    collect(
                        client,
                        queries,
                        store=ResultStore(store_dir, endpoint),
                        rank_fields=rank_fields,
                        top_n=ns.top_n,
                        concurrency=ns.concurrency,
                        advance=functools.partial(progress.advance, task),
                    )
                )
            except EndpointFailed as exc:
                err.print(f"rerank-eval: {exc}")
                err.print("rerank-eval: answers so far are kept; run the same command again to resume")
                return 1
    command = shlex.join(["rerank-eval", *ns.argv])
    out_dir = ns.out or DEFAULT_OUT / data.name

    if gating:
        answers = {c.endpoint.name: c.answers for c in collected}
        agreed = agreement.compare(
            queries,
            (ns.reference, answers[ns.reference]),
            (ns.candidate, answers[ns.candidate]),
            k=ns.overlap_at,
            relevant=relevant,
        )
        failures = gate.check(agreed, bounds)
        gate.print_table(agreed, bounds, failures, data.name, out)
        settings = {
            "dataset": data.name,
            "queries": len(queries),
            "rank_fields": rank_fields,
            "top_n": ns.top_n,
        }
        saved = gate.write(gate.as_json(agreed, bounds, failures, settings | {"command": command}), out_dir)
        err.print(f"rerank-eval: wrote {saved}", markup=False)
        # Plain prints: one line each however long (no wrapping), and query ids are not markup.
        for failure in failures:
            print(f"rerank-eval: FAIL {failure.line}", file=sys.stderr)
        if failures:
            return gate.FAILED
        if bounds:
            print(
                f"rerank-eval: PASS {ns.candidate} within {len(bounds)} bounds of {ns.reference}",
                file=sys.stderr,
            )
        return 0

    runs = {metrics.BASELINE: metrics.baseline_run(queries, ns.top_n)}
    runs |= {c.endpoint.name: metrics.answer_run(queries, c.answers) for c in collected}
    pairs = [(name, metrics.BASELINE) for name in runs if name != metrics.BASELINE]
    pairs += [(point.run, point.endpoint) for point in sweep]
    evaluation = metrics.evaluate(queries, runs, pairs=pairs, relevant=relevant, alpha=ns.alpha, test=ns.test)
    context = report.Context(
        dataset=data.name,
        queries=len(queries),
        rank_fields=rank_fields,
        top_n=ns.top_n,
        collected=collected,
        sweep=sweep,
        normalize=ns.sweep_normalize,
        command=command,
        model_params=params,
    )
    report.print_table(evaluation, context, out)
    written = report.write(evaluation, context, out_dir)
    err.print(f"rerank-eval: wrote {', '.join(str(path) for path in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ns = _parser().parse_args(args)
    ns.argv = args  # the report quotes the command that made it (keys are files: nothing secret in it)
    try:
        return run(ns)
    except (UsageError, DatasetError) as exc:
        print(f"rerank-eval: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
