"""As-trained (EMCL-Net protocol) metrics, live: what one knob change costs on the demo.

    python -m bench.live_metrics_bench [--device cpu|cuda] [--json PATH]

Loads the app's demo world and checkpoints (built on first use) and times the Metrics tab's
as-trained table (Base, Base + EMCL at inference, EMCL checkpoint without and with EM, t2v and
v2t, 1K captions × 1K videos) through the explorer service, as the page calls it:

- ``geometry_s``: the knob-free geometry of both models' tables (once per gallery);
- ``em_change_s``: a change of K, iterations, λ, init or seed: one EM run per 32 × 32 block
  for each model, then the four rows' metrics;
- ``beta_change_s``: a β change: no EM run, the scores from the cached terms;
- ``one_off_s``: the same two EM runs without any cache (``python -m emcl evaluate``'s path).
Each figure is the median of ``--repeat`` runs with distinct knob values (no cache hits).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from emcl import paths
from emcl.core.protocols import TRAINED
from emcl.explorer.setup import Setup, load_explorer
from emcl.fileio import atomic_write_json
from emcl.retrieval.blocks import similarity_matrix
from emcl.runtime import flush_subnormals


def median_seconds(runs: list[float]) -> float:
    return round(statistics.median(runs), 3)


def main() -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    setup = Setup(
        base_checkpoint=paths.DEMO_BASE_CHECKPOINT,
        checkpoint=paths.DEMO_EMCL_CHECKPOINT,
        device=args.device,
        log=lambda message: None,
    )
    explorer = load_explorer(setup)
    snap = explorer.snapshot
    device = snap.base.sentences.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    figures: dict[str, object] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "captions": len(snap.captions),
        "videos": len(snap.records),
        "dim": int(snap.base.sentences.shape[-1]),
    }
    start = time.perf_counter()
    explorer.warm_up()
    sync()
    figures["geometry_s"] = round(time.perf_counter() - start, 3)

    knobs = explorer.defaults("joint")
    explorer.metrics(knobs)  # the first EM run (and any lazy set-up) outside the timings
    em_runs, beta_runs, one_off = [], [], []
    for i in range(args.repeat):
        point = replace(knobs, iters=knobs.iters + 1 + i)  # a new EM run for both models
        start = time.perf_counter()
        result = explorer.metrics(point)
        sync()
        em_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        explorer.metrics(replace(point, beta=1.0 + 0.5 * i))
        sync()
        beta_runs.append(time.perf_counter() - start)
    for i in range(min(args.repeat, 2)):
        params = replace(knobs, iters=knobs.iters + 1 + i).params()
        start = time.perf_counter()
        for view in (snap.base, snap.emcl):
            similarity_matrix(
                view.sentences,
                frames=view.frames.float(),
                params=params,
                prior=explorer.prior(knobs),
                protocol=TRAINED,
                frame_temp=view.encoder.config.frame_temp,
            )
        sync()
        one_off.append(time.perf_counter() - start)
    figures |= {
        "em_change_s": median_seconds(em_runs),
        "beta_change_s": median_seconds(beta_runs),
        "one_off_s": median_seconds(one_off),
        "rows": {label: m["t2v"]["R1"] for label, m in result.rows},
    }
    print(
        f"as-trained metrics, {figures['captions']} × {figures['videos']} on {device} "
        f"({figures['threads']} threads): geometry {figures['geometry_s']} s once; "
        f"K/T/λ change {figures['em_change_s']} s; β change {figures['beta_change_s']} s; "
        f"uncached (evaluate's path) {figures['one_off_s']} s"
    )
    if args.json:
        atomic_write_json(args.json, figures, indent=2)


if __name__ == "__main__":
    main()
