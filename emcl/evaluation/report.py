"""Reports of an evaluation result: a markdown table, a plotly figure of the sweeps, the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emcl.fileio import atomic_output, atomic_write, atomic_write_json


def markdown(result: dict[str, Any]) -> str:
    """The rows as a markdown table, then the sweeps (t2v / v2t R@1)."""
    head = (
        "| row | protocol | "
        + " | ".join(f"{d} R@1 | R@5 | R@10 | MdR | MnR" for d in ("t2v", "v2t"))
        + " |"
    )
    lines = [head, "|" + "---|" * 12]

    def cells(m: dict) -> str:
        return f"{m['R1']:.1f} | {m['R5']:.1f} | {m['R10']:.1f} | {m['MdR']:g} | {m['MnR']:.1f}"

    rows = [(name, result[name]) for name in ("base", "base+emcl", "emcl")]
    rows += [(f"{name} (inference module)", r) for name, r in result["inference_module"].items()]
    for name, r in rows:
        lines.append(f"| {name} | {r['protocol']} | {cells(r['t2v'])} | {cells(r['v2t'])} |")
    lines += ["", "With the inverted softmax (tau = 0.01):", "", head, "|" + "---|" * 12]
    for name, r in rows:
        inv = r["inverted_softmax"]
        lines.append(f"| {name} | {r['protocol']} | {cells(inv['t2v'])} | {cells(inv['v2t'])} |")
    for name, points in result.get("sweeps", {}).items():
        knob = next(iter(points[0]))
        lines += ["", f"Sweep {name} (R@1; plain / inverted softmax):", ""]
        lines.append(f"| {knob} | t2v | v2t | t2v (IS) | v2t (IS) |")
        lines.append("|---|---|---|---|---|")
        for p in points:
            lines.append(
                f"| {p[knob]:g} | {p['t2v_R1']:.1f} | {p['v2t_R1']:.1f} | "
                f"{p['t2v_R1_inverted_softmax']:.1f} | {p['v2t_R1_inverted_softmax']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def figure_html(result: dict[str, Any], path: Path) -> bool:
    """One plotly panel per swept knob (R@1 vs value, base as a dashed line)."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return False
    sweeps = result.get("sweeps", {})
    knobs = ["beta", "k", "iters", "lam"]
    fig = make_subplots(rows=1, cols=len(knobs), subplot_titles=knobs)
    for col, knob in enumerate(knobs, start=1):
        for name, points in sweeps.items():
            if not name.startswith(f"{knob}/"):
                continue
            for metric, dash in (("t2v_R1", "solid"), ("v2t_R1", "dot")):
                fig.add_trace(
                    go.Scatter(
                        x=[p[knob] for p in points],
                        y=[p[metric] for p in points],
                        mode="lines+markers",
                        line={"dash": dash},
                        name=f"{name.split('/', 1)[1]} {metric[:3]}",
                        legendgroup=name,
                    ),
                    row=1,
                    col=col,
                )
        fig.add_hline(y=result["base"]["t2v"]["R1"], line_dash="dash", row=1, col=col)
        fig.update_xaxes(type="log" if knob in ("k", "lam") else "linear", row=1, col=col)
    fig.update_yaxes(title_text="R@1 (%)", row=1, col=1)
    fig.update_layout(title="EMCL sweeps (dashed: base t2v R@1)", height=420, width=1400)
    with atomic_output(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True)
    return True


def write_outputs(result: dict[str, Any], json_path: Path) -> list[Path]:
    """The result as JSON, its markdown table beside it (``.md``) and, with sweeps, the figure
    (``.html``, when plotly is installed); returns the files written."""
    atomic_write_json(json_path, result, indent=2)
    written = [json_path, json_path.with_suffix(".md")]
    atomic_write(written[1], markdown(result))
    if "sweeps" in result and figure_html(result, json_path.with_suffix(".html")):
        written.append(json_path.with_suffix(".html"))
    return written


__all__ = ["figure_html", "markdown", "write_outputs"]
