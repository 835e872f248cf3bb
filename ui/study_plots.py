"""The Study tab's figures (plotly): pure functions of a :class:`emcl.study.view.StudyView`.

Nothing here computes a statistic: every number drawn is the view's. Each trace carries
``meta`` naming what it holds (``{"kind", "row"/"model", "direction", ...}``), so the tests and
anyone reading the figure's JSON can find a series without relying on trace order.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from emcl.study.view import DIRECTIONS, SHARES, StudyView, label, p_equation, t_text
from ui.plots import FONT, NEUTRAL_COLOR, SERIES_COLORS, message_figure

TITLES = {"t2v": "text → video", "v2t": "video → text"}
CEILING_COLOR = "#dc2626"
SEED_OFFSET, MEAN_OFFSET = -0.15, 0.15  # seeds left of each row's tick, mean ± std right of it
SHARE_NAMES = {
    "own_clip": "its own clip",
    "another_described_clip": "another clip it describes",
    "undescribed_clip": "a clip it does not describe",
}
SHARE_COLORS = {
    "own_clip": "#16a34a",
    "another_described_clip": "#f59e0b",
    "undescribed_clip": "#dc2626",
}


def _layout(fig: go.Figure, height: int, title: str) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 56, "r": 16, "t": 72, "b": 48},
        font=FONT,
        paper_bgcolor="white",
        plot_bgcolor="white",
        title={"text": title, "x": 0.01, "font": {"size": 14}},
        legend={"orientation": "h", "y": -0.18},
    )
    fig.update_xaxes(gridcolor="#e2e8f0")
    fig.update_yaxes(gridcolor="#e2e8f0", zerolinecolor="#94a3b8")
    return fig


ROW_COLORS = {  # one colour per row in every figure
    "base": SERIES_COLORS[0],
    "base+emcl": SERIES_COLORS[1],
    "emcl": SERIES_COLORS[2],
    "base(l2)": SERIES_COLORS[3],
    "base+emcl(l2)": "#64748b",
}
BETA_SHIFT = 0.06  # Table 2: each model's points a little apart so their error bars do not hide


def _color(row: str) -> str:
    return ROW_COLORS.get(row, NEUTRAL_COLOR)


def _seed_points(x: float, values, seeds, text: str, color: str, meta: dict) -> go.Scatter:
    """One row's per-seed values as points left of its tick, the seed in the hover."""
    return go.Scatter(
        x=[x + SEED_OFFSET] * len(values),
        y=list(values),
        mode="markers",
        marker={"color": color, "size": 8, "opacity": 0.6},
        customdata=[[s] for s in seeds],
        hovertemplate=f"{text}<br>seed %{{customdata[0]}}: %{{y:.2f}}<extra></extra>",
        name=text,
        showlegend=False,
        meta=meta,
    )


def _mean_point(x: float, mean: float, std: float, text: str, color: str, meta: dict, hover: str):
    return go.Scatter(
        x=[x + MEAN_OFFSET],
        y=[mean],
        mode="markers",
        marker={"color": color, "size": 12, "symbol": "diamond"},
        error_y={"type": "data", "array": [std], "color": color, "thickness": 2, "width": 6},
        hovertemplate=f"{text}<br>{hover}<extra></extra>",
        name=f"{text} mean ± std",
        showlegend=False,
        meta=meta,
    )


def r1_figure(view: StudyView, height: int = 460) -> go.Figure:
    """R@1 per seed and mean ± std for every row, t2v and v2t; the ceiling on t2v."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{TITLES[d]} R@1 (%)" for d in DIRECTIONS])
    rows = list(view.rows)
    for col, d in enumerate(DIRECTIONS, start=1):
        for i, row in enumerate(rows):
            s = view.rows[row][d]["R1"]
            meta = {"row": row, "direction": d}
            hover = f"mean {s.mean:.2f} ± {s.std:.2f} (std over {len(s.values)} seeds)"
            fig.add_trace(
                _seed_points(
                    i, s.values, view.seeds, label(row), _color(row), {"kind": "seeds", **meta}
                ),
                1,
                col,
            )
            fig.add_trace(
                _mean_point(
                    i, s.mean, s.std, label(row), _color(row), {"kind": "mean", **meta}, hover
                ),
                1,
                col,
            )
        fig.update_xaxes(
            tickvals=list(range(len(rows))),
            ticktext=[label(r) for r in rows],
            range=[-0.6, len(rows) - 0.4],
            row=1,
            col=col,
        )
    if view.ceiling is not None:
        fig.add_trace(
            go.Scatter(
                x=[-0.5, len(rows) - 0.5],
                y=[view.ceiling] * 2,
                mode="lines",
                line={"color": CEILING_COLOR, "dash": "dash", "width": 1.5},
                name=f"ambiguity ceiling {view.ceiling:g} %",
                hovertemplate="ambiguity ceiling: the best t2v R@1 any model can reach on "
                "these captions, %{y:.2f} %<extra></extra>",
                meta={"kind": "ceiling", "direction": "t2v"},
            ),
            1,
            1,
        )
    title = f"R@1 per seed (points) and mean ± std (diamonds), {len(view.seeds)} seeds"
    if view.ceiling is None:
        title += "; no ambiguity ceiling recorded"
    return _layout(fig, height, title)


def differences_figure(view: StudyView, height: int = 420) -> go.Figure:
    """Per-seed R@1 difference (row − reference, points) and its mean ± std, with t and p."""
    compared = view.compared_rows()
    if not compared:
        return message_figure("This study compares no rows")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=[f"{TITLES[d]}: Δ R@1 (points)" for d in DIRECTIONS]
    )
    for col, d in enumerate(DIRECTIONS, start=1):
        for i, row in enumerate(compared):
            c = view.comparison(row, d)
            text = f"{label(row)} − {label(c.reference)}"
            meta = {"row": row, "reference": c.reference, "direction": d}
            hover = (
                f"mean {c.mean:+.2f} ± {c.std:.2f} points<br>t = {t_text(c.t)}, "
                f"{p_equation(c.p)} (two-sided paired t-test)"
            )
            fig.add_trace(
                _seed_points(
                    i, c.differences, view.seeds, text, _color(row), {"kind": "differences", **meta}
                ),
                1,
                col,
            )
            mean = _mean_point(i, c.mean, c.std, text, _color(row), {"kind": "mean", **meta}, hover)
            mean.update(mode="markers+text", text=[p_equation(c.p)], textposition="middle right")
            fig.add_trace(mean, 1, col)
        fig.update_xaxes(
            tickvals=list(range(len(compared))),
            ticktext=[label(r) for r in compared],
            range=[-0.6, len(compared) - 0.1],
            row=1,
            col=col,
        )
        fig.add_hline(y=0, line={"color": NEUTRAL_COLOR, "width": 1}, row=1, col=col)
    return _layout(fig, height, "Paired differences per seed: row − its reference")


def beta_figure(view: StudyView, height: int = 420) -> go.Figure:
    """Table 2: R@1 against beta with the inverted softmax, mean ± std over seeds."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{TITLES[d]} R@1 (%)" for d in DIRECTIONS])
    models = list(dict.fromkeys(c.model for c in view.table2))
    for curve in view.table2:
        shift = BETA_SHIFT * (models.index(curve.model) - (len(models) - 1) / 2)
        error = None if curve.std is None else {"type": "data", "array": list(curve.std)}
        std = curve.std if curve.std is not None else [None] * len(curve.beta)
        spread = "" if curve.std is None else " ± %{customdata[1]:.2f}"
        fig.add_trace(
            go.Scatter(
                x=[b + shift for b in curve.beta],
                y=list(curve.mean),
                customdata=[[b, sd] for b, sd in zip(curve.beta, std, strict=True)],
                error_y=error,
                mode="lines+markers",
                line={"color": _color(curve.model)},
                name=label(curve.model),
                legendgroup=curve.model,
                showlegend=curve.direction == DIRECTIONS[0],
                hovertemplate=f"{label(curve.model)}<br>β %{{customdata[0]:g}}: "
                f"%{{y:.2f}}{spread} %<extra></extra>",
                meta={"kind": "table2", "model": curve.model, "direction": curve.direction},
            ),
            1,
            DIRECTIONS.index(curve.direction) + 1,
        )
    fig.update_xaxes(title_text="β (inverted softmax)", dtick=1)
    spread = "" if all(c.std is not None for c in view.table2) else " (spread not recorded)"
    return _layout(fig, height, f"Table 2: R@1 against β, mean ± std over seeds{spread}")


def errors_figure(view: StudyView, height: int = 420) -> go.Figure:
    """Where the t2v top-1 clip comes from, and the attributes a wrong one gets wrong."""
    if not view.errors:
        return message_figure("This study.json has no top-1 error breakdown (older study)")
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.16,
        subplot_titles=[
            "top-1 clip of each caption (% of captions)",
            "attributes wrong per undescribed top-1",
        ],
    )
    models = [label(e.model) for e in view.errors]
    base = [0.0] * len(view.errors)  # stacked by hand: each share starts where the last ended
    for share in SHARES:
        fig.add_trace(
            go.Bar(
                x=[e.shares[share] for e in view.errors],
                y=models,
                base=list(base),
                offsetgroup="shares",
                orientation="h",
                name=SHARE_NAMES[share],
                marker={"color": SHARE_COLORS[share]},
                hovertemplate=f"%{{y}}: %{{x:.1f}} % {SHARE_NAMES[share]}<extra></extra>",
                meta={"kind": "share", "share": share},
            ),
            1,
            1,
        )
        base = [b + e.shares[share] for b, e in zip(base, view.errors, strict=True)]
    for e in view.errors:
        attributes = list(e.wrong_per_miss)
        fig.add_trace(
            go.Bar(
                x=attributes,
                y=[e.wrong_per_miss[a] for a in attributes],
                name=label(e.model),
                offsetgroup=e.model,
                marker={"color": _color(e.model)},
                hovertemplate=f"{label(e.model)}<br>%{{x}}: %{{y:.2f}} per miss<extra></extra>",
                meta={"kind": "wrong_per_miss", "model": e.model},
            ),
            1,
            2,
        )
    fig.update_layout(barmode="group")  # the models side by side on the right
    fig.update_xaxes(title_text="% of captions (they add to 100)", row=1, col=1)
    return _layout(fig, height, "What the top-1 gets wrong (t2v, mean over seeds)")


__all__ = ["beta_figure", "differences_figure", "errors_figure", "r1_figure"]
