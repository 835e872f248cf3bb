"""Index a collection's video features into the cache, over one or many processes.

    python -m emcl extract --data DIR --checkpoint checkpoints/demo-base
    torchrun --nproc_per_node=8 -m emcl extract --data DIR --checkpoint CKPT
    torchrun --nnodes=4 --nproc_per_node=8 --node_rank=$NODE --rdzv_backend=c10d \\
        --rdzv_endpoint=$HOST:29500 -m emcl extract --data DIR --checkpoint CKPT

Every rank indexes a disjoint share, rank 0 merges (emcl/data/sharding.py). Run it again after
a crash or a kill to resume; ``--merge-only`` merges what is on disk without extracting.
Exit status: 0 when every part finished (corrupt files are listed, not fatal), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from emcl import paths
from emcl.cli import device_flag
from emcl.data.datasets import SPLITS, read_dataset
from emcl.data.sharding import Rank, merge_parts, run
from emcl.data.windows import DEFAULT_WINDOWS, WindowSpec
from emcl.fileio import atomic_write_json
from emcl.model.config import PRECISIONS
from emcl.video.decoder import default_workers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m emcl extract", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1],
    )  # fmt: skip
    p.add_argument("--data", required=True, help="dataset folder (MSR-VTT layout) or video folder")
    p.add_argument("--split", choices=SPLITS, default="all", help="MSR-VTT split (default: all)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="model checkpoint folder")
    model.add_argument("--model", help="open_clip backbone, e.g. ViT-B-32 (base model, meanP)")
    p.add_argument("--pretrained", help="open_clip weights tag for --model")
    p.add_argument("--cache-dir", help="cache root (default: $EMCL_CACHE_DIR or <repo>/.cache)")
    p.add_argument("--batch-size", type=int, default=32, help="clips per encoder call")
    p.add_argument(
        "--workers", type=int, help="decoder processes per rank (default: the CPUs shared out)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per decode")
    p.add_argument(
        "--device", default="auto", type=device_flag, help="auto | cpu | cuda (one GPU per rank)"
    )
    p.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="how the encoder computes: auto (bf16 autocast on a GPU, fp32 on the CPU), bf16, "
        "fp16 or fp32 (a GPU's features equal to the CPU's, for parity); part of the cache key",
    )  # fmt: skip
    p.add_argument(
        "--windows", metavar="OVER,LENGTH,STRIDE",
        default=f"{DEFAULT_WINDOWS.threshold_s:g},{DEFAULT_WINDOWS.length_s:g},"
        f"{DEFAULT_WINDOWS.stride_s:g}",
        help="videos over OVER s become LENGTH s windows every STRIDE s (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--no-windows", action="store_true", help="index every video whole")
    p.add_argument("--merge-only", action="store_true", help="merge the shards on disk")
    p.add_argument(
        "--parts", type=int, help="--merge-only: how many ranks the run had (default: as recorded)"
    )
    p.add_argument("--json", help="write the merge report (rank 0) here")
    p.add_argument("--quiet", action="store_true")
    return p


def _windows(args: argparse.Namespace) -> WindowSpec | None:
    if args.no_windows:
        return None
    try:
        over, length, stride = (float(x) for x in args.windows.split(","))
        return WindowSpec(over, length, stride)
    except ValueError as e:
        raise SystemExit(f"--windows: expected OVER,LENGTH,STRIDE in seconds ({e})") from None


def _workers() -> int:
    """Decoder children per rank: this machine's CPUs shared among its ranks."""
    return max(1, default_workers() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _encoder(args: argparse.Namespace, rank: Rank):
    from emcl.model.checkpoint import load_checkpoint
    from emcl.model.config import ModelConfig
    from emcl.model.encoder import Encoder
    from emcl.model.model import EMCLRetrievalModel

    device = args.device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    elif rank.world > 1:  # CPU ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // rank.world))
    if args.checkpoint:
        return Encoder(load_checkpoint(args.checkpoint), device, args.precision)
    config = ModelConfig(
        backbone=args.model, pretrained=args.pretrained, temporal="meanP", emcl=None
    )
    return Encoder(EMCLRetrievalModel(config).eval(), device, args.precision)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    rank = Rank.from_env()
    windows = _windows(args)
    records = read_dataset(args.data, args.split)
    encoder = _encoder(args, rank)
    cache = paths.features_dir(args.cache_dir)
    options = {
        "num_frames": encoder.num_frames, "size": encoder.image_size,
        "batch_size": args.batch_size, "workers": args.workers or _workers(),
        "timeout": args.timeout, "windows": windows, "progress": not args.quiet and rank.rank == 0,
    }  # fmt: skip
    if args.merge_only:
        result = merge_parts(records, encoder, cache, args.parts, **options)
    else:
        result = run(records, encoder, cache, **options)
    if result is None:  # not rank 0: the merge is rank 0's
        return 0
    print(result)
    print(f"cache: {result.gallery.cache_dir}")
    if args.json:
        atomic_write_json(Path(args.json), result.to_json(), indent=1)
    return 0 if result.ok else 1


__all__ = ["main", "parser"]
