"""Figures (plotly) and small HTML views for the explorer; pure functions of results.

Nothing here computes a score: every number drawn comes from :mod:`emcl.explorer` /
:mod:`emcl.subspace` results passed in.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from emcl.explorer.knob_docs import KNOB_DOCS

VIDEO_COLOR = "#2563eb"
TEXT_COLOR = "#ea580c"
CORRECT_COLOR = "#16a34a"
WRONG_COLOR = "#dc2626"
NEUTRAL_COLOR = "#94a3b8"
SERIES_COLORS = ("#2563eb", "#9333ea", "#0d9488", "#ea580c")
FONT = {"family": "Inter, Segoe UI, Helvetica, Arial, sans-serif", "size": 12, "color": "#1e293b"}


def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 48, "r": 16, "t": 56 if title else 24, "b": 40},
        font=FONT,
        paper_bgcolor="white",
        plot_bgcolor="white",
        title={"text": title, "x": 0.01, "font": {"size": 14}} if title else None,
    )
    return fig


def message_figure(text: str, height: int = 240) -> go.Figure:
    """An empty figure that says why there is nothing to show yet."""
    fig = go.Figure()
    fig.add_annotation(
        text=html.escape(text),
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": 14, "color": "#64748b"},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, height)


def png_data_uri(image: np.ndarray) -> str:
    """uint8 ``[H, W, 3]`` as a ``data:image/png`` URI (plotly layout images). Remembered by
    content: a video's frames are drawn again at every knob move, and encoding them was
    half of a Subspaces figure's time."""
    image = np.ascontiguousarray(image)
    return _png_uri(image.tobytes(), image.shape, image.dtype.str)


@functools.lru_cache(maxsize=512)
def _png_uri(data: bytes, shape: tuple[int, ...], dtype: str) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    image = np.frombuffer(data, dtype=dtype).reshape(shape)
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --------------------------------------------------------------------------------------------
# Figure 1: frames above and below, words in the middle, one line per word
# --------------------------------------------------------------------------------------------
def alignment_figure(
    frames: np.ndarray,
    words: Sequence[str],
    linked: Sequence[int],
    similarity: Sequence[float],
    correct: Sequence[bool | None] | None = None,
    title: str = "",
    height: int = 540,
) -> go.Figure:
    """Frames ``[T, s, s, 3]`` split into a top and a bottom row, the caption's words between
    them and a line from each word to its linked frame, labelled with the similarity.

    ``correct[j]`` colours word j's line (ground truth: green correct, red wrong, grey for a
    word that names no concept); without it lines are coloured by similarity.
    """
    centres, width = _frame_layout(len(frames))
    fig = go.Figure()
    _add_frames(fig, frames, centres)
    n_words = len(words)
    word_x = [width * (j + 0.5) / max(n_words, 1) for j in range(n_words)]
    stagger = n_words > 6
    word_y = [(0.12 if j % 2 else -0.12) if stagger else 0.0 for j in range(n_words)]
    sims = np.asarray(similarity, dtype=float)
    label_x, label_y, hover = _add_links(fig, centres, word_x, word_y, words, linked, sims, correct)
    label_text = [f"{v:.2f}" for v in sims]
    # Words and similarities as boxed annotations, so lines pass behind them; invisible markers
    # carry the hover text. Set in one update: adding them one by one validates the whole
    # list again at each step.
    labels = [
        {"x": x, "y": y, "text": text, "showarrow": False, "font": {"size": 10},
         "bgcolor": "rgba(255,255,255,0.8)", "borderpad": 1}
        for x, y, text in zip(label_x, label_y, label_text, strict=True)
    ]  # fmt: skip
    boxes = [
        {"x": x, "y": y, "text": f"<b>{html.escape(word)}</b>", "showarrow": False,
         "font": {"size": 13, "color": "#0f172a"}, "bgcolor": "white",
         "bordercolor": "#cbd5e1", "borderwidth": 1, "borderpad": 3}
        for x, y, word in zip(word_x, word_y, words, strict=True)
    ]  # fmt: skip
    fig.update_layout(annotations=[*fig.layout.annotations, *labels, *boxes])
    fig.add_trace(
        go.Scatter(
            x=word_x + label_x,
            y=word_y + label_y,
            mode="markers",
            marker={"size": 14, "opacity": 0},
            hovertext=hover + hover,
            hoverinfo="text",
            showlegend=False,
        )
    )
    fig.update_xaxes(visible=False, range=[-0.2, width + 0.2])
    fig.update_yaxes(visible=False, range=[-2.15, 2.15], scaleanchor="x", scaleratio=1)
    fig = _layout(fig, height, title)
    fig.update_layout(
        legend={"orientation": "h", "y": -0.02, "x": 0, "font": {"size": 11}},
        margin={"l": 8, "r": 8, "t": 48, "b": 8},
    )
    return fig


Centre = tuple[float, float, int]  # (x centre, y bottom, row) of one frame image


def _frame_layout(n_frames: int) -> tuple[list[Centre], float]:
    """Frame i: top row left to right, then the bottom row left to right; the figure width."""
    n_top = math.ceil(n_frames / 2)
    gap = 0.12
    width = max(n_top, n_frames - n_top) * (1 + gap) - gap
    centres = []
    for i in range(n_frames):
        row, col = (0, i) if i < n_top else (1, i - n_top)
        x0 = col * (1 + gap)
        y0 = 0.9 if row == 0 else -1.9  # image spans [y0, y0 + 1]
        centres.append((x0 + 0.5, y0, row))
    return centres, width


def _add_frames(fig: go.Figure, frames: np.ndarray, centres: list[Centre]) -> None:
    images = [
        {"source": png_data_uri(frames[i]), "x": cx - 0.5, "y": y0 + 1, "xref": "x",
         "yref": "y", "sizex": 1, "sizey": 1, "xanchor": "left", "yanchor": "top",
         "layer": "below"}
        for i, (cx, y0, _) in enumerate(centres)
    ]  # fmt: skip
    fig.update_layout(images=[*fig.layout.images, *images])  # in one update, as annotations
    fig.add_trace(
        go.Scatter(
            x=[cx for cx, _, _ in centres],
            y=[y0 + 1.12 if row == 0 else y0 - 0.12 for _, y0, row in centres],
            mode="text",
            text=[f"frame {i + 1}" for i in range(len(centres))],
            textfont={"size": 10, "color": "#64748b"},
            hoverinfo="skip",
            showlegend=False,
        )
    )


LINK_PALETTE = {
    "correct": (CORRECT_COLOR, "frame shows the word's concept"),
    "wrong": (WRONG_COLOR, "frame does not show it"),
    "unscored": (NEUTRAL_COLOR, "word names no concept"),
}
LINK_RAMP = ("#cbd5e1", "#93c5fd", "#60a5fa", "#2563eb", "#1e3a8a")  # by similarity quintile


def _add_links(
    fig: go.Figure,
    centres: list[Centre],
    word_x: list[float],
    word_y: list[float],
    words: Sequence[str],
    linked: Sequence[int],
    sims: np.ndarray,
    correct: Sequence[bool | None] | None,
) -> tuple[list[float], list[float], list[str]]:
    """One line per word to its frame, coloured by ground truth or by similarity; returns the
    positions of the similarity labels and the hover texts."""
    n_words = len(words)
    lo, hi = (float(sims.min()), float(sims.max())) if n_words else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    groups: dict[str, tuple[list, list]] = {}
    label_x, label_y, hover = [], [], []
    for j in range(n_words):
        cx, y0, row = centres[int(linked[j])]
        end_y = y0 if row == 0 else y0 + 1
        start_y = word_y[j] + (0.1 if row == 0 else -0.1)
        if correct is not None:
            kind = {True: "correct", False: "wrong", None: "unscored"}[correct[j]]
        else:
            kind = f"q{min(4, int(5 * (sims[j] - lo) / span))}"
        xs, ys = groups.setdefault(kind, ([], []))
        xs += [word_x[j], cx, None]
        ys += [start_y, end_y, None]
        t = 0.45  # label a little short of half way from the word to the frame
        label_x.append(word_x[j] + t * (cx - word_x[j]))
        label_y.append(start_y + t * (end_y - start_y))
        hover.append(f"“{html.escape(words[j])}” → frame {int(linked[j]) + 1}: {sims[j]:.3f}")
    for kind, (xs, ys) in sorted(groups.items()):
        color, name = (
            LINK_PALETTE[kind] if kind in LINK_PALETTE else (LINK_RAMP[int(kind[1])], None)
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": color, "width": 2},
                hoverinfo="skip",
                name=name,
                showlegend=name is not None,
            )
        )
    return label_x, label_y, hover


def loadings_figure(
    frame_shares: np.ndarray, word_shares: np.ndarray, words: Sequence[str], height: int = 340
) -> go.Figure:
    """Heatmaps of frames × subspaces ``[T, S]`` and words × subspaces ``[L, S]`` (shares)."""
    n_sub = frame_shares.shape[1]
    columns = [f"s{k + 1}" for k in range(n_sub)]
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=("frames × subspaces", "words × subspaces"),
    )
    common = {
        "zmin": 0,
        # One scale for both panels, stretched to the largest share (near-uniform shares of
        # many subspaces would be invisible on a fixed 0-1 scale).
        "zmax": float(max(np.max(frame_shares, initial=0), np.max(word_shares, initial=0), 1e-6)),
        "colorscale": "Blues",
        "texttemplate": "%{z:.2f}" if n_sub <= 8 else None,  # numbers only while legible
        "textfont": {"size": 9},
    }
    fig.add_trace(
        go.Heatmap(
            z=frame_shares,
            x=columns,
            y=[f"frame {i + 1}" for i in range(len(frame_shares))],
            showscale=False,
            hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>",
            **common,
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Heatmap(
            z=word_shares,
            x=columns,
            y=[f"{j + 1}. {w}" for j, w in enumerate(words)],
            colorbar={"title": {"text": "share"}, "len": 0.9},
            hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>",
            **common,
        ),
        1,
        2,
    )
    fig.update_yaxes(autorange="reversed", tickfont={"size": 10})
    return _layout(fig, height)


# --------------------------------------------------------------------------------------------
# Sweeps and the embedding map
# --------------------------------------------------------------------------------------------
def sweep_figure(
    name: str,
    values: Sequence[float],
    series: dict[str, list[dict[str, Any]]],
    reference: dict[str, dict[str, Any]],
    height: int = 520,
    title: str | None = None,
) -> go.Figure:
    """R@1 and MnR, text→video and video→text, against one knob; dashed lines: no EM.

    The fields of one :class:`emcl.evaluation.sweep.Sweep` (knob, values, series, reference):
    the app's sweeps and ``python -m emcl evaluate``'s draw through this one function."""
    panels = [("t2v", "R1"), ("v2t", "R1"), ("t2v", "MnR"), ("v2t", "MnR")]
    titles = [
        "text → video R@1 (%)",
        "video → text R@1 (%)",
        "text → video MnR",
        "video → text MnR",
    ]
    fig = make_subplots(
        rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.2, horizontal_spacing=0.09
    )
    for p, (direction, metric) in enumerate(panels):
        row, col = p // 2 + 1, p % 2 + 1
        for s, (label, points) in enumerate(series.items()):
            fig.add_trace(
                go.Scatter(
                    x=list(values),
                    y=[m[direction][metric] for m in points],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=p == 0,
                    line={"color": SERIES_COLORS[s % len(SERIES_COLORS)]},
                ),
                row,
                col,
            )
        for s, (label, m) in enumerate(reference.items()):
            fig.add_trace(
                go.Scatter(
                    x=[min(values), max(values)],
                    y=[m[direction][metric]] * 2,
                    mode="lines",
                    name=label,
                    legendgroup=label,
                    showlegend=p == 0,
                    line={
                        "color": SERIES_COLORS[(s + 2) % len(SERIES_COLORS)],
                        "dash": "dash",
                        "width": 1.5,
                    },
                ),
                row,
                col,
            )
    axis_type = "log" if name == "lam" else "linear"
    fig.update_xaxes(type=axis_type, gridcolor="#e2e8f0")
    doc = KNOB_DOCS.get(name)
    fig.update_xaxes(title_text=doc.axis if doc is not None else name, row=2)
    fig.update_yaxes(gridcolor="#e2e8f0")
    fig = _layout(fig, height, title)
    fig.update_layout(legend={"orientation": "h", "y": -0.16, "x": 0})
    return fig


def map_figure(
    before: np.ndarray,
    after: np.ndarray,
    modality: Sequence[str],
    labels: Sequence[str],
    item_ids: Sequence[str],
    gap_before: float,
    gap_after: float,
    method: str,
    height: int = 520,
) -> go.Figure:
    """Two scatter maps (before / after EMCL) coloured by modality; each point's
    ``customdata`` is its item id (the app shows the item when a point is clicked)."""
    titles = (
        f"before EMCL — modality gap {gap_before:.3f}",
        f"after EMCL — modality gap {gap_after:.3f}",
    )
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.05)
    kinds = np.asarray(modality)
    for col, coords in ((1, before), (2, after)):
        for kind, color in (("video", VIDEO_COLOR), ("text", TEXT_COLOR)):
            pick = np.flatnonzero(kinds == kind)
            fig.add_trace(
                go.Scattergl(
                    x=coords[pick, 0],
                    y=coords[pick, 1],
                    mode="markers",
                    name=kind,
                    legendgroup=kind,
                    showlegend=col == 1,
                    marker={"size": 5, "color": color, "opacity": 0.7},
                    text=[labels[i] for i in pick],
                    customdata=[item_ids[i] for i in pick],
                    hovertemplate="%{text}<extra></extra>",
                ),
                1,
                col,
            )
    fig.update_xaxes(showticklabels=False, title_text=f"{method.upper()} 1", gridcolor="#f1f5f9")
    fig.update_yaxes(showticklabels=False, title_text=f"{method.upper()} 2", gridcolor="#f1f5f9")
    fig = _layout(fig, height)
    fig.update_layout(
        legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
        clickmode="event",
        hovermode="closest",
    )
    return fig


# --------------------------------------------------------------------------------------------
# HTML views
# --------------------------------------------------------------------------------------------
def change_badge(
    change: int | None, other_rank: int | None, top_k: int, is_emcl: bool = True
) -> str:
    """``↑3`` / ``↓1`` / ``=`` / ``new`` (entered the top-k from below it) for the EMCL column."""
    if not is_emcl:
        return ""
    if other_rank is None:  # the base column's ANN shortlist did not hold it
        return '<span class="emcl-change new" title="not among the base candidates">new</span>'
    if change is None:
        return ""
    if other_rank > top_k:
        return f'<span class="emcl-change new" title="base rank {other_rank}">new</span>'
    if change > 0:
        return f'<span class="emcl-change up" title="base rank {other_rank}">↑{change}</span>'
    if change < 0:
        return f'<span class="emcl-change down" title="base rank {other_rank}">↓{-change}</span>'
    return '<span class="emcl-change same" title="same rank as base">=</span>'


def results_html(
    rows: Sequence,
    top_k: int,
    url: Callable[[str], str],
    caption: Callable[[str], str],
    column: str,
) -> str:
    """A grid of playable result cards (rank, id, score, rank change; ground truth in green).

    ``rows`` are :class:`emcl.retrieval.ranking.Hit`; ``url(video_id)`` is where the browser
    fetches the file, ``caption(video_id)`` its caption (shown small, for judging relevance).
    """
    cards = []
    for r in rows:
        vid = html.escape(r.video_id)
        text = html.escape(caption(r.video_id))
        classes = "emcl-card target" if r.is_target else "emcl-card"
        badge = change_badge(r.rank_change, r.other_rank, top_k, column == "emcl")
        flag = '<span class="emcl-gt">ground truth</span>' if r.is_target else ""
        cards.append(
            f'<div class="{classes}" data-video-id="{vid}" data-rank="{r.rank}">'
            f'<video src="{html.escape(url(r.video_id))}" muted loop autoplay playsinline '
            f'preload="auto" title="{text}"></video>'
            f'<div class="emcl-meta"><span class="emcl-rank">#{r.rank}</span>{badge}'
            f"{_score_html(r)}</div>"
            f'<div class="emcl-caption" title="{text}">{flag}<span class="emcl-id">{vid}</span> '
            f"{text}</div></div>"
        )
    body = "".join(cards) or '<div class="emcl-empty">no results</div>'
    return f'<div class="emcl-results" data-column="{html.escape(column)}">{body}</div>'


def _score_html(hit: Any) -> str:
    """The cosine (comparable across columns); the ranking score beside it where it differs
    (the inference module ranks by a dot product of unnormalised outputs)."""
    cosine = hit.score if hit.cosine is None else hit.cosine
    shown = f'<span class="emcl-score" title="cosine">{cosine:.3f}</span>'
    if abs(hit.score - cosine) > 5e-4:
        title = "the score this column ranks by"
        shown += f'<span class="emcl-rank-score" title="{title}">{hit.score:.2f}</span>'
    return shown


def video_html(url: str, title: str, lines: Sequence[str]) -> str:
    """One playable video with a few lines of description (map and gallery selections)."""
    info = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    return (
        f'<div class="emcl-item"><video src="{html.escape(url)}" controls muted loop autoplay '
        f'playsinline></video><div class="emcl-item-text"><b>{html.escape(title)}</b>{info}</div>'
        "</div>"
    )


__all__ = [
    "alignment_figure",
    "change_badge",
    "loadings_figure",
    "map_figure",
    "message_figure",
    "png_data_uri",
    "results_html",
    "sweep_figure",
    "video_html",
]
