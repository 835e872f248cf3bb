"""The Train tab: start a fine-tune from the page (base or EMCL-Net, the EMCL layer's training
knobs, seed, epochs, a step cap, the starting weights), follow it (progress, ETA, the loss and
validation R@1 curves), cancel it, and delete finished runs. The work is
emcl/training/jobs.py's: one job at a time, in a background process."""

from __future__ import annotations

import datetime
import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from emcl.core.em import BETA_RANGE, ITERS_RANGE, K_RANGE, LAM_RANGE, MOMENTUM_RANGE
from emcl.training.job_progress import JobStatus, format_duration
from emcl.training.jobs import MAKE_PRETRAINED, JobRefused, TrainJobs, TrainRequest
from ui import plots
from ui.common import QUIET

InitChoices = Callable[[], list[tuple[str, str]]]
POLL_S = 2.0
MODELS = {"EMCL-Net (with the EMCL layer)": True, "base (no EMCL layer)": False}
# Its own queue: starting, cancelling and the progress poll never wait behind a metrics run.
TRAIN_EVENT = {"concurrency_id": "training", "concurrency_limit": 4}
RUN_HEADERS = [
    "run",
    "status",
    "user",
    "model",
    "K",
    "seed",
    "step",
    "val R@1",
    "size",
    "started",
    "note",
]
DEFAULTS = TrainRequest(init_from="-")  # the request's own defaults fill the form


@dataclass
class TrainTab:
    tab: gr.Tab
    model: gr.Radio
    k: gr.Number
    iters: gr.Number
    lam: gr.Number
    beta: gr.Number
    momentum: gr.Number
    init: gr.Radio
    seed: gr.Number
    epochs: gr.Number
    max_steps: gr.Number
    weights: gr.Dropdown
    start: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    bar: gr.HTML
    loss_plot: gr.Plot
    val_plot: gr.Plot
    runs: gr.Dataframe
    run_pick: gr.Dropdown
    delete: gr.Button
    poll: gr.Timer

    @property
    def form(self) -> list[gr.components.Component]:
        """The request's inputs, in :func:`request_from_form`'s order."""
        return [
            self.model,
            self.k,
            self.iters,
            self.lam,
            self.beta,
            self.momentum,
            self.init,
            self.seed,
            self.epochs,
            self.max_steps,
            self.weights,
        ]

    @property
    def view(self) -> list[gr.components.Component]:
        """What :func:`view` fills, in its order."""
        return [self.status, self.bar, self.loss_plot, self.val_plot, self.runs, self.run_pick]


# --------------------------------------------------------------------------------------------
# The starting weights
# --------------------------------------------------------------------------------------------
def weight_choices(jobs: TrainJobs, init_choices: InitChoices) -> list[tuple[str, str]]:
    """The shipped pretrained backbone first (marked when it is not made yet), then the app's."""
    pretrained = jobs.settings.pretrained
    label = f"video-pretrained backbone ({Path(pretrained).name})"
    if not os.path.exists(pretrained):
        label += ": not made yet"
    choices = [(label, pretrained)]
    return choices + [(name, path) for name, path in init_choices() if path != pretrained]


def weights_note(jobs: TrainJobs) -> str:
    if os.path.exists(jobs.settings.pretrained):
        return ""
    return (
        f"The pretrained backbone `{jobs.settings.pretrained}` is not there yet; its operator "
        f"makes it with `{MAKE_PRETRAINED}`. Until then, start from a checkpoint."
    )


# --------------------------------------------------------------------------------------------
# Pure views of the jobs (tested without a browser)
# --------------------------------------------------------------------------------------------
def progress_html(status: JobStatus | None) -> str:
    """A bar with the share of steps done and the ETA (empty when there is nothing to show)."""
    if status is None:
        return ""
    p = status.progress
    share = p.fraction if status.running else (1.0 if status.status == "finished" else p.fraction)
    width = 100 * (share or 0.0)
    steps = f"step {p.step} / {p.total_steps}" if p.planned else "preparing the data"
    eta = f", ETA {format_duration(p.eta_s)}" if status.running else ""
    colour = {"failed": plots.WRONG_COLOR, "finished": plots.CORRECT_COLOR}.get(
        status.status, plots.VIDEO_COLOR
    )
    return (
        '<div id="emcl-train-progress" style="font-size:12.5px;color:#334155">'
        f"<div>{html.escape(status.run)}: {html.escape(status.status)}, {steps}{eta}</div>"
        '<div style="background:#e2e8f0;border-radius:6px;height:10px;margin-top:4px">'
        f'<div style="width:{width:.1f}%;height:10px;border-radius:6px;background:{colour}">'
        "</div></div></div>"
    )


def curve_figure(points: tuple[tuple[int, float], ...], title: str, y: str) -> go.Figure:
    """One curve over the steps, or a note saying it is still empty."""
    if not points:
        return plots.message_figure(f"{title}: no points yet", height=260)
    steps, values = zip(*points, strict=True)
    fig = go.Figure(
        go.Scatter(x=steps, y=values, mode="lines+markers", line={"color": plots.SERIES_COLORS[0]})
    )
    fig.update_layout(
        height=260,
        margin={"l": 48, "r": 16, "t": 40, "b": 40},
        font=plots.FONT,
        paper_bgcolor="white",
        plot_bgcolor="white",
        title={"text": title, "x": 0.01, "font": {"size": 14}},
        xaxis_title="step",
        yaxis_title=y,
    )
    return fig


def run_row(status: JobStatus) -> list[Any]:
    r = status.request
    p = status.progress
    val = f"{p.val_r1[-1][1]:.1f}" if p.val_r1 else ""
    started = datetime.datetime.fromtimestamp(status.started).strftime("%Y-%m-%d %H:%M")
    return [
        status.run,
        status.status,
        status.user or "",
        "EMCL" if r.get("emcl") else "base",
        r.get("k") if r.get("emcl") else "",
        r.get("seed"),
        f"{p.step}/{p.total_steps}" if p.planned else "",
        val,
        f"{status.size_bytes / 1e6:.0f} MB",
        started,
        status.message,
    ]


def view(jobs: TrainJobs) -> tuple[Any, ...]:
    """The status line, the bar, both curves, the runs table and the deletable runs."""
    runs = jobs.list_runs()
    latest = next((r for r in runs if r.running), runs[0] if runs else None)
    line = latest.summary() if latest is not None else "No training has run yet."
    if latest is not None and not latest.running:
        line = f"No training is running. Last: {line}"
    p = latest.progress if latest is not None else None
    deletable = [r.run for r in runs if not r.running]
    return (
        line,
        progress_html(latest),
        curve_figure(p.losses if p else (), "Training loss", "loss"),
        curve_figure(p.val_r1 if p else (), "Validation t2v R@1", "R@1 (%)"),
        [run_row(r) for r in runs],
        gr.update(choices=deletable, value=deletable[0] if deletable else None),
    )


def request_from_form(
    model: str,
    k: float,
    iters: float,
    lam: float,
    beta: float,
    momentum: float,
    init: str,
    seed: float,
    epochs: float,
    max_steps: float | None,
    weights: str,
    allowed: list[str],
) -> TrainRequest:
    """The form as a validated request; the starting weights must be one of the offered
    choices (a path is never taken from the page as typed)."""
    if weights not in allowed:
        raise JobRefused("pick the starting weights from the list")
    if model not in MODELS:
        raise JobRefused(f"model must be one of {', '.join(MODELS)}")
    steps = None if max_steps in (None, "", 0) else max_steps
    return TrainRequest(
        init_from=weights,
        emcl=MODELS[model],
        k=k,
        iters=iters,
        lam=lam,
        beta=beta,
        momentum=momentum,
        init=init,
        seed=seed,
        epochs=epochs,
        max_steps=steps,
    )


def user_of(request: gr.Request | None) -> str | None:
    """The signed-in user (logins on), else None: anyone may cancel or delete."""
    return getattr(request, "username", None) or None


# --------------------------------------------------------------------------------------------
# Components and events
# --------------------------------------------------------------------------------------------
def _knob(label: str, value: float, bounds: tuple[float, float], whole: bool, info: str) -> Any:
    low, high = bounds
    return gr.Number(
        value,
        label=label,
        minimum=low,
        maximum=high,
        precision=0 if whole else None,
        step=1 if whole else None,
        info=info,
        min_width=120,
    )


def _form(jobs: TrainJobs, init_choices: InitChoices) -> dict[str, Any]:
    """The request's inputs and the Train and Cancel buttons."""
    d = DEFAULTS
    with gr.Row():
        model = gr.Radio(list(MODELS), value=next(iter(MODELS)), label="model", scale=2)
        weights = gr.Dropdown(
            weight_choices(jobs, init_choices),
            value=jobs.settings.pretrained,
            label="starting weights",
            scale=3,
            info="whose CLIP weights start the model",
            # The list changes as runs finish; the handler checks the value against the list
            # of the moment (request_from_form), not Gradio against the first one.
            allow_custom_value=True,
        )
    gr.Markdown(weights_note(jobs), elem_classes="emcl-hint")
    with gr.Row():
        k = _knob("K", d.k, K_RANGE, True, "subspaces")
        iters = _knob("iterations", d.iters, ITERS_RANGE, True, "E/M iterations")
        lam = _knob("λ", d.lam, LAM_RANGE, False, "E-step temperature")
        beta = _knob("β", d.beta, BETA_RANGE, False, "weight of the reconstruction")
        momentum = _knob("momentum", d.momentum, MOMENTUM_RANGE, False, "of the prior")
        init = gr.Radio(["prior", "data"], value=d.init, label="init", min_width=120)
    with gr.Row():
        seed = _knob("seed", d.seed, (0, 2**31 - 1), True, "weights and batches")
        epochs = _knob("epochs", d.epochs, (1, 1000), True, "passes over the clips")
        max_steps = _knob("max steps", 0, (0, 10**7), True, "a cap on the steps; 0: none")
    with gr.Row():
        start = gr.Button("Train", variant="primary", elem_id="emcl-train-start")
        cancel = gr.Button("Cancel", variant="stop", elem_id="emcl-train-cancel")
    return {
        "model": model,
        "k": k,
        "iters": iters,
        "lam": lam,
        "beta": beta,
        "momentum": momentum,
        "init": init,
        "seed": seed,
        "epochs": epochs,
        "max_steps": max_steps,
        "weights": weights,
        "start": start,
        "cancel": cancel,
    }


def _monitor() -> dict[str, Any]:
    """The job's status, bar and curves, the runs table and deletion, the poll."""
    status = gr.Markdown("", elem_id="emcl-train-status")
    bar = gr.HTML("")
    with gr.Row():
        loss_plot = gr.Plot(label="Training loss", elem_id="emcl-train-loss")
        val_plot = gr.Plot(label="Validation R@1", elem_id="emcl-train-val")
    runs = gr.Dataframe(
        headers=RUN_HEADERS, interactive=False, wrap=True, label="Runs", elem_id="emcl-train-runs"
    )
    with gr.Row():
        run_pick = gr.Dropdown(
            [],
            label="run to delete",
            scale=3,
            allow_custom_value=True,  # the runner checks
        )
        delete = gr.Button("Delete run", scale=1, elem_id="emcl-train-delete")
    poll = gr.Timer(POLL_S, active=False)
    return {
        "status": status,
        "bar": bar,
        "loss_plot": loss_plot,
        "val_plot": val_plot,
        "runs": runs,
        "run_pick": run_pick,
        "delete": delete,
        "poll": poll,
    }


def build(jobs: TrainJobs, init_choices: InitChoices) -> TrainTab:
    with gr.Tab("Train", id="train") as tab:
        gr.Markdown(
            "#### Fine-tune a model on this app's world\nRuns `python -m emcl train --preset "
            f"{jobs.settings.preset}` in the background, one job at a time for everyone on this "
            "server; the finished checkpoint appears only when the run is complete.",
            elem_classes="emcl-hint",
        )
        form = _form(jobs, init_choices)
        monitor = _monitor()
    return TrainTab(tab=tab, **form, **monitor)


def off() -> gr.Tab:
    """The Train tab of a server that does not train: why, and how to turn it on."""
    with gr.Tab("Train", id="train") as tab:
        gr.Markdown(
            "Training from the page is off on this server. It starts processes on the server's "
            "machine, so beyond loopback it needs `--allow-training` together with logins "
            "(`--auth-file`). `python -m emcl train` does the same from a shell (README, "
            "Training).",
            elem_id="emcl-train-off",
        )
    return tab


def _refused(error: ValueError) -> gr.Error:
    return gr.Error(str(error), print_exception=False)


def wire(tab: TrainTab, jobs: TrainJobs, init_choices: InitChoices) -> None:
    outputs = [*tab.view, tab.poll]

    def refresh() -> tuple[Any, ...]:
        return *view(jobs), gr.Timer(active=jobs.current() is not None)

    def opened() -> tuple[Any, ...]:  # choices change as runs finish and the backbone appears
        return *refresh(), gr.update(choices=weight_choices(jobs, init_choices))

    def start_job(
        model: str,
        k: float,
        iters: float,
        lam: float,
        beta: float,
        momentum: float,
        init: str,
        seed: float,
        epochs: float,
        max_steps: float | None,
        weights: str,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        """Start a fine-tune (the parameters by name, as the form sends them)."""
        allowed = [path for _, path in weight_choices(jobs, init_choices)]
        form = (model, k, iters, lam, beta, momentum, init, seed, epochs, max_steps, weights)
        try:
            jobs.start(request_from_form(*form, allowed=allowed), user_of(request))
        except ValueError as error:  # JobRefused and the request's own checks
            raise _refused(error) from None
        return refresh()

    def cancel_job(request: gr.Request) -> tuple[Any, ...]:
        try:
            jobs.cancel(user_of(request))
        except JobRefused as error:
            raise _refused(error) from None
        return refresh()

    def delete_run(name: str | None, request: gr.Request) -> tuple[Any, ...]:
        try:
            jobs.delete_run(name or "", user_of(request))
        except JobRefused as error:
            raise _refused(error) from None
        return refresh()

    tab.tab.select(opened, None, [*outputs, tab.weights], api_visibility="private", **TRAIN_EVENT)
    tab.start.click(start_job, tab.form, outputs, api_name="train_start", **TRAIN_EVENT)
    tab.cancel.click(cancel_job, None, outputs, api_name="train_cancel", **TRAIN_EVENT)
    tab.delete.click(delete_run, tab.run_pick, outputs, api_name="train_delete", **TRAIN_EVENT)
    tab.poll.tick(refresh, None, outputs, **QUIET, **TRAIN_EVENT)


__all__ = ["TrainTab", "build", "request_from_form", "view", "weight_choices", "wire"]
