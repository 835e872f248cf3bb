"""The gallery index: unit-norm video embeddings ready to rank, bad rows left out."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

FP32_GALLERY_LIMIT = 50_000  # above this the index keeps only fp16 (2 bytes × D per video)


def valid_rows(embeddings: Tensor) -> Tensor:
    """``[N]`` bool: rows that are finite and have a non-zero norm."""
    finite = torch.isfinite(embeddings).all(dim=-1)
    norms = torch.nan_to_num(embeddings.float(), nan=0.0, posinf=0.0, neginf=0.0).norm(dim=-1)
    return finite & (norms > 0)


@dataclass(frozen=True)
class GalleryIndex:
    """Unit-norm video embeddings for ranking; invalid rows (NaN, inf, zero) are left out.

    ``rows`` maps each kept row back to its position in the original gallery.
    """

    video_ids: tuple[str, ...]  # all ids, in the original order
    embeddings: Tensor  # [M, D] unit-norm, fp32 (fp16 above FP32_GALLERY_LIMIT)
    rows: Tensor  # [M] original positions of the kept rows
    frames: Tensor | None = None  # [M, T, D] per-frame features (EMCL-Net protocol), or None
    frame_mask: Tensor | None = None  # [M, T]
    excluded: tuple[str, ...] = field(default=())

    @classmethod
    def build(
        cls,
        video_ids: Sequence[str],
        video_embeddings: Tensor,
        frames: Tensor | None = None,
        frame_mask: Tensor | None = None,
    ) -> GalleryIndex:
        """Validate and normalise ``video_embeddings`` ``[Nv, D]`` and ``frames`` ``[Nv, T, D]``."""
        if video_embeddings.dim() != 2 or len(video_ids) != video_embeddings.shape[0]:
            raise ValueError(
                f"need [Nv, D] embeddings for {len(video_ids)} ids, got "
                f"{tuple(video_embeddings.shape)}"
            )
        keep = valid_rows(video_embeddings)
        if frames is not None:
            keep &= torch.isfinite(frames.float()).flatten(1).all(dim=1)
        excluded = tuple(v for v, ok in zip(video_ids, keep.tolist(), strict=True) if not ok)
        if excluded:
            warnings.warn(
                f"{len(excluded)} gallery video(s) have NaN, inf or zero-norm embeddings and are "
                f"never ranked: {', '.join(excluded[:5])}{' …' if len(excluded) > 5 else ''}",
                stacklevel=2,
            )
        rows = keep.nonzero().flatten()
        dtype = torch.float32 if len(rows) <= FP32_GALLERY_LIMIT else torch.float16
        embeddings = F.normalize(video_embeddings[rows].float(), dim=-1).to(dtype)
        kept_frames = frames[rows].float() if frames is not None else None
        kept_mask = frame_mask[rows] if frame_mask is not None else None
        return cls(tuple(video_ids), embeddings, rows, kept_frames, kept_mask, excluded)

    def __len__(self) -> int:
        return len(self.rows)


__all__ = ["FP32_GALLERY_LIMIT", "GalleryIndex", "valid_rows"]
