"""The gallery index: unit-norm video embeddings ready to rank, bad rows left out.

Ranking a query starts with :meth:`GalleryIndex.for_query`, the shortlist hook: the whole index
for a small gallery (exact search), or, above ``AnnConfig.threshold`` videos, the candidates of
the shortlist :meth:`with_ann` attached, as a smaller index whose ``rows`` still name positions
in the original gallery. One routing rule picks that shortlist: on a CUDA device whose memory
holds the gallery, the exact fp16 top-M of emcl/retrieval/torch_search.py; anywhere else the
FAISS ANN index of emcl/retrieval/ann.py. Everything after it (exact fp32 cosines, the EMCL
re-rank of the top M) is the same for all three.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.retrieval.torch_search import DeviceSearch, fits

if TYPE_CHECKING:
    from emcl.retrieval.ann import AnnConfig, AnnIndex

FP32_GALLERY_LIMIT = 50_000  # above this the index keeps only fp16 (2 bytes × D per video)
_CHUNK = 65_536  # rows converted to fp32 at a time: a 1M gallery never needs a 2 GB fp32 copy


def valid_rows(embeddings: Tensor) -> Tensor:
    """``[N]`` bool: rows that are finite and have a non-zero norm."""
    if len(embeddings) > _CHUNK:
        return torch.cat([valid_rows(part) for part in embeddings.split(_CHUNK)])
    finite = torch.isfinite(embeddings).all(dim=-1)
    norms = torch.nan_to_num(embeddings.float(), nan=0.0, posinf=0.0, neginf=0.0).norm(dim=-1)
    return finite & (norms > 0)


def _normalised(embeddings: Tensor, rows: Tensor, dtype: torch.dtype) -> Tensor:
    """``F.normalize(embeddings[rows])`` in ``dtype`` ``[M, D]``, computed in fp32 by chunks."""
    out = torch.empty(len(rows), embeddings.shape[-1], dtype=dtype)
    for start in range(0, len(rows), _CHUNK):
        part = embeddings[rows[start : start + _CHUNK]].float()
        out[start : start + _CHUNK] = F.normalize(part, dim=-1).to(dtype)
    return out


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
    ann: AnnIndex | None = None  # approximate shortlist over ``embeddings`` rows, or exact
    device_search: DeviceSearch | None = None  # exact top-M on a GPU (instead of ``ann``)

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
        embeddings = _normalised(video_embeddings, rows, dtype)
        kept_frames = frames[rows].float() if frames is not None else None
        kept_mask = frame_mask[rows] if frame_mask is not None else None
        return cls(tuple(video_ids), embeddings, rows, kept_frames, kept_mask, excluded)

    def __len__(self) -> int:
        return len(self.rows)

    def with_ann(
        self,
        folder: str | os.PathLike,
        model_fingerprint: str,
        config: AnnConfig | None = None,
        log: Callable[[str], None] = print,
        device: torch.device | str | None = None,
    ) -> GalleryIndex:
        """This index with a shortlist attached if it has ``config.threshold`` rows or more
        (else unchanged: exact search). On a CUDA ``device`` whose memory holds the gallery in
        fp16 (:func:`emcl.retrieval.torch_search.fits`): the exact top-M there, no ANN index.
        Otherwise the ANN index, loaded from ``folder`` when its checksum and gallery
        fingerprint (``model_fingerprint``, ids, embeddings) match, else built and saved there
        as ``ann-<fingerprint>.faiss``."""
        from emcl.retrieval.ann import AnnConfig, ensure_ann, gallery_fingerprint

        config = config or AnnConfig()
        if len(self) < config.threshold:
            return dataclasses.replace(self, ann=None, device_search=None)
        if device is not None and fits(len(self), self.embeddings.shape[-1], torch.device(device)):
            search = DeviceSearch.place(self.embeddings, device, oversample=config.oversample)
            return dataclasses.replace(self, ann=None, device_search=search)
        kept = [self.video_ids[i] for i in self.rows.tolist()]
        fingerprint = gallery_fingerprint(model_fingerprint, kept, self.embeddings)
        path = Path(folder) / f"ann-{fingerprint[:16]}.faiss"
        ann = ensure_ann(path, self.embeddings, fingerprint, config, log)
        return dataclasses.replace(self, ann=ann, device_search=None)

    def for_query(self, query: Tensor, size: int) -> GalleryIndex:
        """The part of this index to rank for ``query`` ``[D]`` when ``size`` rows are needed.

        Without a shortlist attached (or when ``size`` covers most of the gallery): ``self``.
        With one (the device's exact top-M, or the ANN index): its best ``size × oversample``
        rows as an index of their own, with ``rows``, ``video_ids`` and ``excluded`` still
        naming the original gallery, fp32 embeddings and no shortlist (so a second call returns
        it unchanged). Its exact cosines decide the order.
        """
        shortlist = self.device_search if self.device_search is not None else self.ann
        if shortlist is None:
            return self
        oversample = shortlist.oversample
        if size * oversample >= len(self):
            return self
        found = shortlist.search(query[None], size * oversample)[0]
        keep = found[found >= 0].sort().values  # gallery order: ties break as in exact search
        return GalleryIndex(
            video_ids=self.video_ids,
            embeddings=self.embeddings[keep].float(),  # fp32 cosines: fp16 ones tie at 1e-4
            rows=self.rows[keep],
            frames=self.frames[keep] if self.frames is not None else None,
            frame_mask=self.frame_mask[keep] if self.frame_mask is not None else None,
            excluded=self.excluded,
        )


__all__ = ["FP32_GALLERY_LIMIT", "GalleryIndex", "valid_rows"]
