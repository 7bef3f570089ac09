"""The Blocks layout and its handlers. Everything here runs on the page's server: the browser gets the
components and their values, never the client that holds the API key."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import gradio as gr
import pandas as pd

from gateway.demo import render
from gateway.demo.client import GatewayClient, ModelsUnavailable, RerankFailed
from gateway.demo.compare import PAGE_FAULT, rank_both
from gateway.demo.examples import EXAMPLES, LAPTOPS, Example
from gateway.demo.models import choices
from gateway.demo.products import Format, ProductsError, columns_of, parse

log = logging.getLogger("rerank-demo")

PREFERRED_FIELDS = ("title", "name", "brand", "category", "text")  # picked for the merchandiser at first
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
NO_COMPARISON = ("No comparison", "")  # the "Compare with" choice that ranks with one model only

CSS = """
table.ranked { width: 100%; border-collapse: collapse; font-size: 0.95em; }
table.ranked th, table.ranked td { padding: 6px 8px; border-bottom: 1px solid var(--border-color-primary); }
table.ranked th { text-align: left; font-weight: 600; }
table.ranked td.rank, table.ranked td.was, table.ranked td.moved { text-align: center; white-space: nowrap; }
table.ranked td.score { font-family: var(--font-mono); text-align: right; }
table.ranked td.up { color: #15803d; }
table.ranked td.down { color: #b91c1c; }
p.status { margin: 0.4em 0; }
p.status.error { color: #b91c1c; font-weight: 600; }
div.compare { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 24px; }
div.compare h3 { margin: 0 0 0.2em; font-size: 1.05em; }
table.ranked td.new { color: #1d4ed8; }
table.ranked td.by { font-family: var(--font-mono); font-size: 0.85em; white-space: nowrap; }
p.dropped { color: var(--body-text-color-subdued); font-size: 0.9em; }
"""

ChartValue: TypeAlias = "pd.DataFrame | None"  # None clears the chart
Shown: TypeAlias = tuple[str, str, ChartValue, Any, str]  # status, table, chart, fields, comparison


def build(client: GatewayClient, default_instruction: str) -> gr.Blocks:
    page = gr.Blocks(title="Product rerank: try it", analytics_enabled=False)
    with page:
        gr.Markdown(
            "# Product search reranking\n"
            "Type a shopper's query and the products your search engine found for it; the model puts "
            f"them in order of relevance. This page calls the gateway at `{client.base_url}` with the "
            "Cohere SDK, exactly as a shop would, and is billed like one."
        )
        with gr.Row():
            with gr.Column(scale=5):
                query = gr.Textbox(label="Shopper's query", value=LAPTOPS.query, elem_id="query", max_lines=2)
                fmt = gr.Radio(
                    [f.value for f in Format], value=Format.LINES.value, label="Products as", elem_id="format"
                )
                products = gr.Textbox(
                    label="Products (in the order your search engine returned them)",
                    value=LAPTOPS.products,
                    lines=10,
                    max_lines=24,
                    elem_id="products",
                )
                with gr.Accordion("Upload a .csv, .json or .txt file instead", open=False):
                    upload = gr.File(
                        show_label=False,
                        file_types=[".csv", ".tsv", ".json", ".txt"],
                        type="filepath",
                        height=120,
                        elem_id="upload",
                    )
                fields = gr.CheckboxGroup(
                    [],
                    label="Fields to rank on (sent as rank_fields, in column order)",
                    visible=False,
                    elem_id="rank-fields",
                )
                instruction = gr.Textbox(
                    label="Instruction (prefilled with this deployment's default; edit to steer the model)",
                    value=default_instruction,
                    lines=3,
                    elem_id="instruction",
                )
                top_n = gr.Number(
                    label="Top N (0: all products)", precision=0, minimum=0, value=0, elem_id="top-n"
                )
                # Offered once the page has listed the deployment's models, and only if it has two or more.
                model = gr.Radio([], label="Model (A)", visible=False, elem_id="model")
                versus = gr.Radio(
                    [NO_COMPARISON],
                    value=NO_COMPARISON[1],
                    label="Compare with (B): both orders side by side, below",
                    visible=False,
                    elem_id="compare-with",
                )
                labels = gr.State({})  # model name -> how the page lists it, for the comparison's headings
                go = gr.Button("Rerank", variant="primary", elem_id="rerank")
                gr.Markdown("**Examples**")
                with gr.Row():
                    buttons = [(gr.Button(ex.name, size="sm"), ex) for ex in EXAMPLES]
            with gr.Column(scale=6):
                status = gr.HTML(
                    '<p class="status">Click <b>Rerank</b> to order the products.</p>', elem_id="status"
                )
                ranked = gr.HTML("", elem_id="ranked")
                chart = gr.BarPlot(
                    None,
                    x="product",
                    y="score",
                    title="Scores",
                    y_lim=[0, 1],
                    sort="-y",
                    x_label_angle=-30,
                    height=320,
                    elem_id="scores",
                )
        compared = gr.HTML("", elem_id="compare")

        def rank(  # noqa: PLR0917  # Gradio passes the inputs positionally
            query_text: str,
            text: str,
            fmt_value: str,
            chosen: list[str],
            instr: str,
            n: float | None,
            model_a: str | None,
            model_b: str | None,
            names: dict[str, str],
        ) -> Shown:
            try:
                return _rank(
                    client,
                    default_instruction,
                    query=query_text,
                    text=text,
                    fmt=Format(fmt_value),
                    chosen=chosen or [],
                    instruction=instr,
                    top_n=n,
                    models=(model_a or None, model_b or None),
                    labels=names or {},
                )
            except Exception:  # a bug of the page must still read as a sentence, not a traceback
                log.exception("ranking failed")
                return _error(PAGE_FAULT)

        def refresh_fields(text: str, fmt_value: str, chosen: list[str]) -> Any:
            return _fields_update(columns_of(text, Format(fmt_value)), chosen or [])

        def load_example(example: Example) -> Callable[[], tuple[str, str, str, Any, int]]:
            def load() -> tuple[str, str, str, Any, int]:
                columns = columns_of(example.products, example.format)
                update = _fields_update(columns, list(example.rank_fields))
                return example.query, example.products, example.format.value, update, 0  # top N: all

            return load

        # The rank button is the one event that spends the key; the others only reshape the form (the
        # page's load lists the models, which is billed nothing). None of them is offered as a public API:
        # the page is for people, the gateway is the API.
        inputs = [query, products, fmt, fields, instruction, top_n, model, versus, labels]
        outputs = [status, ranked, chart, fields, compared]
        go.click(rank, inputs, outputs, api_visibility="private", concurrency_limit=4)
        query.submit(rank, inputs, outputs, api_visibility="private", concurrency_limit=4)
        # The fields on offer follow the products when the merchandiser leaves the box (blur: Gradio fires
        # no input event for pasted text) or picks a format. Examples and uploads set them in their own
        # event; a .change listener would race those events' field choices.
        gr.on(
            [products.blur, fmt.input],
            refresh_fields,
            [products, fmt, fields],
            fields,
            api_visibility="private",
            trigger_mode="always_last",
        )
        page.load(lambda: _offer_models(client), None, [model, versus, labels], api_visibility="private")
        upload.upload(_load_file, [upload, fields], [products, fmt, fields], api_visibility="private")
        for button, example in buttons:
            button.click(
                load_example(example), None, [query, products, fmt, fields, top_n], api_visibility="private"
            )
    return page


def _rank(
    client: GatewayClient,
    default_instruction: str,
    *,
    query: str,
    text: str,
    fmt: Format,
    chosen: list[str],
    instruction: str,
    top_n: float | None,
    models: tuple[str | None, str | None],
    labels: dict[str, str],
) -> Shown:
    if not query.strip():
        return _error("Type the shopper's query first.")
    try:
        items = parse(text, fmt)
    except ProductsError as exc:
        return _error(str(exc))
    # The ticked fields in column order (not click order); none ticked (pasted and ranked at once): the
    # likely ones, shown ticked with the result.
    rank_fields = _fields_to_use(items.columns, chosen)
    # Unchanged, the instruction is left out so the deployment's own default applies, whatever it is.
    edited = instruction.strip() if instruction.strip() != default_instruction.strip() else None
    request = partial(
        client.rerank,
        query.strip(),
        items.documents,
        rank_fields=rank_fields or None,
        instruction=edited,
        top_n=int(top_n) if top_n else None,  # 0 or empty: every product
    )
    model_a, model_b = models
    compared = below = ""
    if model_a is None or model_b is None or model_b == model_a:
        try:
            outcome = request(model=model_a)
        except RerankFailed as exc:
            return _error(str(exc))
        if model_b is not None:
            compared = render.error("Pick a model other than A to compare with.")
    else:
        # A's ranking fills the usual results; both, side by side, the comparison under the form.
        a, b = rank_both(
            lambda name: request(model=name),
            (model_a, labels.get(model_a, model_a)),
            (model_b, labels.get(model_b, model_b)),
        )
        compared, below = render.comparison(a, b, items, rank_fields), render.see_below(model_b)
        if a.outcome is None:
            return render.error(a.error or PAGE_FAULT) + below, "", None, gr.skip(), compared
        outcome = a.outcome
    rows = render.rows(outcome, items, rank_fields)
    return (
        render.summary(outcome, len(items.documents), model_a) + below,
        render.table_html(rows),
        render.chart_frame(rows),
        _fields_update(items.columns, rank_fields),
        compared,
    )


def _error(sentence: str) -> Shown:
    return render.error(sentence), "", None, gr.skip(), ""


def _offer_models(client: GatewayClient) -> tuple[Any, Any, dict[str, str]]:
    """The model pickers: shown with two models or more, each model once (its aliases are the same model)."""
    try:
        offered = choices(client.models())
    except ModelsUnavailable as exc:
        log.warning("no comparison offered: %s", exc)
        offered = []
    except Exception:  # the page must still rank with the default model
        log.exception("listing the models failed")
        offered = []
    if len(offered) < 2:  # one model: the page as it always was, nothing to pick
        return gr.skip(), gr.skip(), {}
    options = [(choice.label, choice.name) for choice in offered]
    return (
        gr.Radio(choices=options, value=offered[0].name, visible=True),  # the deployment's default
        gr.Radio(choices=[NO_COMPARISON, *options], value=NO_COMPARISON[1], visible=True),
        {choice.name: choice.label for choice in offered},
    )


def _fields_to_use(columns: list[str], chosen: list[str]) -> list[str]:
    keep = [column for column in columns if column in chosen]
    return keep or [column for column in columns if column in PREFERRED_FIELDS] or columns[:1]


def _fields_update(columns: list[str], chosen: list[str]) -> Any:
    return gr.CheckboxGroup(choices=columns, value=_fields_to_use(columns, chosen), visible=bool(columns))


def _load_file(path: str | None, chosen: list[str]) -> tuple[Any, Any, Any]:
    if not path:
        return gr.skip(), gr.skip(), gr.skip()
    file = Path(path)
    if file.stat().st_size > MAX_UPLOAD_BYTES:
        gr.Warning(f"That file is over {MAX_UPLOAD_BYTES // 2**20} MB; paste or upload fewer products.")
        return gr.skip(), gr.skip(), gr.skip()
    text = file.read_text(encoding="utf-8-sig", errors="replace")
    suffix = file.suffix.lower()
    fmt = Format.JSON if suffix == ".json" else Format.CSV if suffix in {".csv", ".tsv"} else Format.LINES
    return text, fmt.value, _fields_update(columns_of(text, fmt), chosen)


def serve(page: gr.Blocks, *, host: str, port: int, auth: Callable[[str, str], bool] | None) -> str:
    """Start the page in the background and return its URL; the caller blocks (``page.block_thread()``)."""
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="This page spends a real API key: sign in with the page's username and password.",
        share=False,  # never a public tunnel, whatever GRADIO_SHARE says
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,  # exceptions are logged here, never shown in the browser
        footer_links=["gradio"],  # no "Use via API": the gateway is the API
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        theme=gr.themes.Soft(),  # its fonts ship with gradio: the page loads nothing from other hosts
        css=CSS,
    )
    return url
