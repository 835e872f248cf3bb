"""Run the five-seed study: ``python -m emcl study --seeds 5 [--device cuda --jobs 10]``.

Needs the video-pretrained backbone (``python -m emcl train --preset demo-pretrain``, then
``--preset demo-pretrain-video``, each with ``--out runs/<preset>``). Builds world v2 if
missing, fine-tunes a base and an EMCL model per seed, evaluates them, writes ``study.json`` and
regenerates the report from it (emcl/study/). Killed mid-way, the same command resumes without
redoing finished fine-tunes or evaluations. ``--render --ablation TABLE`` runs nothing: it adds
``python -m bench.pretrain_ablation``'s table to the finished ``study.json`` and rewrites the
report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emcl.cli import device_flag
from emcl.fileio import atomic_write, atomic_write_json
from emcl.model.checkpoint import CheckpointError
from emcl.paths import CHECKPOINTS
from emcl.study.report import markdown
from emcl.study.run import StudyConfig, StudyError, run_study
from emcl.study.view import StudyFileError, read_study, study_view


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emcl study", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (at least 2)")
    p.add_argument("--out", default="runs/study", help="run folder (resumable)")
    p.add_argument("--pretrained", help="pretrained backbone (default: "
                   "runs/demo-pretrain-video/best)")  # fmt: skip
    p.add_argument("--world", help="world v2 folder (default: <cache root>/demo_world_v2)")
    p.add_argument("--world-size", type=int, nargs=3, default=StudyConfig.world_size,
                   metavar=("TRAIN", "TEST", "SEED"))  # fmt: skip
    p.add_argument("--device", default="auto", type=device_flag, help="auto | cpu | cuda")
    p.add_argument("--jobs", type=int, default=1, help="fine-tunes at once (subprocesses)")
    p.add_argument("--cache", help="frame cache folder (default: <cache root>/frames)")
    p.add_argument("--json", default=str(CHECKPOINTS / "study.json"))
    p.add_argument("--report", default=str(CHECKPOINTS / "REPORT.md"))
    p.add_argument("--max-steps", type=int, help="cap each fine-tune (smoke runs)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--val-videos", type=int)
    p.add_argument("--note", help="provenance to record in study.json and the report (e.g. "
                   "where and in how many calls the runs happened)")  # fmt: skip
    p.add_argument("--ablation", help="a `python -m bench.pretrain_ablation` JSON to add to "
                   "study.json and the report (what each step of the recipe bought)")  # fmt: skip
    p.add_argument("--render", action="store_true", help="run nothing: rewrite --report from "
                   "the finished --json (with --ablation / --note added if given)")  # fmt: skip
    return p


def _ablation(path: str) -> dict:
    """The ablation table, checked to be one (its rows are read by the report)."""
    try:
        table = json.loads(Path(path).read_text())
        rows = table["rows"]
        for label, row in rows.items():
            for key in ("t2v", "v2t", "errors"):
                if not isinstance(row.get(key), dict):
                    raise KeyError(f"{label!r} has no {key!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise StudyError(
            f"--ablation {path}: not a bench.pretrain_ablation table ({error})"
        ) from error
    return table


def _render(args: argparse.Namespace) -> dict:
    """The finished study.json, read and checked as the Study tab checks it, plus the summary
    the report quotes."""
    try:
        study = read_study(Path(args.json))
        study_view(study, args.json)
    except StudyFileError as error:
        raise StudyError(
            f"--render needs a finished study at --json {args.json} ({error})"
        ) from error
    if "summary" not in study:
        raise StudyError(f"--render: {args.json} is not a study.json (no summary)")
    return study


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("batch_size", args.batch_size),
                                   ("val_videos", args.val_videos)) if v is not None}  # fmt: skip
    try:
        ablation = _ablation(args.ablation) if args.ablation else None
        if args.render:
            study = _render(args)
        else:
            cfg = StudyConfig(seeds=tuple(range(args.seeds)), out=args.out,
                              pretrained=args.pretrained, world_size=tuple(args.world_size),
                              world_dir=args.world, device=args.device, jobs=args.jobs,
                              cache_dir=args.cache, overrides=overrides)  # fmt: skip
            study = run_study(cfg, say=lambda message: print(message, flush=True))
        if args.note:
            study["note"] = args.note
        if ablation is not None:
            study["ablation"] = ablation
    except (StudyError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args.json), study, indent=1)
    atomic_write(Path(args.report), markdown(study))
    summary = study["summary"]
    for name in ("base", "base+emcl", "emcl"):
        r1 = summary[name]["t2v"]["R1"]
        print(f"{name:>10}: t2v R@1 {r1['mean']:.1f} ± {r1['std']:.1f}")
    p_values = {k: v["t2v"]["R1"] for k, v in study["p_values"].items()}
    print(json.dumps({"p_values_t2v_R1": p_values}))
    print(f"wrote {args.json} and {args.report}")
    return 0


__all__ = ["main", "parser"]
