"""The Search tab: a query, and the Base and EMCL columns side by side; and ``/rank``, the
same search as JSON."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.knob_docs import api_description
from emcl.explorer.knobs import Knobs
from emcl.explorer.results import SearchResult
from emcl.explorer.service import Explorer
from emcl.retrieval.moments import format_span
from ui import exports, plots
from ui.common import SEARCH_EVENT, first_caption, user_errors, video_url
from ui.knob_panel import KnobPanel
from ui.text import PROTOCOL_NAMES, rec_size, search_em_line


@dataclass
class SearchTab:
    tab: gr.Tab
    query: gr.Textbox
    button: gr.Button
    status: gr.Markdown
    base_column: gr.HTML
    emcl_column: gr.HTML
    downloads: exports.Downloads | None = None  # Export: CSV and JSON of the results


def build(explorer: Explorer) -> SearchTab:
    with gr.Tab("Search", id="search") as tab:
        with gr.Row():
            query = gr.Textbox(
                label="Query",
                placeholder="e.g. a red circle moves to the left",
                scale=5,
                lines=1,
                max_lines=3,
                elem_id="emcl-query",
            )
            button = gr.Button("Search", variant="primary", scale=1, elem_id="emcl-search")
        examples = explorer.example_queries(8)
        if examples:
            gr.Examples(
                [[e] for e in examples], inputs=[query], label="Example queries (test captions)"
            )
        status = gr.Markdown("", elem_id="emcl-status")
        downloads = exports.build("results")
        columns = []
        with gr.Row(equal_height=False):
            titles = (
                ("Base · cosine", "base"),
                ("EMCL · cosine after EMCL (small: the score it ranks by)", "emcl"),
            )
            for title, column in titles:
                with gr.Column():
                    gr.Markdown(f"#### {title}", elem_classes="emcl-col-title")
                    empty = plots.results_html([], 1, str, str, column)
                    columns.append(gr.HTML(empty, elem_id=f"emcl-{column}"))
    return SearchTab(tab, query, button, status, *columns, downloads=downloads)


def render(explorer: Explorer, result: SearchResult) -> tuple[str, str, str, str]:
    """Both columns' HTML, the status line and the effective-K line for one result."""

    def column(hits: list, name: str) -> str:
        """One column's cards; a long video's player starts at its matched window, whose
        span leads the caption."""
        spans = {h.video_id: h.span for h in hits}

        def url(video_id: str) -> str:
            span = spans.get(video_id)
            start = f"#t={span[0]:g}" if span else ""  # a media fragment: the player seeks
            return video_url(explorer.video_path(video_id)) + start

        def caption(video_id: str) -> str:
            where = format_span(spans.get(video_id))
            text = first_caption(explorer, video_id)
            return f"[{where}] {text}" if where else text

        return plots.results_html(hits, top, url, caption, name)

    top, ranks = result.knobs.top_k, result.target_rank
    parts = [
        f"EMCL **{result.knobs.mode}** ({result.knobs.summary()})",
        f"protocol **{PROTOCOL_NAMES[result.protocol]}**",
        f"EM run: {result.em_run} (EM context **{result.context}**, "
        f"{result.em_rows} rows per EM run)",
        f"effective K **{result.effective_k}**",
        f"EMCL's size **{rec_size(result.rec_ratio)}**",
        f"{result.ms:.1f} ms",
    ]
    if result.targets:
        parts.append(
            f"ground truth {', '.join(result.targets)}: base **#{ranks['base']}**, "
            f"EMCL **#{ranks['emcl']}**"
        )
    notes = "".join(f"\n\n> {n}" for n in result.notices)
    return (
        column(result.base, "base"),
        column(result.emcl, "emcl"),
        " · ".join(parts) + notes,
        search_em_line(result),
    )


def outputs(tab: SearchTab, panel: KnobPanel) -> list[gr.components.Component]:
    """What :func:`render` fills, in its order (the last: the Search tab's panel line)."""
    return [tab.base_column, tab.emcl_column, tab.status, panel.runs["search"]]


def search_page(explorer: Explorer, query: str, knobs: Knobs) -> tuple[SearchResult, tuple]:
    """What the page's Search does: the service's result and :func:`render` of it."""
    result = explorer.rank(query, knobs)
    return result, render(explorer, result)


def wire(tab: SearchTab, panel: KnobPanel, explorer: Explorer, send_to: list) -> None:
    """Search on click or Enter; the ground truth (or the top EMCL hit), the query and its
    matched window are sent to ``send_to`` (the Subspaces tab's video, caption and window)."""

    def search(query: str, knobs: Knobs) -> tuple[Any, ...]:
        result, shown = search_page(explorer, query, knobs)
        top = result.targets[0] if result.targets else result.emcl[0].video_id
        span = next((h.span for h in result.emcl if h.video_id == top), None)
        sent = (top, result.query, format_span(span))
        return (*shown, *(gr.update(value=v) for v in sent[: len(send_to)]))

    gr.on(
        [tab.button.click, tab.query.submit],
        panel.bind(search, before=["query"]),
        [tab.query, *panel.inputs],
        [*outputs(tab, panel), *send_to],
        api_name="search",
        trigger_mode="always_last",
        **SEARCH_EVENT,
    )
    if tab.downloads is not None:
        exports.wire_search(tab.downloads, tab.query, panel, explorer)
    wire_api(explorer)


def rank_api(explorer: Explorer) -> Any:
    """``/rank``'s function: its signature is the documented API (docs/design.md, "The API")."""

    def rank(
        query: str,
        beta: float,
        k: int,
        iters: int,
        lam: float,
        init: str,
        top_k: int,
        mode: str,
        protocol: str | None = None,
    ) -> dict:
        """Base and EMCL rankings of the gallery for a text query (JSON). ``protocol`` left
        out: the mode's default (trained in joint mode, inference in inference mode)."""
        seed = explorer.defaults(mode if mode in ("joint", "inference") else None).seed
        knobs = Knobs(
            mode=mode, beta=beta, k=k, iters=iters, lam=lam, init=init, seed=seed, top_k=top_k,
            protocol=protocol,
        )  # fmt: skip
        return explorer.rank(query, knobs).to_json()

    return user_errors(rank)


def wire_api(explorer: Explorer) -> None:
    """``/rank``: the programmatic search, JSON out, the knobs by name."""
    rank = rank_api(explorer)
    described = api_description(rank.__doc__ or "", inspect.signature(rank).parameters)
    gr.api(rank, api_name="rank", api_description=described, **SEARCH_EVENT)
