"""The Metrics tab: the as-trained t2v/v2t table recomputed on every knob change, sweeps,
the inference-module table one click away, and the ``/metrics`` API."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.core.protocols import BLOCK, INFERENCE, TRAINED
from emcl.explorer.knob_docs import api_description
from emcl.explorer.knobs import SWEEPS, Knobs
from emcl.explorer.service import Explorer
from ui import exports, plots
from ui.common import METRICS_EVENT, PROGRESS, progress_callback, user_errors
from ui.knob_panel import KnobPanel
from ui.text import metrics_caption, metrics_em_line

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
    inference_button: gr.Button
    inference_note: gr.Markdown
    inference_table: gr.Dataframe


def build() -> MetricsTab:
    with gr.Tab("Metrics", id="metrics") as tab:
        gr.Markdown(
            "#### As trained: the EMCL-Net protocol\nText-conditioned frame pooling and one EM "
            "run per block of {} captions × {} videos (docs/method.md §2.1): the protocol the "
            "checkpoints were trained with and the computation of `python -m emcl evaluate`. "
            "Recomputed on every knob change.".format(*BLOCK[TRAINED]),
            elem_classes="emcl-hint",
        )
        note = gr.Markdown("", elem_id="emcl-metrics-note")
        table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="emcl-metrics", wrap=True)
        exports.wire_table(exports.build("metrics"), table, "metrics")  # the table as shown
        gr.Markdown(
            "R@K in %, MdR/MnR are 1-based ranks (lower is better).", elem_classes="emcl-hint"
        )
        with gr.Row():
            sweep_name = gr.Radio(
                list(SWEEPS),
                value="beta",
                label="Sweep (as trained)",
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
            "#### The inference-module protocol\nThe released inference module: mean-pooled, "
            "unit-norm videos, EM on [videos; captions] per {} × {} block "
            "(docs/method.md §2.2).".format(*BLOCK[INFERENCE]),
            elem_classes="emcl-hint",
        )
        with gr.Row():
            inference_button = gr.Button(
                "Compute inference-module rows", scale=1, elem_id="emcl-inference-button"
            )
            inference_note = gr.Markdown("", elem_classes="emcl-hint")
        inference_table = gr.Dataframe(
            headers=HEADERS, interactive=False, elem_id="emcl-inference-table", wrap=True
        )
    return MetricsTab(
        tab,
        note,
        table,
        sweep_name,
        sweep_button,
        sweep_plot,
        inference_button,
        inference_note,
        inference_table,
    )


def live(explorer: Explorer, knobs: Knobs) -> tuple[Any, str, str]:
    """The as-trained table, its caption and the panel's effective-K / EMCL-size line."""
    result = explorer.metrics(knobs)
    return result.table(), metrics_caption(result, knobs), metrics_em_line(result)


def outputs(tab: MetricsTab, panel: KnobPanel) -> list[gr.components.Component]:
    """What :func:`live` fills, in its order."""
    return [tab.table, tab.note, panel.runs["metrics"]]


def wire(tab: MetricsTab, panel: KnobPanel, explorer: Explorer, demo: gr.Blocks) -> None:
    def live_metrics(knobs: Knobs) -> tuple[Any, str, str]:
        return live(explorer, knobs)

    def inference_metrics(knobs: Knobs, progress: gr.Progress = PROGRESS) -> tuple[Any, str]:
        result = explorer.metrics(knobs, "inference", progress_callback(progress))
        return result.table(), metrics_caption(result, knobs)

    def sweep(name: str, knobs: Knobs, progress: gr.Progress = PROGRESS) -> Any:
        result = explorer.sweep(knobs, name, progress_callback(progress))
        return plots.sweep_figure(result.name, result.values, result.series, result.reference)

    demo.load(
        panel.bind(live_metrics),
        panel.inputs,
        outputs(tab, panel),
        api_visibility="private",  # the API's /metrics takes the knobs by name (below)
        **METRICS_EVENT,
    )
    tab.inference_button.click(
        panel.bind(inference_metrics),
        panel.inputs,
        [tab.inference_table, tab.inference_note],
        api_visibility="private",
        **METRICS_EVENT,
    )
    tab.sweep_button.click(
        panel.bind(sweep, before=["name"]),
        [tab.sweep_name, *panel.inputs],
        tab.sweep_plot,
        api_name="sweep",
        **METRICS_EVENT,
    )
    wire_api(explorer)


def wire_api(explorer: Explorer) -> None:
    """``/metrics``: the table as JSON, the knobs by name (as ``/rank`` names its own)."""

    d = Knobs()  # the API's defaults are the knobs' own

    def metrics(
        mode: str = d.mode,
        beta: float = d.beta,
        k: int = d.k,
        iters: int = d.iters,
        lam: float = d.lam,
        init: str = d.init,
        seed: int = d.seed,
        context: str = d.context,
        shortlist: int = d.shortlist,
        isoftmax: bool = d.isoftmax,
        isoftmax_temp: float = d.isoftmax_temp,
        protocol: str = TRAINED,
    ) -> dict:
        """t2v/v2t metrics of Base, Base + EMCL at inference, the EMCL checkpoint without
        and with EM, in ``protocol``. Rows are named as on the page."""
        knobs = Knobs(
            mode=mode,
            beta=beta,
            k=k,
            iters=iters,
            lam=lam,
            init=init,
            seed=seed,
            context=context,
            shortlist=shortlist,
            isoftmax=isoftmax,
            isoftmax_temp=isoftmax_temp,
        )
        return explorer.metrics(knobs, protocol).to_json()

    described = api_description(metrics.__doc__ or "", inspect.signature(metrics).parameters)
    gr.api(user_errors(metrics), api_name="metrics", api_description=described, **METRICS_EVENT)
