"""What each pretraining stage buys the demo base model, on world v2's 1,000 test clips.

    python -m bench.pretrain_ablation --json bench/results/pretrain_ablation.json \\
        --row "frames only=runs/study/s0-base/export" \\
        --row "+ clips, no fine-tune=runs/demo-pretrain-video/best" ...

Each row is a checkpoint scored as the study scores its base row (†: text-conditioned pooling of
the model's own features, no EMCL, one caption per clip; emcl/study/run.py), with the top-1
error breakdown (emcl/study/errors.py) and the world's ambiguity ceiling beside it. A row's
checkpoint may be any video checkpoint; the label says which recipe made it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from emcl.data.world import ensure_world
from emcl.evaluation.protocol import extract, metrics, scores
from emcl.fileio import atomic_write_json
from emcl.model.backbone import resolve_device
from emcl.paths import DEMO_WORLDS, cache_root, demo_world_dir
from emcl.runtime import flush_subnormals
from emcl.study.errors import top1_errors, world_truth


def score_row(checkpoint: str, world: str, features_dir: Path, device: str) -> dict:
    """The base row's t2v / v2t metrics and top-1 errors of one checkpoint."""
    t0 = time.perf_counter()
    features = extract(checkpoint, world, "test", features_dir, device, progress=False)
    sim = scores(features, None)
    result = metrics(sim, features)
    errors = top1_errors(sim.cpu(), *world_truth(world, features.video_ids))
    # an export holds its run's summary; a run's best/ or last/ sits beside it
    summaries = [Path(checkpoint) / "summary.json", Path(checkpoint).parent / "summary.json"]
    summary = next((path for path in summaries if path.is_file()), None)
    trained = json.loads(summary.read_text()) if summary else {}
    return {
        "checkpoint": checkpoint,
        "t2v": result["t2v"],
        "v2t": result["v2t"],
        "errors": errors,
        "train_wall_seconds": trained.get("wall_seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", action="append", required=True, help="LABEL=CHECKPOINT (repeatable)")
    p.add_argument("--json", required=True, help="where to write the table")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    rows = []
    for spec in args.row:
        label, sep, checkpoint = spec.partition("=")
        if not sep or not Path(checkpoint).is_dir():
            p.error(f"--row {spec!r}: need LABEL=CHECKPOINT with an existing checkpoint folder")
        rows.append((label, checkpoint))
    world_params = DEMO_WORLDS[2]
    world = str(demo_world_dir(version=2))
    ensure_world(world, world_params.n_train, world_params.n_test, world_params.seed,
                 progress=False, version=2, splits=("test",))  # fmt: skip
    ceiling = json.loads((Path(world) / "world.json").read_text()).get("ceiling_t2v_R1")
    device = str(resolve_device(args.device))
    out = {"world": "v2", "split": "test", "ceiling_t2v_R1": ceiling, "device": device,
           "torch": torch.__version__, "rows": {}}  # fmt: skip
    for label, checkpoint in rows:
        row = score_row(checkpoint, world, cache_root() / "features", device)
        out["rows"][label] = row
        wrong = row["errors"]
        print(f"{label:40s} t2v R@1 {row['t2v']['R1']:5.1f}  v2t R@1 {row['v2t']['R1']:5.1f}  "
              f"wrong motion/caption {wrong['wrong_per_miss']['motion']:.2f}  ({row['seconds']} s)",
              flush=True)  # fmt: skip
        atomic_write_json(Path(args.json), out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
