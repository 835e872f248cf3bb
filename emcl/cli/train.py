"""Train an EMCL retrieval model (jointly with EMCL, or the base model with ``--no-emcl``).

    python -m emcl train --preset demo --out runs/demo-emcl --export checkpoints/demo-emcl
    python -m emcl train --preset demo --no-emcl --out runs/demo-base --export checkpoints/demo-base
    python -m emcl train --preset demo-pretrain --out runs/demo-pretrain
    python -m emcl train --preset demo-pretrain-video --out runs/demo-pretrain-video
    python -m emcl train --preset demo-v2 --init-from runs/demo-pretrain-video/best \\
        --out runs/v2-emcl
    torchrun --nproc_per_node=2 -m emcl train --preset msrvtt --data /data/msrvtt \\
        --pretrained /weights/vit-b-32-openai.safetensors

The preset ``demo`` trains on the app's demo world (built on first use, under the cache root:
``$EMCL_CACHE_DIR`` or ``<repo>/.cache``). The loop is emcl/training/loop.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from emcl.cli import device_flag
from emcl.model.backbone import resolve_device
from emcl.model.checkpoint import CheckpointError
from emcl.model.config import PRECISIONS, EMCLConfig
from emcl.training.loop import NonFiniteLoss, train
from emcl.training.presets import PAIRS, PRESETS, TrainConfig
from emcl.training.step import StepSettings


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with the command line's overrides applied."""
    cfg = PRESETS[args.preset]
    model = cfg.model
    if args.no_emcl:
        model = dataclasses.replace(model, emcl=None)
    if args.backbone is not None:
        model = dataclasses.replace(model, backbone=args.backbone)
    if args.pretrained is not None:
        model = dataclasses.replace(model, pretrained=args.pretrained or None)
    model = dataclasses.replace(model, emcl=_emcl_from_args(args, model.emcl, args.preset))
    overrides: dict[str, Any] = {"model": model, "seed": args.seed, "preset": args.preset}
    if args.init_from == "":
        args.init_from = None
        overrides["init_from"] = None
    for name in ("data", "batch_size", "epochs", "max_steps", "val_every", "lr_new",
                 "lr_backbone", "init_from", "corpus", "val_videos", "pairs"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return dataclasses.replace(cfg, **overrides)


# The training-time EMCL knobs (docs/knobs.md, EMCLConfig): flag -> EMCLConfig field.
EMCL_FLAGS = {"emcl_k": "k", "emcl_iters": "iters", "emcl_lam": "lam", "emcl_beta": "beta",
              "emcl_momentum": "momentum", "emcl_init": "init"}  # fmt: skip


def _emcl_from_args(
    args: argparse.Namespace, emcl: EMCLConfig | None, preset: str
) -> EMCLConfig | None:
    """The preset's EMCL layer with the ``--emcl-*`` flags applied (EMCLConfig validates them,
    naming the field); a flag for a model without the layer is refused, not silently dropped."""
    changes = {field: getattr(args, flag) for flag, field in EMCL_FLAGS.items()}
    changes = {field: value for field, value in changes.items() if value is not None}
    if not changes:
        return emcl
    flags = ", ".join(f"--emcl-{name.replace('_', '-')}" for name in changes)
    if emcl is None:
        why = "--no-emcl trains the base model" if args.no_emcl else f"preset {preset} has none"
        raise ValueError(f"{flags}: knobs of the EMCL layer, but {why} (no EMCL layer)")
    return dataclasses.replace(emcl, **changes)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emcl train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument("--data", help="dataset folder (MSR-VTT layout; default: the preset's)")
    p.add_argument("--out", help="run folder (default: runs/<preset>-<emcl|base>-s<seed>)")
    p.add_argument("--export", help="copy the selected checkpoint here when done")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--no-emcl", action="store_true", help="train the base model")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", type=device_flag, help="auto | cpu | cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast over fp32 weights: auto (bf16 on a GPU, fp32 on the CPU), "
                   "bf16, fp16 (GPU) or fp32")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the forward and loss (emcl/training/step.py)")  # fmt: skip
    p.add_argument("--backbone", help="open_clip model name (overrides the preset)")
    p.add_argument("--pretrained", help="open_clip tag or local .safetensors ('' = none)")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--epochs", type=int)
    p.add_argument("--val-every", type=int, help="steps between validations")
    p.add_argument("--lr-new", type=float)
    p.add_argument("--lr-backbone", type=float)
    p.add_argument("--init-from", help="pretrained checkpoint whose CLIP weights start the model "
                   "(demo-v2 default: runs/demo-pretrain-video/best; '' = none)")  # fmt: skip
    p.add_argument("--corpus", type=int, help="pretraining items (demo-pretrain: frames, "
                   "demo-pretrain-video: clips)")  # fmt: skip
    p.add_argument("--val-videos", type=int, help="validate on at most this many clips")
    p.add_argument("--pairs", choices=PAIRS, help="an epoch's pairs: every caption (all), each "
                   "video once (video), or motion twins side by side (twins); default: the "
                   "preset's")  # fmt: skip
    emcl = p.add_argument_group(
        "the EMCL layer's training knobs (docs/knobs.md; default: the preset's)"
    )
    emcl.add_argument("--emcl-k", type=int, help="subspaces K")
    emcl.add_argument("--emcl-iters", type=int, help="EM iterations")
    emcl.add_argument("--emcl-lam", type=float, help="E-step temperature lambda")
    emcl.add_argument("--emcl-beta", type=float, help="weight of the reconstruction added back")
    emcl.add_argument("--emcl-momentum", type=float, help="momentum of the trained prior")
    emcl.add_argument("--emcl-init", choices=("prior", "data"), help="initialisation of the bases")
    p.add_argument("--cache", help="frame cache folder (default: <cache root>/frames)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as error:  # a bad --emcl-* value, named by EMCLConfig
        print(f"error: {error}", file=sys.stderr)
        return 2
    default = f"runs/{args.preset}-{'base' if args.no_emcl else 'emcl'}-s{args.seed}"
    if cfg.corpus:  # pretraining: the folder the video presets' --init-from default names
        default = f"runs/{args.preset}"
    out = args.out or default
    speed = StepSettings(precision=args.precision, compile=args.compile)
    try:
        speed.resolve(resolve_device(args.device))  # a setting this device lacks: say so now
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        _, summary = train(cfg, out, resume=args.resume, device=args.device, cache_dir=args.cache,
                           export=args.export, progress=not args.quiet, speed=speed)  # fmt: skip
    except (NonFiniteLoss, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


__all__ = ["config_from_args", "main", "parser"]
