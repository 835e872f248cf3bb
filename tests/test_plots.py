"""Figures and HTML views draw exactly the numbers they are given, and escape all text."""

from __future__ import annotations

import numpy as np
import pytest

from emcl.evaluation.sweep import Sweep
from emcl.explorer.knob_docs import KNOB_DOCS
from emcl.retrieval.ranking import Hit
from ui import plots


def frames(n: int = 12) -> np.ndarray:
    return np.stack([np.full((16, 16, 3), 20 * i, np.uint8) for i in range(n)])


def segments(fig) -> list[tuple[tuple, tuple]]:
    """(start, end) of every line segment in the figure's line traces."""
    out = []
    for trace in fig.data:
        if trace.mode != "lines":
            continue
        xs, ys = list(trace.x), list(trace.y)
        for i in range(0, len(xs), 3):  # x0, x1, None
            out.append(((xs[i], ys[i]), (xs[i + 1], ys[i + 1])))
    return out


def test_alignment_figure_draws_one_labelled_line_per_word():
    words = ["a", "red", "circle", "moves", "left"]
    linked = [0, 3, 7, 11, 5]
    sims = [0.1, 0.52, 0.33, 0.9, -0.05]
    fig = plots.alignment_figure(frames(), words, linked, sims, [None, True, False, True, None])
    assert len(fig.layout.images) == 12
    lines = segments(fig)
    assert len(lines) == len(words)
    labels = [a.text for a in fig.layout.annotations]
    for s in sims:
        assert f"{s:.2f}" in labels
    for w in words:
        assert f"<b>{w}</b>" in labels
    # Lines from words to top-row frames (0-5) end at the top row, the others at the bottom.
    ends_up = sorted(end[1] > start[1] for start, end in lines)
    assert ends_up == sorted(i < 6 for i in linked)
    colours = {trace.name: trace.line.color for trace in fig.data if trace.mode == "lines"}
    assert colours["frame shows the word's concept"] == plots.CORRECT_COLOR
    assert colours["frame does not show it"] == plots.WRONG_COLOR


def test_alignment_figure_without_ground_truth_and_odd_frame_counts():
    fig = plots.alignment_figure(frames(5), ["x", "<b>"], [4, 0], [0.2, 0.4])
    assert "<b>&lt;b&gt;</b>" in [a.text for a in fig.layout.annotations]  # words are escaped
    assert len(fig.layout.images) == 5
    assert len(segments(fig)) == 2
    assert not any(trace.showlegend for trace in fig.data if trace.mode == "lines")


def test_loadings_figure_shows_the_shares():
    f = np.array([[0.2, 0.8], [0.6, 0.4]])
    w = np.array([[1.0, 0.0]])
    fig = plots.loadings_figure(f, w, ["red"])
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert np.array_equal(np.asarray(heat[0].z), f) and np.array_equal(np.asarray(heat[1].z), w)
    assert list(heat[0].x) == ["s1", "s2"] and list(heat[1].y) == ["1. red"]


def test_sweep_figure_plots_every_series_and_reference():
    metric = {"t2v": {"R1": 10.0, "MnR": 5.0}, "v2t": {"R1": 12.0, "MnR": 4.0}}
    series = {"A": [metric, metric], "B": [metric, metric]}
    fig = plots.sweep_figure("lam", [0.1, 1.0], series, {"Base": metric})
    assert len(fig.data) == 4 * 3  # 4 panels × (2 series + 1 reference)
    assert fig.layout.xaxis.type == "log"
    assert sorted({t.name for t in fig.data}) == ["A", "B", "Base"]
    assert [t.y[0] for t in fig.data[:3]] == [10.0, 10.0, 10.0]  # t2v R@1 panel first


def test_sweep_figure_draws_an_evaluation_sweep_with_the_knobs_words():
    # what ``python -m emcl evaluate`` sweeps: metrics with the inverted softmax beside them
    point = {"t2v": {"R1": 20.0, "MnR": 3.0}, "v2t": {"R1": 22.0, "MnR": 2.5}}
    point |= {"inverted_softmax": point}
    sweep = Sweep("k", [2.0, 8.0], {"base+emcl": [point, point]}, {"base": point})
    fig = plots.sweep_figure(sweep.knob, sweep.values, sweep.series, sweep.reference, title="k")
    assert fig.layout.title.text == "k"
    assert fig.layout.xaxis3.title.text == KNOB_DOCS["k"].axis == "K (subspaces)"
    assert list(fig.data[0].x) == [2.0, 8.0] and list(fig.data[0].y) == [20.0, 20.0]


def test_map_figure_carries_item_ids():
    xy = np.arange(8, dtype=float).reshape(4, 2)
    fig = plots.map_figure(
        xy, xy + 1, ["video", "video", "text", "text"], ["v0", "v1", "t0", "t1"],
        ["video:a", "video:b", "text:0", "text:1"], 0.5, 0.25, "pca",
    )  # fmt: skip
    ids = sorted(i for trace in fig.data for i in trace.customdata)
    assert ids == sorted(["video:a", "video:b", "text:0", "text:1"] * 2)
    assert "0.500" in fig.layout.annotations[0].text and "0.250" in fig.layout.annotations[1].text


@pytest.mark.parametrize(
    ("change", "other", "expected"),
    [(3, 5, "↑3"), (-1, 2, "↓1"), (0, 4, "="), (12, 15, "new"), (None, 1, "")],
)
def test_change_badges(change, other, expected):
    badge = plots.change_badge(change, other, top_k=8)
    assert (expected in badge) if expected else badge == ""


def test_results_html_escapes_text_and_marks_the_ground_truth():
    rows = [
        Hit("v<1>", 0, 0.5, rank=1, other_rank=3, rank_change=2, is_target=False),
        Hit("v2", 1, 0.25, rank=2, other_rank=1, rank_change=-1, is_target=True),
    ]
    page = plots.results_html(
        rows, 8, url=lambda v: f"gradio_api/file=/videos/{v}.mp4",
        caption=lambda v: "<script>alert(1)</script>", column="emcl",
    )  # fmt: skip
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "v&lt;1&gt;" in page and "v<1>" not in page
    assert page.count("<video") == 2 and page.count('class="emcl-card target"') == 1
    assert "↑2" in page and "↓1" in page and "0.500" in page
    assert plots.results_html([], 8, str, str, "base").count("no results") == 1


def test_message_figure_and_png():
    assert "nothing yet" in plots.message_figure("nothing yet").layout.annotations[0].text
    uri = plots.png_data_uri(frames(1)[0])
    assert uri.startswith("data:image/png;base64,")
