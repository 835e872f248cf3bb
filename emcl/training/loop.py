"""The training loop: validation, resumable train state, the loop, export.

Read top to bottom. One step (its loss, the update, its device settings) is
emcl/training/step.py. ``cfg.init_from`` starts the model from a pretrained backbone and
``cfg.corpus`` pretrains on world v2's frame-phrase corpus (emcl/training/pretrain.py). Every
rank encodes its slice of the global batch and the loss sees the gathered global batch
(emcl/training/distributed.py, docs/method.md §2.1). Model selection uses the ``val`` split's
text-to-video R@1 (the reference selects on the MSR-VTT 1k-A *test* split, docs/method.md §2.3),
or with ``cfg.select="last"`` the final step (a fixed step count for every model):
``<out>/best`` is the selected checkpoint, ``<out>/last`` the latest one with the optimiser
state for ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from emcl.core.protocols import TRAINED
from emcl.data.world import ensure_demo_world
from emcl.fileio import atomic_output, atomic_write_json
from emcl.model.checkpoint import (
    CONFIG,
    WEIGHTS,
    check_state,
    convert_checkpoint,
    load_tensors,
    save_checkpoint,
    save_tensors,
)
from emcl.model.model import EMCLRetrievalModel
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.metrics import retrieval_metrics
from emcl.training.data import Split, epoch_plan, load_split, make_batch
from emcl.training.distributed import Dist, rank_slice, setup_distributed
from emcl.training.optim import lr_multiplier
from emcl.training.presets import TrainConfig
from emcl.training.pretrain import corpus_splits, init_backbone
from emcl.training.step import NonFiniteLoss, StepSettings, TrainStep, step_loss

RUN_FILES = ("log.jsonl", "summary.json", "train_config.json")  # exported beside the weights


# --------------------------------------------------------------------------------------------
# Validation (the evaluation protocol: as-trained blocks, first caption per video)
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
            protocol=TRAINED,
            frame_temp=model.config.frame_temp,
        )
        return retrieval_metrics(sim)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# Train state (model + optimiser state for resuming; safetensors + JSON only)
# --------------------------------------------------------------------------------------------
def save_train_state(
    directory: Path,
    model: EMCLRetrievalModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: dict,
) -> None:
    """The model checkpoint plus the optimiser, scaler and loop progress, each file atomic."""
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
    """Restore what :func:`save_train_state` wrote; returns the loop progress."""
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
    kernels = ("fused", "foreach", "capturable")  # this run's device decides, not the saved run's
    pairs = zip(meta["param_groups"], optimizer.param_groups, strict=True)
    groups = [dict(saved, **{k: now[k] for k in kernels if k in now}) for saved, now in pairs]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scaler.load_state_dict(meta["scaler"])
    return meta["progress"]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _load_splits(
    model: EMCLRetrievalModel,
    cfg: TrainConfig,
    d: Dist,
    cache_dir: str | os.PathLike | None,
    show: bool,
) -> tuple[Split, Split]:
    """Train and val splits; rank 0 builds the world and the frame cache, the others then read
    the same cache (no two processes decode into it at once)."""
    if cfg.corpus:  # pretraining: the corpus is rendered in memory by every rank
        return corpus_splits(model, cfg)
    if d.main:
        ensure_demo_world(cfg.data, show, "trainval")
        train_split = load_split(model, cfg.data, "train", cache_dir, progress=show)
        val_split = load_split(model, cfg.data, "val", cache_dir, cfg.val_videos, progress=show)
    if d.world > 1:
        dist.barrier()
    if not d.main:
        train_split = load_split(model, cfg.data, "train", cache_dir, progress=False)
        val_split = load_split(model, cfg.data, "val", cache_dir, cfg.val_videos, progress=False)
    return train_split, val_split


def _explain(error: NonFiniteLoss, total: int, cfg: TrainConfig, model: EMCLRetrievalModel,
             out: Path) -> NonFiniteLoss:  # fmt: skip
    """The non-finite loss with what the run was doing and where its last good state is."""
    last = out / "last"
    kept = f"the last good checkpoint is {last}" if last.is_dir() else "no checkpoint yet"
    multiplier = lr_multiplier(max(error.step, 0), total, cfg.warmup)
    return NonFiniteLoss(
        f"{error} (lr x{multiplier:.3g}, logit scale {model.logit_scale().item():.3g}); "
        f"stopping without saving; {kept}. Lower the learning rate or resume from it with "
        "--resume.", error.step, error.loss,
    )  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """A run's steps: per epoch, in all, and how often it validates and logs. Written as the
    "plan" of each (re)start's first log.jsonl record, for a reader's progress and ETA (the
    Train tab, emcl/training/job_progress.py)."""

    total_steps: int
    steps_per_epoch: int
    val_every: int
    log_every: int


def schedule(train_split: Split, cfg: TrainConfig) -> Schedule:
    steps_per_epoch = len(epoch_plan(train_split, 0, cfg))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return Schedule(total, steps_per_epoch, cfg.val_every or steps_per_epoch, cfg.log_every)


@dataclass
class _Run:
    """One run once set up: what the steps, validation and checkpoints share. ``state`` is what
    ``<out>/last`` records and a resume restores (step, best R@1 and step, seconds)."""

    cfg: TrainConfig
    out: Path
    d: Dist
    dev: torch.device
    model: EMCLRetrievalModel
    stepper: TrainStep
    train_split: Split
    val_split: Split
    planned: Schedule
    show: bool
    state: dict[str, Any]

    def log(self, record: dict) -> None:
        if self.d.main:
            with open(self.out / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def checkpoint_and_validate(self, step: int) -> None:
        self.stepper.check()  # never a checkpoint of the weights after a non-finite step
        t0 = time.perf_counter()
        state, out = self.state, self.out
        if self.d.main:
            metrics = validate(self.model, self.val_split, self.dev)
            r1 = metrics["t2v"]["R1"]
            self.log({"step": step, "val": metrics})
            # "val": strictly better (the earliest of equal scores is kept); "last": the end
            last = self.planned.total_steps
            chosen = step == last if self.cfg.select == "last" else r1 > state["best_r1"]
            if chosen:
                state.update(best_r1=r1, best_step=step)
                info = {"step": step, "val": metrics, "train": self.cfg.to_dict()}
                save_checkpoint(self.model, out / "best", extra=info)
            state["val_seconds"] += time.perf_counter() - t0
            stepper = self.stepper
            save_train_state(out / "last", self.model, stepper.optimizer, stepper.scaler,
                             dict(state, step=step))  # fmt: skip
            if self.show:
                tqdm.write(f"step {step}: val t2v R@1 {r1:.1f} (best {state['best_r1']:.1f})")
        if self.d.world > 1:
            dist.barrier()

    def run_steps(self) -> None:
        """The steps from ``state["step"]`` to the end, logging and validating on schedule."""
        cfg, model, stepper, state = self.cfg, self.model, self.stepper, self.state
        total, per_epoch = self.planned.total_steps, self.planned.steps_per_epoch
        bar = tqdm(total=total, initial=state["step"], desc="train", disable=not self.show)
        plan_epoch, plan = -1, np.empty((0, 0), dtype=int)
        step = state["step"]
        while step < total:
            epoch, within = divmod(step, per_epoch)
            if epoch != plan_epoch:
                plan_epoch, plan = epoch, epoch_plan(self.train_split, epoch, cfg)
            t0 = time.perf_counter()
            rows = rank_slice(plan[within], self.d)
            ids, pixels, mask = make_batch(model, self.train_split, rows, self.dev)
            multiplier = lr_multiplier(step, total, cfg.warmup)
            loss = stepper(ids, pixels, mask, step, multiplier)  # no wait on the device
            step += 1
            state["train_seconds"] += time.perf_counter() - t0
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                stepper.check()
                bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
                self.log({"step": step, "epoch": epoch, "loss": loss.item(),
                          "lr_mult": multiplier, "logit_scale": model.logit_scale().item(),
                          "grad_norm": float(stepper.grad_norm),
                          "train_seconds": round(state["train_seconds"], 2)})  # fmt: skip
            if step % self.planned.val_every == 0 or step == total:
                self.checkpoint_and_validate(step)
        bar.close()

    def summary(self, wall_seconds: float, data_seconds: float) -> dict[str, Any]:
        state, splits = self.state, (self.train_split, self.val_split)
        return {
            "steps": self.planned.total_steps,
            "steps_per_epoch": self.planned.steps_per_epoch,
            "best_step": state["best_step"],
            "best_val_t2v_R1": state["best_r1"],
            "train_seconds": round(state["train_seconds"], 1),
            "val_seconds": round(state["val_seconds"], 1),
            "data_seconds": round(data_seconds, 1),
            "decode_seconds": round(sum(split.decode_seconds for split in splits), 1),
            "wall_seconds": round(wall_seconds, 1),
            "skipped_clips": {**self.train_split.failures, **self.val_split.failures},
            "world_size": self.d.world,
            "device": str(self.dev),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        }


def _resume_state(run: _Run, resume: bool) -> None:
    """Restore ``<out>/last`` into the run's model, optimiser and state when asked and present."""
    last = run.out / "last"
    if resume and (last / "optimizer.json").is_file():
        stepper = run.stepper
        run.state.update(load_train_state(last, run.model, stepper.optimizer, stepper.scaler))
        if run.show:
            print(f"resumed from {last} at step {run.state['step']}", flush=True)
    elif resume and run.show:
        print(f"--resume: no checkpoint under {last}, starting fresh", flush=True)


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    export: str | os.PathLike | None = None,
    progress: bool = True,
    speed: StepSettings | None = None,
) -> tuple[EMCLRetrievalModel, dict]:
    """Train, validate and checkpoint under ``out``; returns the final model and the summary.

    ``cache_dir``: the frame cache (default: under the cache root, emcl.paths). ``export``:
    where to copy the best checkpoint and the run's records when done (:func:`export_run`).
    ``speed``: how each step runs on the device (emcl/training/step.py; default: what the
    device supports, uncompiled).
    """
    d, dev = setup_distributed(device)
    out = Path(out)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = EMCLRetrievalModel(cfg.model).to(dev).train()
    if cfg.init_from is not None:  # same seed -> same new-module weights before and after
        init_backbone(model, cfg.init_from)
    show = progress and d.main
    train_split, val_split = _load_splits(model, cfg, d, cache_dir, show)
    t_data = time.perf_counter() - t_start

    wrapped: torch.nn.Module = model
    if d.world > 1:
        ids = [d.local_rank] if dev.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    stepper = TrainStep(model, cfg, speed or StepSettings(), device=dev, wrapped=wrapped,
                        world=d.world)  # fmt: skip
    state = {"step": 0, "best_r1": -1.0, "best_step": None, "train_seconds": 0.0,
             "val_seconds": 0.0}  # fmt: skip
    run = _Run(cfg, out, d, dev, model, stepper, train_split, val_split,
               schedule(train_split, cfg), show, state)  # fmt: skip
    _resume_state(run, resume)
    if d.main:
        atomic_write_json(out / "train_config.json", cfg.to_dict(), indent=2)
    run.log({"step": state["step"], "time": time.time(), "plan": dataclasses.asdict(run.planned)})
    try:
        run.run_steps()
    except NonFiniteLoss as error:
        raise _explain(error, run.planned.total_steps, cfg, model, out) from None

    summary = run.summary(time.perf_counter() - t_start, t_data)
    if d.main:
        atomic_write_json(out / "summary.json", summary, indent=2)
        if export is not None:
            export_run(out, Path(export))
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return model, summary


def export_run(run: Path, target: Path) -> None:
    """The selected (best) checkpoint stored in fp16, plus the run's log, summary and config, to
    ``target`` (the shipped form: half the size; emcl/model/checkpoint.py).

    Each file is replaced atomically, the weights first: an export interrupted between the two
    leaves a config whose recorded hash does not match, which loading reports.
    """
    convert_checkpoint(run / "best", target, storage="float16")
    for source in [run / name for name in RUN_FILES if (run / name).is_file()]:
        with atomic_output(target / source.name) as tmp:
            shutil.copyfile(source, tmp)


__all__ = [
    "NonFiniteLoss",
    "encode_split",
    "export_run",
    "load_train_state",
    "save_train_state",
    "step_loss",
    "train",
    "validate",
]
