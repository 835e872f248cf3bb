"""Evaluate base vs EMCL retrieval: ``python -m emcl evaluate --preset demo --json out.json``.

Writes the JSON, a markdown table (``<json stem>.md``) and, with sweeps, their figures
(``<json stem>.html``, ui/plots.py's ``sweep_figure``, as the app draws them) next to it. The rows
and sweeps are emcl/evaluation/protocol.py.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from emcl.cli import device_flag
from emcl.evaluation.protocol import PRESETS, evaluate
from emcl.evaluation.report import markdown, write_outputs
from emcl.evaluation.sweep import Sweep
from emcl.fileio import atomic_write
from ui.plots import sweep_figure


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emcl evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--json", required=True, help="where to write the results")
    p.add_argument("--checkpoint", help="checkpoint trained jointly with EMCL")
    p.add_argument("--base-checkpoint", help="checkpoint trained without EMCL")
    p.add_argument("--data", help="dataset folder (MSR-VTT layout)")
    p.add_argument("--split", help="split to evaluate (default: test)")
    p.add_argument("--cache", help="gallery feature cache (default: <cache root>/features)")
    p.add_argument("--no-sweeps", action="store_true")
    p.add_argument("--device", default="auto", type=device_flag, help="auto | cpu | cuda")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = {
        "checkpoint": args.checkpoint,
        "base_checkpoint": args.base_checkpoint,
        "data": args.data,
        "split": args.split,
    }
    cfg = PRESETS[args.preset]
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    result = evaluate(
        cfg, cache_dir=args.cache, sweeps=not args.no_sweeps, device=args.device,
        progress=not args.quiet,
    )  # fmt: skip
    written = write_outputs(result, Path(args.json))
    if result.get("sweeps"):
        written.append(write_figures(result["sweeps"], Path(args.json).with_suffix(".html")))
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def write_figures(sweeps: dict[str, Any], path: Path) -> Path:
    """One page with a figure per sweep (the JSON form of :class:`Sweep`, by name)."""
    parts = []
    for i, (name, data) in enumerate(sweeps.items()):
        sweep = Sweep.from_json(data)
        fig = sweep_figure(sweep.knob, sweep.values, sweep.series, sweep.reference, title=name)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))  # plotly.js once
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>EMCL sweeps</title></head>'
        f"<body>{''.join(parts)}</body></html>\n"
    )
    atomic_write(path, page)
    return path


__all__ = ["main", "parser", "write_figures"]
