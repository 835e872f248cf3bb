"""The training loss: symmetric InfoNCE over a text x video logit matrix (docs/method.md §2.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(logits: Tensor, scale: Tensor) -> Tensor:
    """Symmetric InfoNCE on ``scale * logits`` ``[B, B]`` with the diagonal as positives: the
    mean of the text-to-video (rows) and video-to-text (columns) cross-entropies."""
    scaled = scale * logits.float()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(scaled, target) + F.cross_entropy(scaled.T, target)) / 2


__all__ = ["contrastive_loss"]
