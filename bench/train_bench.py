"""The training step side by side: the plain settings, the optimised ones and (where it can
run) the compiled step, with seconds per step, achieved TFLOP/s and the loss curves.

    python -m bench.train_bench --model vit-b-32 --device cuda --json bench/results/train_step.json
    python -m bench.train_bench --model demo --device cuda      # the demo model at batch 256
    python -m bench.train_bench --smoke --device cpu            # tiny sizes, seconds

The models have random weights (no download; the timings do not depend on the weights' values).
The work is emcl/training/step_bench.py; the step is the training loop's own.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from emcl.fileio import atomic_write_json
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.runtime import flush_subnormals
from emcl.training.step import StepSettings
from emcl.training.step_bench import BENCH_MODELS, compare_train_step, default_variants

SMOKE_MODEL = ModelConfig(backbone=DEMO_BACKBONE, num_frames=2, max_words=8,
                          temporal_layers=1, emcl=EMCLConfig(k=4))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    p = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__)
    p.add_argument("--model", choices=sorted(BENCH_MODELS), default="vit-b-32")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, help="clips per step (default: the model's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled step")
    p.add_argument("--smoke", action="store_true", help="a tiny model, 1 + 1 steps")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible; use --device cpu --smoke", file=sys.stderr)
        return 1
    config, batch = BENCH_MODELS[args.model]
    steps, warmup = args.steps, args.warmup
    if args.smoke:
        config, batch, steps, warmup = SMOKE_MODEL, 4, 1, 1
    variants = default_variants(device)
    if args.no_compile:
        variants.pop("compiled", None)
    elif args.smoke and "compiled" in variants:  # the compiled path without a C++ build
        variants["compiled"] = (StepSettings(compile=True, compile_backend="aot_eager"), False)
    report = compare_train_step(config, batch=args.batch or batch, device=device, steps=steps,
                                warmup=warmup, variants=variants)  # fmt: skip
    report.update(
        model=config.backbone, device_name=torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu", torch=torch.__version__,
    )  # fmt: skip
    print(json.dumps(report))
    if args.json:
        atomic_write_json(args.json, report, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
