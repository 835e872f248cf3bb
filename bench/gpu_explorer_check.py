"""The explorer service on a GPU against the CPU: times and metric parity (no Gradio).

    python -m bench.gpu_explorer_check --world DIR --json PATH

Loads the demo checkpoints on ``cpu`` and on ``cuda`` over the same world and feature
extraction, then times what the app calls — indexing (feature extraction), one search, the
as-trained metrics after a K/T/λ change and after a β change, and one subspace alignment —
and compares every metric of the as-trained table between the two devices (0.1 point).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from emcl import paths
from emcl.data.world import ensure_world
from emcl.explorer.setup import Setup, load_explorer
from emcl.fileio import atomic_write_json


def timed(fn, sync) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def run(device: str, world: Path, cache: Path) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    setup = Setup(
        data=world,
        base_checkpoint=paths.DEMO_BASE_CHECKPOINT,
        checkpoint=paths.DEMO_EMCL_CHECKPOINT,
        cache_dir=cache,
        device=device,
        log=lambda message: None,
    )
    seconds: dict[str, float] = {}
    seconds["index"], explorer = timed(lambda: load_explorer(setup), sync)
    seconds["geometry"], _ = timed(explorer.warm_up, sync)
    knobs = explorer.defaults("joint")
    query = explorer.snapshot.captions[0]
    explorer.rank(query, knobs)  # warm-up
    seconds["rank"], _ = timed(lambda: explorer.rank(query, replace(knobs, beta=2.5)), sync)
    seconds["metrics_first"], table = timed(lambda: explorer.metrics(knobs), sync)
    point = replace(knobs, iters=knobs.iters + 1)
    seconds["metrics_em_change"], _ = timed(lambda: explorer.metrics(point), sync)
    seconds["metrics_beta_change"], _ = timed(
        lambda: explorer.metrics(replace(point, beta=1.5)), sync
    )
    video = explorer.snapshot.caption_video[0]
    seconds["align"], _ = timed(lambda: explorer.align(video, query, knobs, words="tokens"), sync)
    return {"seconds": {k: round(v, 4) for k, v in seconds.items()}, "rows": dict(table.rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", required=True, help="where to build (or find) a demo world")
    parser.add_argument("--test-clips", type=int, default=1000)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    world = Path(args.world)
    start = time.perf_counter()
    ensure_world(world, 8, args.test_clips, 0, progress=False)
    figures: dict[str, object] = {"world_s": round(time.perf_counter() - start, 1)}
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for device in devices:
        figures[device] = run(device, world, world.parent / f"cache-{device}")
        print(device, figures[device]["seconds"], flush=True)
    if "cuda" in figures:
        worst = max(
            abs(figures["cpu"]["rows"][label][d][m] - figures["cuda"]["rows"][label][d][m])
            for label in figures["cpu"]["rows"]
            for d in ("t2v", "v2t")
            for m in ("R1", "R5", "R10", "MdR", "MnR")
        )
        figures["max_abs_metric_difference"] = worst
        figures["within_0.1"] = worst <= 0.1
        figures["gpu"] = torch.cuda.get_device_name(0)
        print(f"largest CPU/GPU metric difference: {worst:.3f}", flush=True)
    atomic_write_json(args.json, figures, indent=2)


if __name__ == "__main__":
    main()
