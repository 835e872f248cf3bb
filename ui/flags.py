"""The app's command-line flags and the :class:`Setup` they describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from emcl import paths
from emcl.explorer.setup import Setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="EMCL Explorer: base vs EMCL text-video retrieval")
    ap.add_argument(
        "--data",
        type=Path,
        help="MSR-VTT layout or a folder of videos (+ captions.csv/jsonl); default: the demo "
        "world, built on first run under --cache-dir",
    )
    ap.add_argument("--split", default="test", help="MSR-VTT split to index (default: test)")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="jointly trained EMCL checkpoint (default: checkpoints/demo-emcl for the demo world)",
    )
    ap.add_argument(
        "--base-checkpoint",
        type=Path,
        help="base checkpoint (default: checkpoints/demo-base unless --model is given)",
    )
    ap.add_argument(
        "--model",
        help="open_clip backbone for a base model without a checkpoint, "
        "e.g. ViT-B-32 (zero-shot, mean-pooled frames)",
    )
    ap.add_argument("--pretrained", help="open_clip tag or local .safetensors for --model")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"demo world, feature and map caches, uploads (default: ${paths.CACHE_ENV} or "
        "./.cache in the repository)",
    )
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    ap.add_argument("--port", type=int, default=7860)
    return ap.parse_args(argv)


def setup_from(args: argparse.Namespace) -> Setup:
    base, emcl = args.base_checkpoint, args.checkpoint
    if args.model is None:
        base = base or paths.DEMO_BASE_CHECKPOINT
        default_emcl = paths.DEMO_EMCL_CHECKPOINT
        emcl = emcl or (default_emcl if args.data is None or default_emcl.exists() else None)
    return Setup(
        data=args.data,
        split=args.split,
        base_checkpoint=base,
        checkpoint=emcl,
        model=args.model,
        pretrained=args.pretrained,
        cache_dir=paths.cache_root(args.cache_dir),
        device=args.device,
    )
