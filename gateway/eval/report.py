"""What a run tells people: sentences, a terminal table, JSON for machines, Markdown with plots for eyes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from gateway.eval.cost import Cost, most_expensive, tally
from gateway.eval.metrics import BASELINE, HEADLINE, METRICS, Evaluation, Versus
from gateway.eval.runner import Collected

TESTS = {"student": "paired t-test", "fisher": "Fisher's randomisation test"}
GREEN, RED, GREY, BLUE = "#15803d", "#b91c1c", "#9ca3af", "#1d4ed8"
MAX_LABELLED_QUERIES = 60  # beyond this the per-query plot drops the query ids: they would overlap


@dataclass(frozen=True, slots=True)
class SweepPoint:
    run: str  # the run's name in the evaluation
    endpoint: str  # the plain endpoint it blends
    weights: dict[str, float]


@dataclass(frozen=True, slots=True)
class Context:
    """Everything about the run that is not a metric: the report states it so a reader can repeat it."""

    dataset: str
    queries: int
    rank_fields: list[str] | None
    top_n: int | None
    collected: list[Collected]
    sweep: list[SweepPoint] = field(default_factory=list)
    normalize: str = "minmax"
    command: str = ""
    model_params: dict[str, float] = field(default_factory=dict)  # --model-params: billions, by model

    def costs(self) -> list[Cost]:
        """The named endpoints' tokens; fusion-sweep runs are left out: each asks its endpoint's models."""
        swept = {point.run for point in self.sweep}
        return tally([c for c in self.collected if c.endpoint.name not in swept], self.model_params)


def _ci(versus: Versus) -> str:
    if versus.ci is None:
        return "no interval (one query)"
    return f"{versus.ci[0]:+.3f} to {versus.ci[1]:+.3f}"


def _p(versus: Versus) -> str:
    if versus.p_value is None:
        return "n/a"
    return "<0.001" if versus.p_value < 0.001 else f"{versus.p_value:.3f}"


def _p_phrase(versus: Versus) -> str:
    text = _p(versus)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def _share(share: float | None) -> str:
    if share is None:
        return "n/a"
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"  # a small share keeps a digit


COST_COLUMNS = ("run", HEADLINE, "model", "params", "tokens", "per search", "GPU work (est.)")


def cost_rows(evaluation: Evaluation, costs: Sequence[Cost]) -> list[tuple[str, ...]]:
    """COST_COLUMNS, a row per model an endpoint's answers name: the run, its NDCG@10 and its share of the
    most expensive endpoint's GPU work on the first, so quality and cost read side by side."""
    rows: list[tuple[str, ...]] = []
    for cost in costs:
        parts = [
            (m.model, "?" if m.params_b is None else f"{m.params_b:g}B", m.tokens, m.per_search)
            for m in cost.models
        ]
        if cost.unattributed:
            parts.append(("(no model named)", "?", cost.unattributed, cost.unattributed / cost.reported))
        lead = (cost.run, f"{evaluation.means[cost.run][HEADLINE]:.3f}")
        if not parts:
            rows.append((*lead, "tokens unknown", "", "", "", _share(cost.share)))
        for i, (model, params, tokens, per_search) in enumerate(parts):
            first = i == 0
            rows.append(
                (
                    *(lead if first else ("", "")),
                    model,
                    params,
                    f"{tokens:,}",
                    f"{per_search:,.0f}",
                    _share(cost.share) if first else "",
                )
            )
    return rows


def cost_notes(costs: Sequence[Cost]) -> list[str]:
    """What the token columns mean and what they lack, as sentences."""
    notes: list[str] = []
    most = most_expensive(costs)
    if any(cost.reported for cost in costs):
        how = (
            f"GPU work (est.): tokens times the model's parameters (from its name, or --model-params), as a "
            f"share of {most.run}'s; an estimate from parameter counts, not a measurement."
            if most is not None
            else "GPU work (est.) needs the models' sizes: --model-params MODEL=BILLIONS."
        )
        notes.append(
            "Tokens: the prompts each model scored for the run's answers (their meta.tokens.by_model; a "
            f"score-cache hit counts like a scored prompt), per search on average. {how}"
        )
    for cost in costs:
        unknown = cost.answers - cost.reported
        if unknown:
            reasons = []
            if cost.stored_before_tokens:
                reasons.append(
                    f"{cost.stored_before_tokens} from a result store written before rerank-eval kept tokens "
                    "(--no-store, or another --store, asks again)"
                )
            if unknown - cost.stored_before_tokens:
                reasons.append(f"{unknown - cost.stored_before_tokens} without meta.tokens from the endpoint")
            counted = f"; the numbers are the other {cost.reported}'s" if cost.reported else ""
            notes.append(
                f"{cost.run}: tokens unknown for {unknown} of {cost.answers} answers: "
                f"{'; '.join(reasons)}{counted}."
            )
        if cost.reported and cost.work_per_search is None:
            unsized = ", ".join(cost.unknown_sizes())
            why = (
                "the endpoint does not say which model scored (meta.tokens.by_model)"
                if cost.unattributed or not cost.models
                else f"the size of {unsized} is unknown (--model-params MODEL=BILLIONS)"
            )
            notes.append(f"{cost.run}: no GPU work estimate: {why}.")
    return notes


def verdict(run: str, reference: str, versus: Versus, evaluation: Evaluation, metric: str = HEADLINE) -> str:
    """One sentence: the difference, its interval and p-value, and what that means at the chosen level."""
    level = round((1 - evaluation.alpha) * 100)
    if versus.p_value is None:
        meaning = f"cannot be told apart from the {reference} with one query"
    elif not versus.significant:
        meaning = f"shows no significant difference from the {reference}"
    else:
        meaning = f"is significantly {'better' if versus.delta > 0 else 'worse'} than the {reference}"
    return (
        f"{run} {meaning} on {metric}: {versus.mean:.3f} against {versus.reference_mean:.3f} "
        f"({versus.delta:+.3f}, {level}% CI {_ci(versus)}, {_p_phrase(versus)}; "
        f"{versus.wins} wins, {versus.ties} ties, {versus.losses} losses "
        f"over {len(evaluation.query_ids)} queries)."
    )


def summary(evaluation: Evaluation) -> str:
    """The bottom line against the baseline, over every metric."""
    against = {run: by for (run, reference), by in evaluation.versus.items() if reference == BASELINE}
    differing = sorted(
        f"{run} ({', '.join(m for m, v in by.items() if v.significant)})"
        for run, by in against.items()
        if any(v.significant for v in by.values())
    )
    how = f"{TESTS[evaluation.test]} at the {evaluation.alpha:g} level, {len(evaluation.query_ids)} queries"
    if not differing:
        return f"No run differs significantly from the baseline on any metric ({how})."
    return f"Significantly different from the baseline ({how}): {'; '.join(differing)}."


def print_table(evaluation: Evaluation, context: Context, console: Console) -> None:
    level = round((1 - evaluation.alpha) * 100)
    title = f"{context.dataset}, {len(evaluation.query_ids)} queries (Δ to W/T/L: {HEADLINE} vs baseline)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("run", no_wrap=True)
    for metric in METRICS:
        table.add_column(metric.label, justify="right")
    table.add_column("Δ", justify="right")
    table.add_column(f"{level}% CI", justify="right", no_wrap=True)
    table.add_column("p", justify="right")
    table.add_column("W/T/L", justify="right")
    for run in evaluation.runs:
        cells = []
        for metric in METRICS:
            mean = evaluation.means[run][metric.label]
            versus = evaluation.versus.get((run, BASELINE), {}).get(metric.label)
            mark = "*" if versus is not None and versus.significant else ""
            cells.append(f"{mean:.3f}{mark}")
        headline = evaluation.versus.get((run, BASELINE), {}).get(HEADLINE)
        if headline is None:
            table.add_row(run, *cells, "", "", "", "")
        else:
            wtl = f"{headline.wins}/{headline.ties}/{headline.losses}"
            table.add_row(run, *cells, f"{headline.delta:+.3f}", _ci(headline), _p(headline), wtl)
    console.print(table)
    console.print(
        f"* significant at the {evaluation.alpha:g} level ({TESTS[evaluation.test]} against the baseline); "
        f"relevant = label ≥ {evaluation.relevant} for MRR and recall"
    )
    console.print(summary(evaluation))
    costs = context.costs()
    if any(cost.reported for cost in costs):
        cost_table = Table(title="Quality against GPU work", title_justify="left", box=box.SIMPLE_HEAD)
        for i, column in enumerate(COST_COLUMNS):
            cost_table.add_column(column, justify="left" if i in {0, 2} else "right", no_wrap=i == 0)
        for row in cost_rows(evaluation, costs):
            cost_table.add_row(*row)
        console.print(cost_table)
    for note in cost_notes(costs):
        console.print(note, markup=False, soft_wrap=True)  # one line each: a log greps whole sentences


def as_json(evaluation: Evaluation, context: Context) -> dict[str, Any]:
    return {
        "dataset": {
            "name": context.dataset,
            "queries": context.queries,
            "measured": list(evaluation.query_ids),
            "skipped_no_relevant_candidate": list(evaluation.skipped),
            "relevant_from_label": evaluation.relevant,
        },
        "settings": {
            "rank_fields": context.rank_fields,
            "top_n": context.top_n,
            "test": evaluation.test,
            "alpha": evaluation.alpha,
            "command": context.command,
        },
        "endpoints": [
            {
                "name": c.endpoint.name,
                "base_url": c.endpoint.base_url,
                "model": c.endpoint.model,
                "instruction": c.endpoint.instruction,
                "fusion": c.endpoint.fusion,
                "requests_sent": c.sent,
                "answers_from_store": c.stored,
                "seconds": round(c.seconds, 3),
            }
            for c in context.collected
        ],
        "metrics": evaluation.means,
        "comparisons": [
            {
                "run": run,
                "reference": reference,
                "metric": metric,
                "mean": v.mean,
                "reference_mean": v.reference_mean,
                "delta": v.delta,
                "ci": list(v.ci) if v.ci is not None else None,
                "p_value": v.p_value,
                "significant": v.significant,
                "wins": v.wins,
                "ties": v.ties,
                "losses": v.losses,
            }
            for (run, reference), by_metric in evaluation.versus.items()
            for metric, v in by_metric.items()
        ],
        "sweep": [
            {"run": p.run, "endpoint": p.endpoint, "weights": p.weights, **evaluation.means[p.run]}
            for p in context.sweep
        ],
        "gpu_work": _cost_json(context),
        "per_query": evaluation.per_query,
        "rankings": evaluation.rankings,
        "summary": summary(evaluation),
    }


def _cost_json(context: Context) -> dict[str, Any]:
    costs = context.costs()
    most = most_expensive(costs)
    return {
        "reference": None if most is None else most.run,  # share_of_most is relative to its work
        "model_params": context.model_params,
        "runs": {cost.run: cost.as_json() for cost in costs},
    }


def write(evaluation: Evaluation, context: Context, out: Path) -> list[Path]:
    """results.json, report.md and its plots in ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "report.md"]
    written[0].write_text(json.dumps(as_json(evaluation, context), indent=2, ensure_ascii=False) + "\n")
    plots = [_metrics_plot(evaluation, out / "metrics.png"), _wins_plot(evaluation, out / "wins.png")]
    if context.sweep:
        plots.append(_sweep_plot(evaluation, context.sweep, out / "sweep.png"))
    written[1].write_text(_markdown(evaluation, context, [p.name for p in plots]), encoding="utf-8")
    return [*written, *plots]


def _markdown(evaluation: Evaluation, context: Context, plots: Sequence[str]) -> str:
    level = round((1 - evaluation.alpha) * 100)
    lines = [
        f"# Reranking evaluation: {context.dataset}",
        "",
        f"**{summary(evaluation)}**",
        "",
    ]
    for (run, reference), by_metric in evaluation.versus.items():
        if reference == BASELINE:
            lines.append(f"- {verdict(run, reference, by_metric[HEADLINE], evaluation)}")
    lines += [
        "",
        f"{len(evaluation.query_ids)} of {context.queries} queries measured"
        + (
            f" ({len(evaluation.skipped)} left out: no candidate labelled {evaluation.relevant} or more, "
            "so every order scores alike)"
            if evaluation.skipped
            else ""
        )
        + f". Baseline: the candidates in the order given{_cut(context)}. NDCG uses the labels as gains; "
        f"MRR@10 and Recall@10 count a label of {evaluation.relevant} or more as relevant. Differences are "
        f"paired by query: {level}% confidence intervals of the mean difference (paired t), p-values from "
        f"the {TESTS[evaluation.test]} (ranx), not corrected for the number of comparisons.",
        "",
        "## Metrics",
        "",
        "| run | "
        + " | ".join(m.label for m in METRICS)
        + f" | Δ {HEADLINE} vs baseline ({level}% CI) | p |",
        "|---|" + "---:|" * (len(METRICS) + 2),
    ]
    for run in evaluation.runs:
        versus = evaluation.versus.get((run, BASELINE), {})
        marks = {label: "*" if v.significant else "" for label, v in versus.items()}
        cells = [f"{evaluation.means[run][m.label]:.3f}{marks.get(m.label, '')}" for m in METRICS]
        headline = versus.get(HEADLINE)
        tail = ["", ""] if headline is None else [f"{headline.delta:+.3f} ({_ci(headline)})", _p(headline)]
        lines.append(f"| {run} | " + " | ".join([*cells, *tail]) + " |")
    lines += ["", f"\\* significant at the {evaluation.alpha:g} level against the baseline.", ""]
    lines += _cost_markdown(evaluation, context)
    for name in plots:
        lines += [f"![{name.removesuffix('.png')}]({name})", ""]
    if context.sweep:
        lines += _sweep_markdown(evaluation, context)
    lines += [
        "## All pairs (ranx)",
        "",
        "Superscripts name the runs a run is significantly better than.",
        "",
        "```",
        evaluation.table,
        "```",
        "",
        "## Endpoints",
        "",
        "| run | URL | model | instruction | requests | from store | seconds |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for c in context.collected:
        e = c.endpoint
        instruction = "(default)" if e.instruction is None else e.instruction.replace("|", "\\|")
        lines.append(
            f"| {e.name} | {e.base_url} | {e.model or '(default)'} | {instruction} | {c.sent} | {c.stored} "
            f"| {c.seconds:.1f} |"
        )
    if context.command:
        lines += ["", "Command:", "", "```sh", context.command, "```"]
    return "\n".join(lines) + "\n"


def _cost_markdown(evaluation: Evaluation, context: Context) -> list[str]:
    costs = context.costs()
    notes = cost_notes(costs)
    if not notes:
        return []
    lines = ["## Quality against GPU work", ""]
    if any(cost.reported for cost in costs):
        lines += [
            "| " + " | ".join(COST_COLUMNS) + " |",
            "|---|---:|---|" + "---:|" * (len(COST_COLUMNS) - 3),
        ]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
            for row in cost_rows(evaluation, costs)
        ]
        lines.append("")
    return [*lines, *(f"- {note}" for note in notes), ""]


def _cut(context: Context) -> str:
    return f", cut to the top {context.top_n} like every answer" if context.top_n else ""


def _sweep_markdown(evaluation: Evaluation, context: Context) -> list[str]:
    lines = [
        f"## Fusion sweep ({context.normalize} normalisation)",
        "",
        f"Each row blends the endpoint's score with the named fields; Δ and p against the plain endpoint "
        f"on {HEADLINE}.",
        "",
        "| weights | NDCG@5 | NDCG@10 | MRR@10 | Δ NDCG@10 vs plain | p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for point in context.sweep:
        means = evaluation.means[point.run]
        versus = evaluation.versus[point.run, point.endpoint][HEADLINE]
        weights = ", ".join(f"{name} {weight:g}" for name, weight in point.weights.items())
        lines.append(
            f"| {weights} | {means['NDCG@5']:.3f} | {means['NDCG@10']:.3f} | {means['MRR@10']:.3f} "
            f"| {versus.delta:+.3f} | {_p(versus)} |"
        )
    return [*lines, ""]


def _metrics_plot(evaluation: Evaluation, path: Path) -> Path:
    runs = evaluation.runs
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    means, deltas = figure.subplots(1, 2, width_ratios=[3, 2])
    width = 0.8 / len(runs)
    for r, run in enumerate(runs):
        xs = [m + r * width for m in range(len(METRICS))]
        means.bar(xs, [evaluation.means[run][m.label] for m in METRICS], width, label=run, color=f"C{r}")
    means.set_xticks(
        [m + width * (len(runs) - 1) / 2 for m in range(len(METRICS))], [m.label for m in METRICS]
    )
    means.set_ylim(0, 1)
    means.set_title("Mean per metric")
    means.legend(fontsize="small", loc="lower right")
    others = [run for run in runs if (run, BASELINE) in evaluation.versus]
    step = 0.8 / max(1, len(others))
    for r, run in enumerate(others):
        by_metric = evaluation.versus[run, BASELINE]
        ys = [m + r * step for m in range(len(METRICS))]
        xs = [by_metric[m.label].delta for m in METRICS]
        low = [v.delta - v.ci[0] if (v := by_metric[m.label]).ci else 0.0 for m in METRICS]
        high = [v.ci[1] - v.delta if (v := by_metric[m.label]).ci else 0.0 for m in METRICS]
        deltas.errorbar(xs, ys, xerr=[low, high], fmt="o", capsize=3, color=f"C{runs.index(run)}")
    deltas.axvline(0, color=GREY, linewidth=1)
    deltas.set_yticks(
        [m + step * (len(others) - 1) / 2 for m in range(len(METRICS))], [m.label for m in METRICS]
    )
    deltas.invert_yaxis()
    level = round((1 - evaluation.alpha) * 100)
    deltas.set_title(f"Difference from the baseline, {level}% CI")
    figure.savefig(path, dpi=110)
    return path


def _wins_plot(evaluation: Evaluation, path: Path) -> Path:
    others = [run for run in evaluation.runs if (run, BASELINE) in evaluation.versus]
    rows = max(1, len(others))
    figure = Figure(figsize=(11, 1.2 + 2.0 * rows), layout="constrained")
    axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
    base = evaluation.per_query[BASELINE][HEADLINE]
    for ax, run in zip(axes, others, strict=False):
        scores = evaluation.per_query[run][HEADLINE]
        deltas = sorted(((scores[q] - base[q], q) for q in evaluation.query_ids), reverse=True)
        colors = [GREEN if d > 0 else RED if d < 0 else GREY for d, _ in deltas]
        ax.bar(range(len(deltas)), [d for d, _ in deltas], color=colors)
        ax.axhline(0, color=GREY, linewidth=1)
        versus = evaluation.versus[run, BASELINE][HEADLINE]
        ax.set_title(
            f"{run}: {HEADLINE} per query minus the baseline's — "
            f"{versus.wins} wins, {versus.ties} ties, {versus.losses} losses",
            fontsize="medium",
        )
        if len(deltas) <= MAX_LABELLED_QUERIES:
            ax.set_xticks(range(len(deltas)), [q for _, q in deltas], rotation=90, fontsize="x-small")
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{len(deltas)} queries, best to worst")
        ax.set_ylim(-1, 1)
    figure.savefig(path, dpi=110)
    return path


def _sweep_plot(evaluation: Evaluation, sweep: Sequence[SweepPoint], path: Path) -> Path:
    figure = Figure(figsize=(11, 4), layout="constrained")
    ax = figure.subplots()
    labels = [", ".join(f"{k} {w:g}" for k, w in point.weights.items()) for point in sweep]
    for metric, color in (("NDCG@10", BLUE), ("NDCG@5", GREEN)):
        ax.plot(
            range(len(sweep)),
            [evaluation.means[p.run][metric] for p in sweep],
            "o-",
            color=color,
            label=metric,
        )
    plain = sweep[0].endpoint
    ax.axhline(evaluation.means[plain][HEADLINE], color=BLUE, linestyle=":", label=f"{plain} {HEADLINE}")
    ax.axhline(evaluation.means[BASELINE][HEADLINE], color=GREY, linestyle="--", label=f"baseline {HEADLINE}")
    ax.set_xticks(range(len(sweep)), labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_title("Fusion sweep: the endpoint's score blended with shop signals")
    ax.legend(fontsize="small")
    figure.savefig(path, dpi=110)
    return path
