"""The knob panel's mapping from widgets to knobs: log sliders, names, and bound handlers."""

from __future__ import annotations

import inspect
import math

import gradio as gr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emcl.explorer.knob_docs import parameter_doc
from emcl.explorer.knobs import LIMITS, Knobs
from ui.common import PROGRESS
from ui.knob_panel import (
    LOG_KNOBS,
    RUN_LINES,
    WIDGETS,
    KnobPanel,
    knobs_from_widgets,
    shown_runs,
    widget_values,
)

BASE = {
    "mode": "inference",
    "beta": 4.0,
    "k": 7,
    "iters": 10,
    "log10_lam": -1.0,
    "init": "reference",
    "seed": 42,
    "context": "shortlist",
    "shortlist": 64,
    "isoftmax": False,
    "log10_isoftmax_temp": -2.0,
    "top_k": 8,
    "protocol": "inference",
}


def test_widgets_are_the_knobs_with_log_sliders_named_as_such():
    assert set(BASE) == set(WIDGETS)
    assert len(WIDGETS) == len(Knobs.names())
    assert [LOG_KNOBS.get(w, w) for w in WIDGETS] == list(Knobs.names())


def test_log_sliders_are_powers_of_ten():
    knobs = knobs_from_widgets(BASE)
    assert knobs.lam == 0.1 and knobs.isoftmax_temp == 0.01
    assert knobs_from_widgets({**BASE, "log10_lam": 0.5}).lam == pytest.approx(math.sqrt(10), 1e-3)
    assert knobs_from_widgets({**BASE, "log10_lam": -2.5}).lam == pytest.approx(10**-2.5, 1e-3)
    assert (knobs.mode, knobs.beta, knobs.k, knobs.iters, knobs.seed) == ("inference", 4, 7, 10, 42)


@given(
    lam=st.floats(*LIMITS["lam"]),
    temp=st.floats(*LIMITS["isoftmax_temp"]),
    beta=st.floats(*LIMITS["beta"]),
    k=st.integers(1, 128),
)
def test_widget_values_round_trip(lam, temp, beta, k):
    knobs = Knobs(mode="inference", init="data", lam=lam, isoftmax_temp=temp, beta=beta, k=k)
    back = knobs_from_widgets(dict(zip(WIDGETS, widget_values(knobs), strict=True)))
    assert back.lam == pytest.approx(lam, rel=1e-3) and back.isoftmax_temp == pytest.approx(
        temp, rel=1e-3
    )
    assert (back.beta, back.k, back.mode, back.init) == (beta, k, "inference", "data")


@pytest.mark.parametrize(
    ("widget", "value", "message"),
    [
        ("log10_lam", math.nan, "log10_lam must be a finite number"),
        ("log10_lam", math.inf, "log10_lam must be a finite number"),
        ("log10_lam", "0.1", "log10_lam must be a finite number"),
        ("log10_lam", True, "log10_lam must be a finite number"),
        ("log10_lam", 400.0, "lam must be a finite number in"),  # 10**400 overflows
        ("log10_lam", -5.0, "lam must be a finite number in"),
        ("log10_isoftmax_temp", 1.0, "isoftmax_temp must be a finite number in"),
        ("beta", -1.0, "beta"),
        ("protocol", "emclnet", "protocol must be one of trained, inference; got 'emclnet'"),
        ("protocol", "", "protocol must be one of trained, inference"),
    ],
)
def test_bad_widget_values_are_refused_by_name(widget, value, message):
    from emcl.explorer.knobs import KnobError

    with pytest.raises(KnobError, match=message):
        knobs_from_widgets({**BASE, widget: value})


def test_bound_handlers_get_named_parameters_and_one_knobs_object():
    panel = KnobPanel(widgets={}, runs={}, lam_value=None, reset=None)  # type: ignore[arg-type]
    seen = {}

    def handler(query: str, knobs: Knobs, progress: gr.Progress = PROGRESS) -> str:
        seen["knobs"], seen["progress"] = knobs, progress
        return query.upper()

    bound = panel.bind(handler, before=["query"])
    params = inspect.signature(bound).parameters
    assert list(params) == ["query", *WIDGETS, "progress"]
    assert isinstance(params["progress"].default, gr.Progress)
    assert bound("red", *[BASE[w] for w in WIDGETS]) == "RED"
    assert seen["knobs"] == knobs_from_widgets(BASE)
    with pytest.raises(gr.Error, match="k must be"):
        bound("red", *[{**BASE, "k": 0}[w] for w in WIDGETS])


def test_bound_handlers_describe_every_knob_from_the_one_source():
    panel = KnobPanel(widgets={}, runs={}, lam_value=None, reset=None)  # type: ignore[arg-type]

    def handler(query: str, knobs: Knobs) -> str:
        """Rank the gallery.

        More detail that stays out of the endpoint description."""
        return query

    doc = panel.bind(handler, before=["query"]).__doc__
    assert doc.startswith("Rank the gallery. Parameters: mode: ") and "More detail" not in doc
    for widget in WIDGETS:
        words = parameter_doc(widget)
        assert f"{widget}: {words.hint} ({words.accepted})" in doc
    assert "log10_lam: E-step temperature λ, log scale (-3 – 1)" in doc


def test_the_protocol_widget_carries_the_knob_and_reset_sets_the_modes_default():
    assert knobs_from_widgets({**BASE, "protocol": "trained"}).protocol == "trained"
    assert knobs_from_widgets(BASE).protocol == "inference"
    for mode, protocol in (("joint", "trained"), ("inference", "inference")):
        shown = dict(zip(WIDGETS, widget_values(Knobs(mode=mode)), strict=True))
        assert shown["protocol"] == protocol


@pytest.mark.parametrize("tab", ["search", "metrics", "subspaces", "map", "gallery"])
def test_only_the_open_tabs_em_run_line_is_shown(tab):
    visible = [update["visible"] for update in shown_runs(tab)]
    want = tab if tab in RUN_LINES else "other"
    assert visible == [line == want for line in RUN_LINES] and sum(visible) == 1
