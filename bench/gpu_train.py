"""GPU suite, section ``train``: the training steps at the chip's pace (issue 18, point 4).

- ViT-B/32 EMCL-Net (random weights: the time does not depend on their values) at batch
  128 × 12 frames, the optimised settings against the plain ones (emcl/training/step.py):
  step time, achieved TFLOP/s and both loss curves on one fixed seed and the same batches, with
  their largest difference (the curves must agree to bf16 noise). The step took 0.219 s on an
  H200 with the plain settings when issue 18 was filed.
- The EMCL-Net logits alone with the EM on the global-batch matrix (128² + 128 rows × 512),
  in fp32 as in the step.
- The demo model at batch 256 × 12 frames, plain and optimised: clips per second.
- Last, the compiled ViT step (``torch.compile``) in what is left of the section's cap:
  compiling can take longer than the rest, and a cap reached there is recorded, not fatal.

The timing, FLOP counting and curves are :mod:`emcl.training.step_bench`'s.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from bench.gpu_common import SectionTimeout, SuiteRun, percentiles_ms, time_calls, time_cap
from emcl.core.em import EMCLLayer
from emcl.core.logits import emclnet_logits
from emcl.training.step import PLAIN_SETTINGS, StepSettings
from emcl.training.step_bench import BENCH_MODELS, compare_train_step, time_train_step

VIT_PREVIOUS_STEP_S = 0.219  # issue 18: one H200, bf16 autocast, AdamW, before this change
COMPILE_MARGIN_S = 5.0  # of the section's cap kept for writing its results
# Eager variants side by side (``name -> (settings, read the loss back every step)``): plain is
# the loop's settings before issue 18; the compiled step runs apart, under its own cap.
EAGER = {"plain": (PLAIN_SETTINGS, True), "optimised": (StepSettings(), False)}


def _model(run: SuiteRun, name: str):
    """``(config, batch)`` of a bench model; at toy sizes two frames and batch 4."""
    config, batch = BENCH_MODELS[name]
    if run.smoke:
        config = dataclasses.replace(BENCH_MODELS["demo"][0], num_frames=2)
        return config, 4
    return config, batch


def logits_with_em(device: torch.device, batch: int, frames: int, dim: int) -> dict:
    """EMCL-Net logits of one global batch, EM included, in training mode (prior updated)."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(batch, dim, generator=g).to(device)
    video = torch.randn(batch, frames, dim, generator=g).to(device)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    layer = EMCLLayer().to(device).train()
    with torch.no_grad():
        times = time_calls(lambda: emclnet_logits(text, video, mask, layer), device, repeat=5)
    return {"em_rows": batch * batch + batch, "dim": dim, **percentiles_ms(times)}


def _compiled(run: SuiteRun, name: str, plain: list[float], cap_s: float) -> dict:
    """The compiled step under its own cap, its loss curve against ``plain``'s; a cap reached
    or a compiler error is recorded, not raised."""
    config, batch = _model(run, name)
    start = time.perf_counter()
    try:
        with time_cap(cap_s):
            timing = time_train_step(
                config,
                batch=batch,
                device=run.device,
                **_steps(run),
                settings=StepSettings(compile=True),
                label="compiled",
            )
    except SectionTimeout:
        seconds = round(time.perf_counter() - start, 1)
        return {"status": "timeout", "cap_s": round(cap_s, 1), "seconds": seconds}
    except Exception as exc:  # a compiler failing here must not lose the eager figures
        return {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    diff = max(abs(a - b) for a, b in zip(timing.losses, plain, strict=True))
    return {"status": "ok", **timing.to_json(), "loss_max_abs_diff_vs_plain": diff}


def _steps(run: SuiteRun) -> dict[str, int]:
    return {"steps": run.pick(8, 1), "warmup": run.pick(3, 1), "seed": 0}


def _compare(run: SuiteRun, name: str) -> dict:
    config, batch = _model(run, name)
    out = {"backbone": config.backbone, "batch": batch, "frames": config.num_frames}
    return out | compare_train_step(
        config, batch=batch, device=run.device, **_steps(run), variants=EAGER
    )


def train_section(run: SuiteRun) -> dict:
    """Section (d): the ViT-B/32 and demo training steps (module doc)."""
    started = time.perf_counter()
    out = run.output
    out["vit"] = _compare(run, "vit-b-32")
    if not run.smoke:
        out["vit"]["previous_step_s"] = VIT_PREVIOUS_STEP_S
    config, batch = _model(run, "vit-b-32")
    out["logits_with_em"] = logits_with_em(run.device, batch, config.num_frames, run.pick(512, 32))
    out["demo"] = _compare(run, "demo")
    if run.smoke:  # compiling takes minutes on a CPU: the device run measures it
        out["vit_compiled"] = {"status": "skipped", "reason": "toy sizes"}
    else:  # what is left of the section's cap, less a margin for writing the results
        left = max(5.0, run.cap_s - (time.perf_counter() - started) - COMPILE_MARGIN_S)
        plain = out["vit"]["runs"]["plain"]["losses"]
        out["vit_compiled"] = _compiled(run, "vit-b-32", plain, left)
    if run.device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**30, 2)
    return out


__all__ = ["train_section"]
