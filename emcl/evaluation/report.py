"""Reports of an evaluation result: a markdown table and the files. The sweep figure is
ui/plots.py's ``sweep_figure``, drawn by the command (emcl/cli/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emcl.core.protocols import protocol_name
from emcl.evaluation.sweep import Metrics, Sweep
from emcl.fileio import atomic_write, atomic_write_json

ROW_COLUMNS = 12  # row, protocol, then R@1, R@5, R@10, MdR, MnR per direction


def markdown(result: dict[str, Any]) -> str:
    """The rows as a markdown table, then the sweeps (t2v / v2t R@1)."""
    head = (
        "| row | protocol | "
        + " | ".join(f"{d} R@1 | R@5 | R@10 | MdR | MnR" for d in ("t2v", "v2t"))
        + " |"
    )
    rule = "|" + "---|" * ROW_COLUMNS

    def cells(m: dict) -> str:
        return f"{m['R1']:.1f} | {m['R5']:.1f} | {m['R10']:.1f} | {m['MdR']:g} | {m['MnR']:.1f}"

    rows = [(name, result[name]) for name in ("base", "base+emcl", "emcl")]
    rows += [(f"{name} (inference module)", r) for name, r in result["inference_module"].items()]
    lines = [head, rule]
    for name, r in rows:
        shown = protocol_name(r["protocol"])  # saved results may carry an alias
        lines.append(f"| {name} | {shown} | {cells(r['t2v'])} | {cells(r['v2t'])} |")
    lines += ["", "With the inverted softmax (tau = 0.01):", "", head, rule]
    for name, r in rows:
        inv = r["inverted_softmax"]
        shown = protocol_name(r["protocol"])
        lines.append(f"| {name} | {shown} | {cells(inv['t2v'])} | {cells(inv['v2t'])} |")
    for name, data in result.get("sweeps", {}).items():
        lines += sweep_markdown(name, Sweep.from_json(data))
    return "\n".join(lines) + "\n"


def _r1(m: Metrics) -> str:
    """t2v | v2t R@1, then the same with the inverted softmax."""
    inv = m.get("inverted_softmax", {"t2v": {"R1": float("nan")}, "v2t": {"R1": float("nan")}})
    return (
        f"{m['t2v']['R1']:.1f} | {m['v2t']['R1']:.1f} | "
        f"{inv['t2v']['R1']:.1f} | {inv['v2t']['R1']:.1f}"
    )


def sweep_markdown(name: str, sweep: Sweep) -> list[str]:
    """One table per swept model (R@1 at each value), then the references without EM."""
    lines: list[str] = []
    for label, points in sweep.series.items():
        lines += ["", f"Sweep {name}, {label} (R@1; plain / inverted softmax):", ""]
        lines += [f"| {sweep.knob} | t2v | v2t | t2v (IS) | v2t (IS) |", "|---|---|---|---|---|"]
        lines += [f"| {v:g} | {_r1(m)} |" for v, m in zip(sweep.values, points, strict=True)]
    if sweep.reference:
        lines += ["", "| without EM | t2v | v2t | t2v (IS) | v2t (IS) |", "|---|---|---|---|---|"]
        lines += [f"| {label} | {_r1(m)} |" for label, m in sweep.reference.items()]
    return lines


def write_outputs(result: dict[str, Any], json_path: Path) -> list[Path]:
    """The result as JSON and its markdown table beside it (``.md``); returns the files."""
    atomic_write_json(json_path, result, indent=2)
    written = [json_path, json_path.with_suffix(".md")]
    atomic_write(written[1], markdown(result))
    return written


__all__ = ["markdown", "sweep_markdown", "write_outputs"]
