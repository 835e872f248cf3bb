"""A whole captions × videos table in EMCL-Net's block protocol, built for many EM runs.

The reference evaluates EMCL-Net with one EM run per block of 32 captions × 32 videos
(docs/method.md §2.1). :class:`EmclNetTable` computes each block's knob-free geometry once
(emcl.core.gram), then serves any knob setting: an EM run costs ``D^2 K`` per block and
iteration, and the beta-free :class:`emcl.core.gram.Terms` of a run give the scores for every
beta by element-wise arithmetic. Evaluation (``python -m emcl evaluate``) and the app's live
metrics both score through this class, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from emcl.core.em import EMParams
from emcl.core.gram import Geometry, Pairs, Terms, em_terms, geometry

EMCLNET_BLOCK = (32, 32)  # (texts, videos) per EM run, as the reference evaluates
ROWS_PER_CALL = 1 << 14  # pooled rows per batched call: a few MB of working set per call

Span = tuple[int, int]


def _split(n: int, size: int) -> list[Span]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


@dataclass(frozen=True)
class _Chunk:
    """Blocks of one shape that run in one batched call."""

    text_spans: list[Span]
    video_spans: list[Span]
    text_idx: Tensor  # [B, Bt]
    video_idx: Tensor  # [B, Bv]
    geometry: Geometry | None  # kept without text and frames (gathered again per EM run)


@dataclass(frozen=True)
class TableTerms:
    """One EM run over the whole table: beta-free terms as ``[Nt, Nv]`` and the effective K of
    every block."""

    terms: Terms
    text_rows: Tensor  # [Nt, Nv] bool: one column per video block marks its text rows

    def scores(self, pairs: Pairs, beta: float) -> Tensor:  # [Nt, Nv]
        return self.terms.cosines(pairs, beta)

    def rec_ratio(self, pairs: Pairs, beta: float) -> float:
        """Median over the EM's rows (pooled videos and texts) of ``|beta mu z^T| / |x|``."""
        t = self.terms
        pooled = (t.pooled_rec_sq / pairs.pooled_sq.clamp(min=1e-12)).flatten()
        text_sq = pairs.text_sq.expand_as(t.text_rec_sq)[self.text_rows]
        text = t.text_rec_sq[self.text_rows] / text_sq.clamp(min=1e-12)
        ratios = beta * torch.cat([pooled, text]).clamp(min=0).sqrt()
        return float(ratios.median()) if ratios.numel() else 0.0

    @property
    def effective_k(self) -> int:
        """The median effective K over the blocks."""
        return int(self.terms.effective_k.float().median().round())


class EmclNetTable:
    """Scores of ``text`` ``[Nt, D]`` against ``frames`` ``[Nv, T, D]`` in EMCL-Net blocks.

    ``text`` are the sentence features as the model was trained with them (not normalised:
    the pooling softmax sees their norm). The geometry takes about ``Nt * Nv * T`` floats plus
    one ``D × D`` matrix per block; build one table per model and gallery and keep it. With
    ``keep_geometry=False`` each EM run recomputes the geometry instead (one-off tables, or
    a large ``D`` where the Gram matrices would not fit the memory budget).
    """

    def __init__(
        self,
        text: Tensor,
        frames: Tensor,
        frame_mask: Tensor | None = None,
        temperature: float = 3.0,
        block: tuple[int, int] = EMCLNET_BLOCK,
        rows_per_call: int = ROWS_PER_CALL,
        keep_geometry: bool = True,
    ) -> None:
        self.text = text.float()
        self.frames = frames.float()
        self.frame_mask = frame_mask
        self.temperature = temperature
        n_texts, n_videos = self.text.shape[0], self.frames.shape[0]
        self.shape = (n_texts, n_videos)
        device = self.text.device
        groups: dict[tuple[int, int], list[tuple[Span, Span]]] = {}
        for ts in _split(n_texts, block[0]):
            for vs in _split(n_videos, block[1]):
                groups.setdefault((ts[1] - ts[0], vs[1] - vs[0]), []).append((ts, vs))
        self.chunks: list[_Chunk] = []
        text_dot = torch.empty(n_texts, n_videos, device=device)
        pooled_sq = torch.empty(n_texts, n_videos, device=device)
        with torch.inference_mode():
            for (bt, bv), pairs in groups.items():
                per_call = max(1, rows_per_call // (bt * bv))
                for start in range(0, len(pairs), per_call):
                    part = pairs[start : start + per_call]
                    chunk, geo = self._chunk(part, device, keep_geometry)
                    self.chunks.append(chunk)
                    self._scatter(text_dot, chunk, geo.pairs.text_dot_pooled)
                    self._scatter(pooled_sq, chunk, geo.pairs.pooled_sq)
        self.pairs = Pairs(text_dot, pooled_sq, (self.text * self.text).sum(-1, keepdim=True))

    def _chunk(
        self, part: list[tuple[Span, Span]], device: torch.device, keep: bool
    ) -> tuple[_Chunk, Geometry]:
        text_idx = torch.stack([torch.arange(*ts, device=device) for ts, _ in part])
        video_idx = torch.stack([torch.arange(*vs, device=device) for _, vs in part])
        geo = geometry(*self._inputs(text_idx, video_idx), self.temperature)
        empty = geo.text.new_empty(0)
        kept = replace(geo, text=empty, frames=empty) if keep else None
        spans = ([ts for ts, _ in part], [vs for _, vs in part])
        return _Chunk(*spans, text_idx, video_idx, kept), geo

    def _geometry(self, chunk: _Chunk) -> Geometry:
        text, frames, mask = self._inputs(chunk.text_idx, chunk.video_idx)
        if chunk.geometry is None:
            return geometry(text, frames, mask, self.temperature)
        return replace(chunk.geometry, text=text, frames=frames)

    def _inputs(self, text_idx: Tensor, video_idx: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        mask = self.frame_mask[video_idx] if self.frame_mask is not None else None
        return self.text[text_idx], self.frames[video_idx], mask

    @staticmethod
    def _scatter(out: Tensor, chunk: _Chunk, blocks: Tensor) -> None:
        for ts, vs, block in zip(chunk.text_spans, chunk.video_spans, blocks, strict=True):
            out[ts[0] : ts[1], vs[0] : vs[1]] = block

    def base_scores(self) -> Tensor:
        """``[Nt, Nv]`` cosines of the text-conditioned pooled videos and the texts, no EMCL."""
        return self.pairs.base_scores()

    def terms(self, params: EMParams, prior: Tensor | None = None) -> TableTerms:
        """One EM run per block with ``params`` (beta ignored: it does not enter the EM)."""
        n_texts, n_videos = self.shape
        fields = ("cross", "rec_dot", "pooled_cross", "pooled_rec_sq", "text_cross", "text_rec_sq")
        out = {name: self.text.new_empty(n_texts, n_videos) for name in fields}
        text_rows = torch.zeros(n_texts, n_videos, dtype=torch.bool, device=self.text.device)
        ks = []
        with torch.inference_mode():
            for chunk in self.chunks:
                terms = em_terms(self._geometry(chunk), params, prior)
                for name in fields:
                    value = getattr(terms, name)
                    self._scatter(out[name], chunk, value.expand_as(terms.cross))
                for ts, vs in zip(chunk.text_spans, chunk.video_spans, strict=True):
                    text_rows[ts[0] : ts[1], vs[0]] = True
                ks.append(terms.effective_k.flatten())
        k = torch.cat(ks) if ks else torch.zeros(0, dtype=torch.long)
        return TableTerms(Terms(**out, effective_k=k), text_rows)

    def scores(self, params: EMParams | None, prior: Tensor | None = None) -> Tensor:
        """``[Nt, Nv]`` scores with EMCL at ``params`` (``None``: without EMCL)."""
        if params is None or params.iters == 0 or params.beta == 0.0:
            return self.base_scores()
        return self.terms(params, prior).scores(self.pairs, params.beta)


__all__ = ["EMCLNET_BLOCK", "EmclNetTable", "TableTerms"]
