"""Text-video logits with EMCL in the loop, shared by training, evaluation and search.

Two ways the reference applies EMCL (docs/method.md §2):
- EMCL-Net (§2.1): text-conditioned frame pooling gives one pooled video per (text, video) pair;
  the EM runs on ``[pooled videos (text-major); texts]`` and the scores are cosines.
- The inference module (§2.2): the EM runs on ``[videos; texts]`` of L2-normalised features and
  the scores are plain dot products of the outputs (not re-normalised).

All functions take any number of leading batch dimensions (one per evaluation block).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

EmclFn = Callable[[Tensor], Tensor]  # [..., N, D] -> [..., N, D]


def text_conditioned_pool(
    text: Tensor, frames: Tensor, frame_mask: Tensor | None = None, temperature: float = 3.0
) -> Tensor:
    """EMCL-Net's pooling: ``sum_f softmax_f(<t_a, v_bf> / temperature) * mask_bf * v_bf``.

    ``text`` ``[..., Bt, D]``, ``frames`` ``[..., Bv, T, D]``, ``frame_mask`` ``[..., Bv, T]``
    (True for real frames). As in the reference the softmax runs over all T positions and the mask
    multiplies the weights afterwards, without renormalisation. Returns ``[..., Bt, Bv, D]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    scores = torch.einsum("...ad,...bfd->...abf", text, frames) / temperature  # [..., Bt, Bv, T]
    weights = torch.softmax(scores.float(), dim=-1).to(frames.dtype)
    if frame_mask is not None:
        weights = weights * frame_mask.to(weights.dtype).unsqueeze(-3)
    return torch.einsum("...abf,...bfd->...abd", weights, frames)


def emclnet_logits(
    text: Tensor,
    frames: Tensor,
    frame_mask: Tensor | None = None,
    emcl: EmclFn | None = None,
    temperature: float = 3.0,
) -> Tensor:
    """EMCL-Net scores ``[..., Bt, Bv]``: pool per text, EMCL on the stacked block, cosine.

    ``emcl`` maps ``[..., N, D]`` to ``[..., N, D]`` (an ``EMCLLayer`` updates its prior in
    training mode); ``None`` gives the same pooling and cosine without EMCL. Rows are stacked as the
    reference does: ``Bt * Bv`` pooled videos in text-major order (a * Bv + b), then ``Bt`` texts.
    """
    pooled = text_conditioned_pool(text, frames, frame_mask, temperature)  # [..., Bt, Bv, D]
    bt, bv, d = pooled.shape[-3:]
    if emcl is not None:
        stacked = torch.cat([pooled.reshape(*pooled.shape[:-3], bt * bv, d), text], dim=-2)
        stacked = emcl(stacked)  # [..., Bt*Bv + Bt, D]
        pooled = stacked[..., : bt * bv, :].reshape(pooled.shape)
        text = stacked[..., bt * bv :, :]
    pooled = F.normalize(pooled, dim=-1)
    text = F.normalize(text, dim=-1)
    return torch.einsum("...ad,...abd->...ab", text, pooled)


def inference_module_logits(text: Tensor, video: Tensor, emcl: EmclFn | None = None) -> Tensor:
    """Inference-module scores ``[..., Bt, Bv]`` (texts ``[..., Bt, D]``, videos ``[..., Bv, D]``).

    Both are L2-normalised, stacked as ``[videos; texts]``, passed through ``emcl`` and compared
    by dot product without re-normalising (docs/method.md §2.2). Without EMCL this is the cosine.
    """
    text = F.normalize(text.float(), dim=-1)
    video = F.normalize(video.float(), dim=-1)
    if emcl is not None:
        bv = video.shape[-2]
        stacked = emcl(torch.cat([video, text], dim=-2))  # [..., Bv + Bt, D]
        video, text = stacked[..., :bv, :], stacked[..., bv:, :]
    return text @ video.mT
