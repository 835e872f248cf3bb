"""The optimiser (AdamW, separate learning rates for CLIP and the new modules) and its schedule."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from emcl.model.model import EMCLRetrievalModel
from emcl.training.presets import TrainConfig


def build_optimizer(
    model: EMCLRetrievalModel, cfg: TrainConfig, *, fused: bool = False
) -> torch.optim.AdamW:
    """Four groups: (CLIP | new) x (decayed matrices | biases, norms, scalars).

    CLIP parameters (the logit scale included) get ``cfg.lr_backbone``, the rest (the temporal
    transformer) ``cfg.lr_new``. Each group keeps its ``base_lr`` for the schedule. ``fused``:
    one CUDA kernel for the whole update (emcl/training/step.py turns it on for GPUs only).
    """
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
    if fused:
        return torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps, fused=True)
    return torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps)


def lr_multiplier(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0."""
    warm = max(1, round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


__all__ = ["build_optimizer", "lr_multiplier"]
