"""Train an EMCL retrieval model (jointly with EMCL, or the base model with ``--no-emcl``).

    python -m emcl.train --preset demo --out runs/demo-emcl --export checkpoints/demo-emcl
    python -m emcl.train --preset demo --no-emcl --out runs/demo-base --export checkpoints/demo-base
    torchrun --nproc_per_node=2 -m emcl.train --preset msrvtt --data /data/msrvtt \\
        --pretrained /weights/vit-b-32-openai.safetensors

Read top to bottom: presets -> data -> distributed helpers -> loss of one step -> optimiser and
schedule -> validation -> checkpoints -> the loop -> CLI.

Distributed: every rank encodes its slice of the global batch; text and frame features are
all-gathered *with gradient* (``torch.distributed.nn.functional.all_gather``), so the loss and
the EMCL layer (its momentum prior included) see the global batch, as the reference does
(PAPER.md §2.1). The same code runs on CPU with gloo. Model selection uses the ``val`` split
(the reference selects on the MSR-VTT 1k-A *test* split, PAPER.md §2.3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from emcl.checkpoint import (
    CONFIG,
    WEIGHTS,
    check_state,
    load_tensors,
    save_checkpoint,
    save_tensors,
)
from emcl.data import read_dataset
from emcl.demo_world import build_world, world_is_complete
from emcl.frame_cache import cache_frames
from emcl.metrics import retrieval_metrics
from emcl.model import (
    DEMO_BACKBONE,
    EMCLConfig,
    EMCLRetrievalModel,
    ModelConfig,
    contrastive_loss,
    resolve_device,
)
from emcl.search import similarity_matrix

# --------------------------------------------------------------------------------------------
# Presets (configs as data)
# --------------------------------------------------------------------------------------------
DEMO_WORLD = Path(".cache/demo_world")  # where app.py builds the default demo world
DEMO_WORLD_SIZE = (2000, 1000, 0)  # train clips, test clips, seed


def ensure_demo_world(data: str | os.PathLike) -> None:
    """Build the default demo world (as the app does) if ``data`` is its folder and missing."""
    if Path(data) == DEMO_WORLD and not world_is_complete(DEMO_WORLD, *DEMO_WORLD_SIZE):
        print(f"building the demo world in {DEMO_WORLD} ...", flush=True)
        build_world(DEMO_WORLD, *DEMO_WORLD_SIZE, progress=True)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    data: str
    batch_size: int  # global batch (all ranks together)
    epochs: int
    lr_backbone: float  # CLIP parameters (incl. the logit scale)
    lr_new: float  # parameters outside CLIP (temporal transformer)
    warmup: float = 0.1  # share of the steps with a linear warm-up, then cosine decay
    weight_decay: float = 0.2  # on matrices only (not biases, LayerNorm, scalars)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    pairs: str = "all"  # "all": every (video, caption) pair per epoch; "video": each video once
    val_every: int = 0  # steps between validations (0: once per epoch)
    val_videos: int = 1000  # validate on at most this many val clips (first caption each)
    seed: int = 0
    max_steps: int | None = None
    log_every: int = 10
    preset: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # A small open_clip config trained from scratch on the demo world (no downloads), sized so
    # both demo checkpoints train in about 20 minutes on 2 CPU cores.
    "demo": TrainConfig(
        model=ModelConfig(
            backbone=DEMO_BACKBONE,
            pretrained=None,
            num_frames=12,
            max_words=32,
            temporal="seqTransf",
            temporal_layers=2,
            emcl=EMCLConfig(),
        ),
        data=str(DEMO_WORLD),
        batch_size=32,
        epochs=14,
        lr_backbone=1e-3,
        lr_new=1e-3,
        weight_decay=0.1,
        pairs="video",
        val_every=112,
        val_videos=200,
    ),
    # The reference EMCL-Net recipe on MSR-VTT 9k (PAPER.md §2.3): CLIP ViT-B/32 with OpenAI
    # weights, 12 frames, 32 words, batch 128, 5 epochs, lr 1e-4 (new) and 1e-7 (CLIP).
    "msrvtt": TrainConfig(
        model=ModelConfig(
            backbone="ViT-B-32",
            pretrained="openai",
            num_frames=12,
            max_words=32,
            temporal="seqTransf",
            temporal_layers=4,
            emcl=EMCLConfig(),
        ),
        data="data/msrvtt",
        batch_size=128,
        epochs=5,
        lr_backbone=1e-7,
        lr_new=1e-4,
        pairs="all",
        val_every=0,
        val_videos=1000,
    ),
}


# --------------------------------------------------------------------------------------------
# Data: frames decoded once (uint8 cache), captions tokenised once
# --------------------------------------------------------------------------------------------
@dataclass
class Split:
    video_ids: list[str]
    frames: np.ndarray  # [N, T, S, S, 3] uint8
    token_ids: Tensor  # [C, L] every caption, tokenised
    caption_owner: np.ndarray  # [C] video row of each caption
    first_caption: np.ndarray  # [N] row in token_ids of each video's first caption
    failures: dict[str, str] = field(default_factory=dict)
    decode_seconds: float = 0.0


def load_split(
    model: EMCLRetrievalModel,
    root: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike | None,
    limit: int | None = None,
    progress: bool = True,
) -> Split:
    records = read_dataset(root, split)[:limit]
    if not records:
        raise ValueError(f"no '{split}' clips under {root}")
    cached = cache_frames(
        [r.video_id for r in records],
        [r.path for r in records],
        num_frames=model.config.num_frames,
        size=model.image_size,
        cache_dir=cache_dir,
        progress=progress,
    )
    captions = {r.video_id: r.captions for r in records}
    texts: list[str] = []
    owner: list[int] = []
    first: list[int] = []
    for row, video_id in enumerate(cached.video_ids):
        first.append(len(texts))
        texts += captions[video_id]
        owner += [row] * len(captions[video_id])
    return Split(
        video_ids=cached.video_ids,
        frames=cached.frames,
        token_ids=model.tokenize(texts),
        caption_owner=np.asarray(owner),
        first_caption=np.asarray(first),
        failures=cached.failures,
        decode_seconds=cached.seconds,
    )


def epoch_plan(split: Split, epoch: int, cfg: TrainConfig) -> np.ndarray:
    """Caption rows ``[steps, batch]`` for one epoch, the same on every rank (seed + epoch).

    ``pairs="video"``: every video once with a random caption; ``"all"``: every caption once.
    The last incomplete batch is dropped so the global batch never changes size.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    if cfg.pairs == "video":
        n_videos = len(split.video_ids)
        counts = np.bincount(split.caption_owner, minlength=n_videos)
        pick = (rng.random(n_videos) * counts).astype(int)
        rows = split.first_caption + pick
        rows = rows[rng.permutation(n_videos)]
    elif cfg.pairs == "all":
        rows = rng.permutation(len(split.caption_owner))
    else:
        raise ValueError(f"pairs must be 'video' or 'all', got {cfg.pairs!r}")
    steps = len(rows) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"batch {cfg.batch_size} is larger than the {len(rows)} training pairs")
    return rows[: steps * cfg.batch_size].reshape(steps, cfg.batch_size)


def make_batch(
    model: EMCLRetrievalModel, split: Split, caption_rows: np.ndarray, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids ``[B, L]``, pixels ``[B, T, 3, S, S]`` and frame mask ``[B, T]``."""
    videos = split.caption_owner[caption_rows]
    pixels = model.frames_to_pixels(torch.from_numpy(np.ascontiguousarray(split.frames[videos])))
    mask = torch.ones(pixels.shape[:2], dtype=torch.bool)
    ids = split.token_ids[torch.from_numpy(caption_rows)]
    return ids.to(device), pixels.to(device), mask.to(device)


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), resolve_device(device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(local)
        target = torch.device("cuda", local)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return Dist(rank, world, local), target


def gather(x: Tensor, world: int) -> Tensor:
    """Concatenate ``x`` over ranks along dim 0, keeping the gradient to every rank's slice."""
    if world == 1:
        return x
    return torch.cat(torch.distributed.nn.functional.all_gather(x), dim=0)


def gather_mask(mask: Tensor, world: int) -> Tensor:
    if world == 1:
        return mask
    parts = [torch.empty_like(mask, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(parts, mask.to(torch.uint8))
    return torch.cat(parts, dim=0).bool()


def rank_slice(rows: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's share of the global batch (contiguous, equal sizes)."""
    if len(rows) % d.world:
        raise ValueError(f"global batch {len(rows)} is not divisible by {d.world} ranks")
    per = len(rows) // d.world
    return rows[d.rank * per : (d.rank + 1) * per]


# --------------------------------------------------------------------------------------------
# The loss of one step (shared by the loop and the DDP test)
# --------------------------------------------------------------------------------------------
def step_loss(
    wrapped: torch.nn.Module,
    model: EMCLRetrievalModel,
    ids: Tensor,
    pixels: Tensor,
    mask: Tensor,
    world: int = 1,
    amp_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over the *global* batch; returns (loss, logits ``[B, B]``).

    ``wrapped`` is the model or its DDP wrapper (whose forward gives local features, under
    autocast when ``amp_dtype`` is set); ``model.logits`` then runs text-conditioned pooling and
    the EMCL layer on the gathered batch in fp32.
    """
    with torch.autocast(pixels.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        text, frames, scale = wrapped(ids, pixels, mask)  # [b, D], [b, T, D], []
    text, frames, mask = gather(text, world), gather(frames, world), gather_mask(mask, world)
    logits = model.logits(text.float(), frames.float(), mask)  # [B, B]
    return contrastive_loss(logits, scale), logits


# --------------------------------------------------------------------------------------------
# Optimiser and schedule
# --------------------------------------------------------------------------------------------
def build_optimizer(model: EMCLRetrievalModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Four groups: (CLIP | new) x (decayed matrices | biases, norms, scalars)."""
    groups: dict[tuple[str, bool], list[Tensor]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            part = "clip" if name.startswith("clip.") else "new"
            groups.setdefault((part, parameter.ndim >= 2), []).append(parameter)
    param_groups = []
    for (part, decay), params in sorted(groups.items()):
        lr = cfg.lr_backbone if part == "clip" else cfg.lr_new
        param_groups.append(
            {
                "params": params,
                "lr": lr,
                "base_lr": lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "name": f"{part}-{'decay' if decay else 'no_decay'}",
            }
        )
    return torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps)


def lr_multiplier(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0."""
    warm = max(1, round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------------------------
# Validation (the evaluation protocol: EMCL-Net blocks of 32 x 32, first caption per video)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_split(
    model: EMCLRetrievalModel, split: Split, device: torch.device, batch: int = 32
) -> tuple[Tensor, Tensor]:
    """Sentence features of each video's first caption ``[N, D]`` and frames ``[N, T, D]``."""
    texts, frames = [], []
    for start in range(0, len(split.video_ids), batch):
        rows = np.arange(start, min(start + batch, len(split.video_ids)))
        ids, pixels, mask = make_batch(model, split, split.first_caption[rows], device)
        texts.append(model.encode_text(ids).sentence.float().cpu())
        frames.append(model.encode_video(pixels, mask).float().cpu())
    return torch.cat(texts), torch.cat(frames)


def validate(model: EMCLRetrievalModel, split: Split, device: torch.device) -> dict:
    """t2v / v2t metrics on ``split`` with the model's own similarity (EMCL with its prior)."""
    was_training = model.training
    model.eval()
    try:
        text, frames = encode_split(model, split, device)
        params = model.config.emcl.params() if model.emcl is not None else None
        prior = model.emcl.prior.detach().cpu() if model.emcl is not None else None
        sim = similarity_matrix(
            text,
            frames=frames,
            params=params,
            prior=prior,
            protocol="emclnet",
            frame_temp=model.config.frame_temp,
        )
        return retrieval_metrics(sim)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# Checkpoints (model + optimiser state for resuming; safetensors + JSON only)
# --------------------------------------------------------------------------------------------
def save_train_state(
    directory: Path,
    model: EMCLRetrievalModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: dict,
) -> None:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    meta = {
        "param_groups": state["param_groups"],
        "state_scalars": scalars,
        "scaler": scaler.state_dict(),
        "progress": progress,
    }
    save_checkpoint(model, directory, extra={"progress": progress})
    save_tensors(directory / "optimizer.safetensors", directory / "optimizer.json", tensors, meta)


def load_train_state(
    directory: Path,
    model: EMCLRetrievalModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> dict:
    weights, _ = load_tensors(directory / WEIGHTS, directory / CONFIG)
    check_state(model.state_dict(), weights, str(directory / WEIGHTS))
    model.load_state_dict(weights)
    tensors, meta = load_tensors(directory / "optimizer.safetensors", directory / "optimizer.json")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["state_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scaler.load_state_dict(meta["scaler"])
    return meta["progress"]


class NonFiniteLoss(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    export: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[EMCLRetrievalModel, dict]:
    """Train, validate and checkpoint under ``out``; returns the final model and the summary."""
    d, dev = setup_distributed(device)
    out = Path(out)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = EMCLRetrievalModel(cfg.model).to(dev).train()
    show = progress and d.main

    # Data: every rank reads the same cache (rank 0 builds it first).
    if d.main:
        ensure_demo_world(cfg.data)
        train_split = load_split(model, cfg.data, "train", cache_dir, progress=show)
        val_split = load_split(model, cfg.data, "val", cache_dir, cfg.val_videos, progress=show)
    if d.world > 1:
        dist.barrier()
    if not d.main:
        train_split = load_split(model, cfg.data, "train", cache_dir, progress=False)
        val_split = load_split(model, cfg.data, "val", cache_dir, cfg.val_videos, progress=False)
    t_data = time.perf_counter() - t_start

    steps_per_epoch = len(epoch_plan(train_split, 0, cfg))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    val_every = cfg.val_every or steps_per_epoch

    wrapped: torch.nn.Module = model
    if d.world > 1:
        ids = [d.local_rank] if dev.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = build_optimizer(model, cfg)
    amp_dtype = None  # AMP on CUDA: bf16 where supported, else fp16 with a gradient scaler
    if dev.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    state = {"step": 0, "best_r1": -1.0, "best_step": None, "train_seconds": 0.0,
             "val_seconds": 0.0}  # fmt: skip
    if resume and (out / "last" / "optimizer.json").is_file():
        state.update(load_train_state(out / "last", model, optimizer, scaler))
        if show:
            print(f"resumed from {out / 'last'} at step {state['step']}", flush=True)
    elif resume and show:
        print(f"--resume: no checkpoint under {out / 'last'}, starting fresh", flush=True)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    log_path = out / "log.jsonl"

    def log(record: dict) -> None:
        if d.main:
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def checkpoint_and_validate(step: int) -> None:
        t0 = time.perf_counter()
        if d.main:
            metrics = validate(model, val_split, dev)
            r1 = metrics["t2v"]["R1"]
            log({"step": step, "val": metrics})
            if r1 > state["best_r1"]:
                state.update(best_r1=r1, best_step=step)
                info = {"step": step, "val": metrics, "train": cfg.to_dict()}
                save_checkpoint(model, out / "best", extra=info)
            state["val_seconds"] += time.perf_counter() - t0
            save_train_state(out / "last", model, optimizer, scaler, dict(state, step=step))
            if show:
                tqdm.write(f"step {step}: val t2v R@1 {r1:.1f} (best {state['best_r1']:.1f})")
        if d.world > 1:
            dist.barrier()

    bar = tqdm(total=total, initial=state["step"], desc="train", disable=not show)
    plan_epoch, plan = -1, np.empty((0, 0), dtype=int)
    step = state["step"]
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        if epoch != plan_epoch:
            plan_epoch, plan = epoch, epoch_plan(train_split, epoch, cfg)
        t0 = time.perf_counter()
        ids, pixels, mask = make_batch(model, train_split, rank_slice(plan[within], d), dev)
        multiplier = lr_multiplier(step, total, cfg.warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * multiplier
        loss, _ = step_loss(wrapped, model, ids, pixels, mask, d.world, amp_dtype)
        if not torch.isfinite(loss):
            last = out / "last"
            kept = f"the last good checkpoint is {last}" if last.is_dir() else "no checkpoint yet"
            raise NonFiniteLoss(
                f"loss is {loss.item()} at step {step} (lr x{multiplier:.3g}, logit scale "
                f"{model.logit_scale().item():.3g}); stopping without saving; {kept}. Lower the "
                "learning rate or resume from it with --resume."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, math.log(cfg.model.max_logit_scale))
        step += 1
        state["train_seconds"] += time.perf_counter() - t0
        bar.update(1)
        if show:
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
        if step % cfg.log_every == 0 or step == total:
            log({"step": step, "epoch": epoch, "loss": loss.item(), "lr_mult": multiplier,
                 "logit_scale": model.logit_scale().item(), "grad_norm": float(grad_norm),
                 "train_seconds": round(state["train_seconds"], 2)})  # fmt: skip
        if step % val_every == 0 or step == total:
            checkpoint_and_validate(step)
    bar.close()

    summary = {
        "steps": total,
        "steps_per_epoch": steps_per_epoch,
        "best_step": state["best_step"],
        "best_val_t2v_R1": state["best_r1"],
        "train_seconds": round(state["train_seconds"], 1),
        "val_seconds": round(state["val_seconds"], 1),
        "data_seconds": round(t_data, 1),
        "decode_seconds": round(train_split.decode_seconds + val_split.decode_seconds, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "skipped_clips": {**train_split.failures, **val_split.failures},
        "world_size": d.world,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if d.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if export is not None:
            export_run(out, Path(export))
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return model, summary


def export_run(run: Path, target: Path) -> None:
    """Copy the selected (best) checkpoint plus the run's log and summary to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copyfile(run / "best" / name, target / f".{name}.tmp")
        os.replace(target / f".{name}.tmp", target / name)
    for name in ("log.jsonl", "summary.json", "train_config.json"):
        if (run / name).is_file():
            shutil.copyfile(run / name, target / name)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = PRESETS[args.preset]
    model = cfg.model
    if args.no_emcl:
        model = dataclasses.replace(model, emcl=None)
    if args.backbone is not None:
        model = dataclasses.replace(model, backbone=args.backbone)
    if args.pretrained is not None:
        model = dataclasses.replace(model, pretrained=args.pretrained or None)
    overrides: dict[str, Any] = {"model": model, "seed": args.seed, "preset": args.preset}
    for name in ("data", "batch_size", "epochs", "max_steps", "val_every", "lr_new",
                 "lr_backbone"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return dataclasses.replace(cfg, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emcl.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--data", help="dataset folder (MSR-VTT layout; default: the preset's)")
    parser.add_argument("--out", help="run folder (default: runs/<preset>-<emcl|base>-s<seed>)")
    parser.add_argument("--export", help="copy the selected checkpoint here when done")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--no-emcl", action="store_true", help="train the base model")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--backbone", help="open_clip model name (overrides the preset)")
    parser.add_argument("--pretrained", help="open_clip tag or local .safetensors ('' = none)")
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--val-every", type=int, help="steps between validations")
    parser.add_argument("--lr-new", type=float)
    parser.add_argument("--lr-backbone", type=float)
    parser.add_argument("--cache", help="frame cache folder (default .cache/frames)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    out = args.out or f"runs/{args.preset}-{'base' if args.no_emcl else 'emcl'}-s{args.seed}"
    try:
        _, summary = train(cfg, out, resume=args.resume, device=args.device, cache_dir=args.cache,
                        export=args.export, progress=not args.quiet)  # fmt: skip
    except NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
