"""The Metrics tab: t2v/v2t tables recomputed on every knob change, sweeps, and the EMCL-Net
protocol rows on demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.knobs import SWEEPS, Knobs
from emcl.explorer.service import Explorer
from ui import exports, plots
from ui.common import MODEL_EVENT, PROGRESS, progress_callback
from ui.knob_panel import KnobPanel
from ui.text import effective_k_line, metrics_caption

HEADERS = ["model"] + [
    f"{d} {m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")
]


@dataclass
class MetricsTab:
    tab: gr.Tab
    note: gr.Markdown
    table: gr.Dataframe
    sweep_name: gr.Radio
    sweep_button: gr.Button
    sweep_plot: gr.Plot
    reference_button: gr.Button
    reference_note: gr.Markdown
    reference_table: gr.Dataframe


def build() -> MetricsTab:
    with gr.Tab("Metrics", id="metrics") as tab:
        note = gr.Markdown("")
        table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="emcl-metrics", wrap=True)
        exports.wire_table(exports.build("metrics"), table, "metrics")  # the table as shown
        gr.Markdown(
            "R@K in %, MdR/MnR are 1-based ranks (lower is better). "
            "Recomputed on every knob change.",
            elem_classes="emcl-hint",
        )
        with gr.Row():
            sweep_name = gr.Radio(
                list(SWEEPS),
                value="beta",
                label="Sweep",
                info="metrics over preset values of one knob, the others as set",
                scale=3,
            )
            sweep_button = gr.Button("Run sweep", variant="primary", scale=1, elem_id="emcl-sweep")
        sweep_plot = gr.Plot(
            plots.message_figure("Pick a knob and press Run sweep"),
            label="Sweep",
            elem_id="emcl-sweep-plot",
        )
        gr.Markdown(
            "#### As trained: the EMCL-Net protocol\nThe demo models are trained and "
            "evaluated with text-conditioned frame pooling and one EM run per block "
            "of 32 captions × 32 videos (docs/method.md §2.1), too slow to follow every "
            "knob: computed on demand with the current knobs (3–10 s on 2 CPU cores).",
            elem_classes="emcl-hint",
        )
        with gr.Row():
            reference_button = gr.Button(
                "Compute EMCL-Net protocol rows", scale=1, elem_id="emcl-reference"
            )
            reference_note = gr.Markdown("", elem_classes="emcl-hint")
        reference_table = gr.Dataframe(
            headers=HEADERS, interactive=False, elem_id="emcl-reference-table", wrap=True
        )
    return MetricsTab(
        tab,
        note,
        table,
        sweep_name,
        sweep_button,
        sweep_plot,
        reference_button,
        reference_note,
        reference_table,
    )


def live(explorer: Explorer, knobs: Knobs) -> tuple[Any, str, str]:
    """The live table, its caption and the effective-K line for ``knobs``."""
    result = explorer.metrics(knobs)
    return result.table(), metrics_caption(result, knobs), effective_k_line(result)


def outputs(tab: MetricsTab, panel: KnobPanel) -> list[gr.components.Component]:
    """What :func:`live` fills, in its order."""
    return [tab.table, tab.note, panel.effective_k]


def wire(tab: MetricsTab, panel: KnobPanel, explorer: Explorer, demo: gr.Blocks) -> None:
    def metrics(knobs: Knobs) -> tuple[Any, str, str]:
        return live(explorer, knobs)

    def reference_metrics(knobs: Knobs, progress: gr.Progress = PROGRESS) -> tuple[Any, str]:
        result = explorer.metrics(knobs, "emclnet", progress_callback(progress))
        return result.table(), metrics_caption(result, knobs)

    def sweep(name: str, knobs: Knobs, progress: gr.Progress = PROGRESS) -> Any:
        result = explorer.sweep(knobs, name, progress_callback(progress))
        return plots.sweep_figure(result.name, result.values, result.series, result.reference)

    demo.load(
        panel.bind(metrics), panel.inputs, outputs(tab, panel), api_name="metrics", **MODEL_EVENT
    )
    tab.reference_button.click(
        panel.bind(reference_metrics),
        panel.inputs,
        [tab.reference_table, tab.reference_note],
        api_name="reference_metrics",
        **MODEL_EVENT,
    )
    tab.sweep_button.click(
        panel.bind(sweep, before=["name"]),
        [tab.sweep_name, *panel.inputs],
        tab.sweep_plot,
        api_name="sweep",
        **MODEL_EVENT,
    )
