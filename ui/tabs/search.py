"""The Search tab: a query, and the Base and EMCL columns side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.knobs import Knobs
from emcl.explorer.results import SearchResult
from emcl.explorer.service import Explorer
from ui import exports, plots
from ui.common import MODEL_EVENT, first_caption, video_url
from ui.knob_panel import KnobPanel


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
            for title, column in (("Base", "base"), ("EMCL", "emcl")):
                with gr.Column():
                    gr.Markdown(f"#### {title}", elem_classes="emcl-col-title")
                    empty = plots.results_html([], 1, str, str, column)
                    columns.append(gr.HTML(empty, elem_id=f"emcl-{column}"))
    return SearchTab(tab, query, button, status, *columns, downloads=downloads)


def render(explorer: Explorer, result: SearchResult) -> tuple[str, str, str, str]:
    """Both columns' HTML, the status line and the effective-K line for one result."""

    def url(video_id: str) -> str:
        return video_url(explorer.video_path(video_id))

    def caption(video_id: str) -> str:
        return first_caption(explorer, video_id)

    top, ranks = result.knobs.top_k, result.target_rank
    parts = [
        f"EMCL **{result.knobs.mode}** ({result.knobs.summary()})",
        f"EM context **{result.context}** ({result.em_rows} rows per EM run)",
        f"effective K **{result.effective_k}**",
        f"{result.ms:.1f} ms",
    ]
    if result.targets:
        parts.append(
            f"ground truth {', '.join(result.targets)}: base **#{ranks['base']}**, "
            f"EMCL **#{ranks['emcl']}**"
        )
    notes = "".join(f"\n\n> {n}" for n in result.notices)
    return (
        plots.results_html(result.base, top, url, caption, "base"),
        plots.results_html(result.emcl, top, url, caption, "emcl"),
        " · ".join(parts) + notes,
        f"effective K: **{result.effective_k}** (search EM run)",
    )


def outputs(tab: SearchTab, panel: KnobPanel) -> list[gr.components.Component]:
    """What :func:`render` fills, in its order."""
    return [tab.base_column, tab.emcl_column, tab.status, panel.effective_k]


def wire(tab: SearchTab, panel: KnobPanel, explorer: Explorer, send_to: list) -> None:
    """Search on click or Enter; the ground truth (or the top EMCL hit) and the query are
    sent to ``send_to`` (the Subspaces tab's video and caption boxes)."""

    def search(query: str, knobs: Knobs) -> tuple[Any, ...]:
        result = explorer.rank(query, knobs)
        top = result.targets[0] if result.targets else result.emcl[0].video_id
        return (*render(explorer, result), gr.update(value=top), gr.update(value=result.query))

    gr.on(
        [tab.button.click, tab.query.submit],
        panel.bind(search, before=["query"]),
        [tab.query, *panel.inputs],
        [*outputs(tab, panel), *send_to],
        api_name="search",
        trigger_mode="always_last",
        **MODEL_EVENT,
    )
    if tab.downloads is not None:
        exports.wire_search(tab.downloads, tab.query, panel, explorer)
