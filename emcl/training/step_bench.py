"""Timing the training step: seconds per step, achieved TFLOP/s and the loss curve on a fixed
seed, for one :class:`~emcl.training.step.StepSettings` or several side by side.

The step is the loop's own (:class:`~emcl.training.step.TrainStep`) on one fixed random batch,
so the loss falls as the model fits it and two settings can be compared step by step: their
curves agree to the autocast precision's noise (docs/benchmarks.md §9). FLOPs are counted by
``torch.utils.flop_counter`` on one eager forward and backward (matmuls, convolutions and
attention; the optimiser's elementwise work is not counted).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from emcl.model.config import EMCLConfig, ModelConfig
from emcl.model.model import EMCLRetrievalModel
from emcl.training.presets import DEMO_VIDEO_MODEL, TrainConfig
from emcl.training.step import PLAIN_SETTINGS, StepSettings, TrainStep, compile_supported

EOT = 49407  # open_clip's end-of-text id: the highest id, where the sentence is pooled
# The reference EMCL-Net model (docs/method.md §2.3) with random weights: no download needed.
VIT_B_32 = ModelConfig(backbone="ViT-B-32", pretrained=None, num_frames=12, max_words=32,
                       temporal="seqTransf", temporal_layers=4, emcl=EMCLConfig())  # fmt: skip
BENCH_MODELS = {"vit-b-32": (VIT_B_32, 128), "demo": (DEMO_VIDEO_MODEL, 256)}  # config, batch


@dataclass(frozen=True, kw_only=True)
class StepTiming:
    """One setting's run: ``losses`` holds every step's loss, the warm-up steps first."""

    label: str
    settings: dict
    batch: int
    frames: int
    warmup: int
    step_seconds: float  # mean over the timed steps, one device sync at the end
    first_step_seconds: float  # the first step alone (compilation included)
    flop_per_step: float
    losses: list[float]
    peak_memory_gib: float | None = None
    compile_error: str | None = None
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @property
    def tflops(self) -> float:
        return self.flop_per_step / self.step_seconds / 1e12

    @property
    def clips_per_second(self) -> float:
        return self.batch / self.step_seconds

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(
            step_seconds=round(self.step_seconds, 5),
            first_step_seconds=round(self.first_step_seconds, 3),
            tflops=float(f"{self.tflops:.4g}"),
            clips_per_second=round(self.clips_per_second, 1),
            losses=[round(x, 6) for x in self.losses],
        )
        return out


def fixed_batch(
    model: EMCLRetrievalModel, batch: int, device: torch.device, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids ``[B, L]``, pixels ``[B, T, 3, S, S]`` and an all-true frame mask ``[B, T]``."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, EOT, (batch, cfg.max_words), generator=gen)
    ids[:, -1] = EOT
    shape = (batch, cfg.num_frames, 3, model.image_size, model.image_size)
    pixel_gen = torch.Generator(device=device).manual_seed(seed)
    pixels = torch.randn(shape, generator=pixel_gen, device=device)
    mask = torch.ones(batch, cfg.num_frames, dtype=torch.bool, device=device)
    return ids.to(device), pixels, mask


def count_flops(stepper: TrainStep, ids: Tensor, pixels: Tensor, mask: Tensor) -> float:
    """FLOPs of one eager forward and backward (the gradients are dropped afterwards)."""
    with FlopCounterMode(display=False) as counter:
        stepper.eager_loss(ids, pixels, mask).backward()
    stepper.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(
    model_config: ModelConfig,
    *,
    batch: int,
    device: str | torch.device = "cuda",
    steps: int = 10,
    warmup: int = 3,
    seed: int = 0,
    settings: StepSettings | None = None,
    sync_each_step: bool = False,
    lr: float = 1e-4,
    label: str = "",
) -> StepTiming:
    """Train ``warmup + steps`` steps on one fixed batch and time the last ``steps``.

    ``sync_each_step`` reads the loss back every step, as a loop that prints it would (the
    plain baseline). Weights, batch and EM prior start the same for a given ``seed``.
    """
    if steps < 1 or warmup < 1:
        raise ValueError("steps and warmup must be >= 1 (the first step is timed alone)")
    device = torch.device(device)
    settings = settings or StepSettings()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if settings.compile:
        torch._dynamo.reset()  # compile afresh, so the first step's time includes it
    torch.manual_seed(seed)
    model = EMCLRetrievalModel(model_config, load_pretrained=False).to(device).train()
    cfg = TrainConfig(model=model_config, data="", batch_size=batch, epochs=1,
                      lr_backbone=lr, lr_new=lr, seed=seed)  # fmt: skip
    stepper = TrainStep(model, cfg, settings, device=device)
    ids, pixels, mask = fixed_batch(model, batch, device, seed)
    losses: list[Tensor] = []

    def run(step: int) -> None:
        losses.append(stepper(ids, pixels, mask, step))
        if sync_each_step:
            float(losses[-1])

    _sync(device)
    start = time.perf_counter()
    run(0)
    _sync(device)
    first = time.perf_counter() - start
    for step in range(1, warmup):
        run(step)
    _sync(device)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        run(step)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    stepper.check()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    flops = count_flops(stepper, ids, pixels, mask)
    return StepTiming(
        label=label, settings=stepper.settings.to_json(), batch=batch,
        frames=model_config.num_frames, warmup=warmup, step_seconds=seconds,
        first_step_seconds=first, flop_per_step=flops,
        losses=[float(x) for x in losses], compile_error=stepper.compile_error,
        peak_memory_gib=None if peak is None else round(peak, 2), device=str(device),
    )  # fmt: skip


def default_variants(device: torch.device) -> dict[str, tuple[StepSettings, bool]]:
    """``plain`` (the loop's settings before this module: autocast only, reading the loss back
    every step), ``optimised`` (everything but compilation) and, where it can run, ``compiled``."""
    variants = {"plain": (PLAIN_SETTINGS, True), "optimised": (StepSettings(), False)}
    if compile_supported(device):
        variants["compiled"] = (StepSettings(compile=True), False)
    return variants


def compare_train_step(
    model_config: ModelConfig,
    *,
    batch: int,
    device: str | torch.device = "cuda",
    steps: int = 10,
    warmup: int = 3,
    seed: int = 0,
    lr: float = 1e-4,
    variants: dict[str, tuple[StepSettings, bool]] | None = None,
) -> dict:
    """Each variant (``name -> (settings, sync_each_step)``) timed from the same start; the
    first is the baseline of ``speedup`` and of the loss curves' largest differences."""
    device = torch.device(device)
    variants = variants or default_variants(device)
    runs: dict[str, StepTiming] = {}
    for name, (settings, sync) in variants.items():
        runs[name] = time_train_step(
            model_config, batch=batch, device=device, steps=steps, warmup=warmup, seed=seed,
            settings=settings, sync_each_step=sync, lr=lr, label=name,
        )  # fmt: skip
    base = next(iter(runs.values()))
    return {
        "runs": {name: r.to_json() for name, r in runs.items()},
        "baseline": base.label,
        "speedup": {name: round(base.step_seconds / r.step_seconds, 3) for name, r in runs.items()},
        "loss_max_abs_diff": {
            name: max(abs(a - b) for a, b in zip(r.losses, base.losses, strict=True))
            for name, r in runs.items()
        },
    }


__all__ = [
    "BENCH_MODELS",
    "VIT_B_32",
    "StepTiming",
    "compare_train_step",
    "count_flops",
    "default_variants",
    "fixed_batch",
    "time_train_step",
]
