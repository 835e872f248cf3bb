"""A whole captions × videos table in EMCL-Net's block protocol, built for many EM runs.

The reference evaluates EMCL-Net with one EM run per block of 32 captions × 32 videos
(docs/method.md §2.1). :class:`EmclNetTable` computes each block's knob-free geometry once
(emcl.core.gram), then serves any knob setting: an EM run costs ``D^2 K`` per block and
iteration, and the beta-free :class:`emcl.core.gram.Terms` of a run give the scores for every
beta by element-wise arithmetic. Evaluation (``python -m emcl evaluate``) and the app's live
metrics both score through this class, so they cannot disagree.

Blocks run in chunks of one video block against a run of consecutive text blocks: the chunk's
texts are a view of the caption rows, its frames one ``[Bv, T, D]`` tensor that every block
shares (nothing is gathered or copied per block), and its scores one slice of the table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from emcl.core.em import EMParams
from emcl.core.gram import Geometry, Terms, em_terms, geometry
from emcl.core.protocols import BLOCK, TRAINED

BLOCKS_PER_CALL = 32  # text blocks per batched call: a few MB of working set


@dataclass(frozen=True)
class _Chunk:
    rows: tuple[int, int]  # caption rows [start, stop): whole text blocks of one size
    columns: tuple[int, int]  # video columns [start, stop): one video block
    n_blocks: int
    geometry: Geometry | None  # kept without text and frames (views, taken again per run)


@dataclass(frozen=True)
class TableTerms:
    """One EM run over the whole table: the beta-free terms of every chunk."""

    table: EmclNetTable
    parts: list[Terms]  # one per chunk, in table.chunks order

    def scores(self, beta: float) -> Tensor:
        """``[Nt, Nv]`` scores at ``beta``."""
        out = self.table.text.new_empty(self.table.shape)
        for chunk, terms in zip(self.table.chunks, self.parts, strict=True):
            geo = self.table.geometry_of(chunk)
            _put(out, chunk, terms.cosines(geo.pairs, beta))
        return out

    def rec_ratio(self, beta: float) -> float:
        """Median over the EM's rows (pooled videos and texts) of ``|beta mu z^T| / |x|``."""
        ratios = [
            terms.rec_ratios(self.table.geometry_of(chunk).pairs, beta)
            for chunk, terms in zip(self.table.chunks, self.parts, strict=True)
        ]
        both = torch.cat(ratios) if ratios else torch.zeros(1)
        return float(both.median())

    @property
    def effective_k(self) -> int:
        """Median effective K over the blocks of the first chunk (one video block against
        up to 32 text blocks): representative, and 30× cheaper than every block."""
        if not self.parts:
            return 0
        return int(self.parts[0].effective_k.float().median().round())


def _put(out: Tensor, chunk: _Chunk, blocks: Tensor) -> None:  # blocks [B, Bt, Bv]
    (r0, r1), (c0, c1) = chunk.rows, chunk.columns
    out[r0:r1, c0:c1] = blocks.reshape(r1 - r0, c1 - c0)


class EmclNetTable:
    """Scores of ``text`` ``[Nt, D]`` against ``frames`` ``[Nv, T, D]`` in EMCL-Net blocks.

    ``text`` are the sentence features as the model was trained with them (not normalised:
    the pooling softmax sees their norm). The geometry takes about ``Nt * Nv * (T + 2)``
    floats plus one ``D × D`` matrix per block; build one table per model and gallery and
    keep it. With ``keep_geometry=False`` each EM run recomputes it instead (one-off tables,
    or a large ``D``).
    """

    def __init__(
        self,
        text: Tensor,
        frames: Tensor,
        frame_mask: Tensor | None = None,
        temperature: float = 3.0,
        block: tuple[int, int] = BLOCK[TRAINED],
        blocks_per_call: int = BLOCKS_PER_CALL,
        keep_geometry: bool = True,
    ) -> None:
        self.text = text.float().contiguous()
        self.frames = frames.float().contiguous()
        self.frame_mask = frame_mask
        self.temperature = temperature
        n_texts, n_videos = self.text.shape[0], self.frames.shape[0]
        self.shape = (n_texts, n_videos)
        bt, bv = block
        full_rows = n_texts - n_texts % bt
        row_runs = [
            (s, min(s + bt * blocks_per_call, full_rows))
            for s in range(0, full_rows, bt * blocks_per_call)
        ]
        if full_rows < n_texts:
            row_runs.append((full_rows, n_texts))  # the short last text block, on its own
        self.chunks: list[_Chunk] = []
        with torch.inference_mode():
            for c0 in range(0, n_videos, bv):
                columns = (c0, min(c0 + bv, n_videos))
                for rows in row_runs:
                    size = bt if rows[1] - rows[0] >= bt else rows[1] - rows[0]
                    chunk = _Chunk(rows, columns, (rows[1] - rows[0]) // size, None)
                    if keep_geometry:
                        geo = self._geometry(chunk)
                        empty = geo.text.new_empty(0)
                        chunk = replace(chunk, geometry=replace(geo, text=empty, frames=empty))
                    self.chunks.append(chunk)

    def _inputs(self, chunk: _Chunk) -> tuple[Tensor, Tensor, Tensor | None]:
        (r0, r1), (c0, c1) = chunk.rows, chunk.columns
        text = self.text[r0:r1].reshape(chunk.n_blocks, -1, self.text.shape[-1])  # a view
        mask = self.frame_mask[c0:c1] if self.frame_mask is not None else None
        return text, self.frames[c0:c1], mask

    def _geometry(self, chunk: _Chunk) -> Geometry:
        return geometry(*self._inputs(chunk), self.temperature)

    def geometry_of(self, chunk: _Chunk) -> Geometry:
        """The chunk's geometry: kept, or recomputed (``keep_geometry=False``)."""
        if chunk.geometry is None:
            return self._geometry(chunk)
        text, frames, _ = self._inputs(chunk)
        return replace(chunk.geometry, text=text, frames=frames)

    def base_scores(self) -> Tensor:
        """``[Nt, Nv]`` cosines of the text-conditioned pooled videos and the texts, no EMCL."""
        out = self.text.new_empty(self.shape)
        with torch.inference_mode():
            for chunk in self.chunks:
                _put(out, chunk, self.geometry_of(chunk).pairs.base_scores())
        return out

    def terms(self, params: EMParams, prior: Tensor | None = None) -> TableTerms:
        """One EM run per block with ``params`` (beta ignored: it does not enter the EM)."""
        with torch.inference_mode():
            parts = [em_terms(self.geometry_of(c), params, prior) for c in self.chunks]
        return TableTerms(self, parts)

    def scores(self, params: EMParams | None, prior: Tensor | None = None) -> Tensor:
        """``[Nt, Nv]`` scores with EMCL at ``params`` (``None``: without EMCL)."""
        if params is None or params.iters == 0 or params.beta == 0.0:
            return self.base_scores()
        if not self.chunks or self.chunks[0].geometry is not None:
            with torch.inference_mode():
                return self.terms(params, prior).scores(params.beta)
        out = self.text.new_empty(self.shape)  # one-off: geometry per chunk, then dropped
        with torch.inference_mode():
            for chunk in self.chunks:
                geo = self._geometry(chunk)
                _put(out, chunk, em_terms(geo, params, prior).cosines(geo.pairs, params.beta))
        return out


__all__ = ["EmclNetTable", "TableTerms"]
