"""The knob panel: the widgets, their mapping to knob names, and handlers that receive one
validated :class:`Knobs` instead of a tuple of widget values.

λ and τ live on log₁₀ sliders; their API parameters are called ``log10_lam`` and
``log10_isoftmax_temp`` and say so. Everything else has the knob's own name, so every event
that takes the knobs has named parameters in the API (``view_api``). Labels, hints, the guide
and the API descriptions come from emcl/explorer/knob_docs.py.

Under the knobs, one line per tab that reports an EM run (effective K and EMCL's size, naming
the run): each tab writes its own line, and only the open tab's line is shown, so the panel
never shows one tab's figures while another tab is open."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.core.protocols import PROTOCOLS
from emcl.explorer.knob_docs import LOG_PREFIX, api_description, parameter_doc
from emcl.explorer.knobs import INITS, LIMITS, KnobError, Knobs
from emcl.explorer.service import Explorer
from emcl.retrieval.ranking import CONTEXTS
from ui.common import user_errors
from ui.text import knob_guide, no_run_line

LOG_KNOBS = {f"{LOG_PREFIX}{k}": k for k in ("lam", "isoftmax_temp")}  # widget -> knob
WIDGETS = tuple(next((w for w, k in LOG_KNOBS.items() if k == n), n) for n in Knobs.names())
RUN_LINES = ("search", "metrics", "other")  # the panel's EM-run lines: these tabs, the rest


def _from_log(widget: str, value: object) -> float:
    """10 ** value; a value that is not a finite number is passed on for Knobs to refuse."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KnobError(f"{widget} must be a finite number, got {value!r}")
    try:
        return float(f"{10**value:.4g}")
    except OverflowError:
        return math.inf


def knobs_from_widgets(values: dict[str, Any]) -> Knobs:
    """The widgets' values (by widget name) as validated knobs."""
    named = {LOG_KNOBS.get(w, w): v for w, v in values.items()}
    for widget, knob in LOG_KNOBS.items():
        named[knob] = _from_log(widget, values[widget])
    return Knobs.from_dict(named)


def widget_values(knobs: Knobs) -> list[Any]:
    """The widgets' values (in :data:`WIDGETS` order) that show ``knobs``."""
    values = knobs.to_dict()
    return [math.log10(values[LOG_KNOBS[w]]) if w in LOG_KNOBS else values[w] for w in WIDGETS]


@dataclass
class KnobPanel:
    widgets: dict[str, gr.components.Component]  # widget name -> component
    runs: dict[str, gr.Markdown]  # RUN_LINES -> that tab's EM-run line (only the open one shows)
    lam_value: gr.Markdown
    reset: gr.Button

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.widgets[w] for w in WIDGETS]

    def bind(self, handler: Callable, before: Sequence[str] = ()) -> Callable:
        """A Gradio handler taking ``before`` inputs then every widget, by name, that calls
        ``handler(*before_values, knobs, [progress=...])`` and maps refusals to gr.Error."""
        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in before]
        params += [inspect.Parameter(w, inspect.Parameter.POSITIONAL_OR_KEYWORD) for w in WIDGETS]
        takes_progress = "progress" in inspect.signature(handler).parameters
        if takes_progress:
            default = inspect.signature(handler).parameters["progress"].default
            params.append(
                inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=default)
            )
        count = len(before)

        @functools.wraps(handler)
        def bound(*values: Any, **kwargs: Any) -> Any:
            knobs = knobs_from_widgets(dict(zip(WIDGETS, values[count:], strict=True)))
            return handler(*values[:count], knobs, **kwargs)

        bound.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        summary = (inspect.getdoc(handler) or "").split("\n\n")[0]
        bound.__doc__ = api_description(summary, [*before, *WIDGETS])
        return user_errors(bound)


def build(explorer: Explorer) -> KnobPanel:
    """The panel's widgets, showing the explorer's paper defaults."""
    defaults = explorer.defaults()
    modes = ["joint", "inference"] if explorer.has_joint else ["inference"]
    inits = list(INITS) if explorer.has_joint else ["reference", "data"]
    gr.Markdown("### Knobs")
    w: dict[str, gr.components.Component] = {}
    w["mode"] = gr.Radio(modes, value=defaults.mode, **_words("mode"))
    w["protocol"] = gr.Radio(list(PROTOCOLS), value=defaults.protocol, **_words("protocol"))
    w["beta"] = _slider("beta", defaults.beta, 0.1)
    w["k"] = _slider("k", defaults.k, 1)
    runs = {
        line: gr.Markdown(
            no_run_line(line), visible=line == "search", elem_classes="emcl-effk",
            elem_id=f"emcl-run-{line}",
        )
        for line in RUN_LINES
    }  # fmt: skip
    w["iters"] = _slider("iters", defaults.iters, 1)
    w["log10_lam"] = _log_slider("lam", defaults.lam)
    lam_value = gr.Markdown(f"λ = {defaults.lam:g}", elem_classes="emcl-effk")
    with gr.Row():
        w["init"] = gr.Radio(inits, value=defaults.init, scale=3, **_words("init"))
        w["seed"] = gr.Number(
            value=defaults.seed,
            precision=0,
            minimum=LIMITS["seed"][0],
            maximum=LIMITS["seed"][1],
            scale=1,
            min_width=80,
            **_words("seed"),
        )
    w["context"] = gr.Radio(list(CONTEXTS), value=defaults.context, **_words("context"))
    w["shortlist"] = _slider("shortlist", defaults.shortlist, 1)
    w["isoftmax"] = gr.Checkbox(value=defaults.isoftmax, **_words("isoftmax"))
    w["log10_isoftmax_temp"] = _log_slider("isoftmax_temp", defaults.isoftmax_temp)
    w["top_k"] = _slider("top_k", defaults.top_k, 1)
    reset = gr.Button("Reset to paper defaults", variant="secondary")
    with gr.Accordion("What the knobs mean", open=False):
        gr.Markdown(knob_guide(), elem_classes="emcl-hint")
    return KnobPanel(w, runs, lam_value, reset)


def _words(widget: str) -> dict[str, str]:
    """The widget's label and one-line hint (emcl/explorer/knob_docs.py)."""
    doc = parameter_doc(widget)
    if doc is None:
        raise KeyError(f"no doc for the widget {widget!r}")
    return {"label": doc.label, "info": doc.hint}


def _slider(knob: str, value: float, step: float) -> gr.Slider:
    return gr.Slider(*LIMITS[knob], value=value, step=step, **_words(knob))


def _log_slider(knob: str, value: float) -> gr.Slider:
    lo, hi = LIMITS[knob]
    return gr.Slider(
        math.log10(lo),
        math.log10(hi),
        value=math.log10(value),
        step=0.05,
        **_words(f"{LOG_PREFIX}{knob}"),
    )


def wire(panel: KnobPanel, explorer: Explorer) -> gr.events.Dependency:
    """The panel's own events: the λ read-out, init 'prior' snapping K to the trained K, and
    Reset. Returns the events after which the page refreshes (the caller chains them)."""
    panel.widgets["log10_lam"].change(
        lambda v: f"λ = {10**v:.4g}",
        panel.widgets["log10_lam"],
        panel.lam_value,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )

    def snap_k(init: str, k: float) -> Any:
        trained = explorer.trained
        return trained.k if init == "prior" and trained is not None else k

    def reset(mode: str) -> list[Any]:
        return widget_values(explorer.defaults(mode))

    init, k = panel.widgets["init"], panel.widgets["k"]
    snapped = init.input(snap_k, [init, k], k, api_visibility="private", queue=False)
    reset_event = panel.reset.click(reset, panel.widgets["mode"], panel.inputs, api_name="defaults")
    return snapped, reset_event


def shown_runs(tab: str) -> list[dict[str, Any]]:
    """Visibility updates of the EM-run lines (in :data:`RUN_LINES` order) for the open tab."""
    shown = tab if tab in RUN_LINES else "other"
    return [gr.update(visible=line == shown) for line in RUN_LINES]


def wire_tabs(panel: KnobPanel, tabs: dict[str, gr.Tab]) -> None:
    """Selecting a tab shows its EM-run line under the knobs and hides the others'."""
    for name, tab in tabs.items():
        tab.select(
            lambda name=name: shown_runs(name),
            None,
            [panel.runs[line] for line in RUN_LINES],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )


def change_events(panel: KnobPanel) -> list:
    """The triggers of a knob the user moved: sliders on release, the rest on user input only
    (not when Reset sets them)."""
    w = panel.widgets
    sliders = ("beta", "k", "iters", "log10_lam", "shortlist", "log10_isoftmax_temp", "top_k")
    events = [w[name].release for name in sliders]
    events += [w["mode"].input, w["protocol"].input, w["context"].input, w["isoftmax"].input]
    return [*events, w["seed"].submit, w["seed"].blur]
