"""A whole captions × videos table in EMCL-Net's block protocol, built for many EM runs.

The reference evaluates EMCL-Net with one EM run per block of 32 captions × 32 videos
(docs/method.md §2.1). :class:`EmclNetTable` computes each block's knob-free geometry once
(emcl.core.gram), then serves any knob setting: an EM run costs ``D^2 K`` per block and
iteration, and the beta-free terms of a run give the scores for every beta by element-wise
arithmetic on whole ``[Nt, Nv]`` tables. Evaluation (``python -m emcl evaluate``) and the app's
live metrics both score through this class, so they cannot disagree.

The blocks of one shape form a *grid* (full text blocks × full video blocks, and the short
last text or video block, which runs alone: padding would change its EM). Every block's Gram
matrix sits in one ``[n_blocks, D, D]`` tensor, so the EM iterations of the whole table are one
batched program per iteration (emcl.core.gram.em_responsibilities); the final products run per
grid slice, a slice being as many blocks as fit in :func:`slice_bytes` (cache-sized on a CPU,
large on a GPU where launches dominate small calls). Nothing in an EM run waits on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from emcl.core.em import NORM_EPS, EMParams, effective_k
from emcl.core.gram import (
    Geometry,
    Terms,
    cosine_from_squares,
    em_responsibilities,
    geometry,
    terms_from_projections,
)
from emcl.core.protocols import BLOCK, TRAINED

TABLE_DTYPES = (torch.float32, torch.float64)  # fp64: a reference for parity runs
# One batched call's working set on a CPU: a share of the L3 cache, which the cores (and other
# processes) share. On the 2-core machine 8 MB slices beat 32 MB by 15 % and the EM's chunks
# (4 MB: each block's G, p and logits stay cached across the iterations) beat 32 MB by 25 %.
CPU_SLICE_BYTES = 8 << 20
CPU_EM_BYTES = 4 << 20
GPU_SLICE_BYTES = 1 << 30  # ... on a GPU: large, so the whole demo table is a few calls
EFFECTIVE_K_BLOCKS = 32  # text blocks (against the first video block) the effective K reads


def slice_bytes(device: torch.device) -> int:
    """Working-set bytes of one batched call on ``device`` (a quarter of a GPU's free memory
    at most)."""
    if device.type != "cuda":
        return CPU_SLICE_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return max(CPU_SLICE_BYTES, min(GPU_SLICE_BYTES, free // 4))


@dataclass(frozen=True)
class _Grid:
    """Blocks of one shape: text blocks of ``bt`` rows × video blocks of ``bv`` columns,
    numbered video-major from ``offset`` in the table's block order."""

    rows: tuple[int, int]  # caption rows [start, stop)
    columns: tuple[int, int]  # video columns [start, stop)
    bt: int
    bv: int
    offset: int  # index of the grid's first block among all blocks
    video_block: int  # index of the grid's first video block among all video blocks

    @property
    def n_text(self) -> int:
        return (self.rows[1] - self.rows[0]) // self.bt

    @property
    def n_video(self) -> int:
        return (self.columns[1] - self.columns[0]) // self.bv

    @property
    def n_blocks(self) -> int:
        return self.n_text * self.n_video


@dataclass(frozen=True)
class _Slice:
    """Video blocks ``videos`` × text blocks ``texts`` of one grid (ranges of block indices)."""

    grid: _Grid
    videos: tuple[int, int]
    texts: tuple[int, int]

    @property
    def rows(self) -> tuple[int, int]:
        r0, bt = self.grid.rows[0], self.grid.bt
        return r0 + self.texts[0] * bt, r0 + self.texts[1] * bt

    @property
    def columns(self) -> tuple[int, int]:
        c0, bv = self.grid.columns[0], self.grid.bv
        return c0 + self.videos[0] * bv, c0 + self.videos[1] * bv


def _blocks_of(full: Tensor, part: _Slice) -> Tensor:
    """The ``[Nt, Nv]`` table's entries of a slice as ``[nt, Bt, nv, Bv]`` (a view)."""
    (r0, r1), (c0, c1) = part.rows, part.columns
    return full[r0:r1, c0:c1].unflatten(0, (-1, part.grid.bt)).unflatten(2, (-1, part.grid.bv))


def _put_pairs(full: Tensor, part: _Slice, values: Tensor) -> None:  # values [nv, nt, Bt, Bv]
    _blocks_of(full, part).copy_(values.permute(1, 2, 0, 3))


@dataclass(frozen=True)
class TableTerms:
    """One EM run over the whole table: its beta-free terms (emcl.core.gram.Terms) as whole
    tables. Pair terms ``[Nt, Nv]``; text terms ``[Nt, n_video_blocks]`` (one per EM run a
    caption is in)."""

    table: EmclNetTable
    cross: Tensor
    rec_dot: Tensor
    pooled_cross: Tensor
    pooled_rec_sq: Tensor
    text_cross: Tensor
    text_rec_sq: Tensor
    first_z: Tensor  # [n, D, K] responsibilities of the blocks the effective K reads

    @cached_property
    def _text_by_column(self) -> tuple[Tensor, Tensor]:  # [Nt, Nv] each
        # Column c reads its video block c // Bv: a repeat, 20× cheaper than a gather
        # through ``table.column_block`` (the same values).
        n_videos, width = self.table.shape[1], self.table.block[1]
        return tuple(  # type: ignore[return-value]
            values.repeat_interleave(width, dim=1)[:, :n_videos]
            for values in (self.text_cross, self.text_rec_sq)
        )

    def scores(self, beta: float) -> Tensor:
        """``[Nt, Nv]`` scores at ``beta``: the cosines of ``t + beta r`` and ``x + beta r``."""
        pairs = self.table.pairs
        text_cross, text_rec_sq = self._text_by_column
        dot = torch.add(pairs[0], self.cross, alpha=beta).add_(self.rec_dot, alpha=beta**2)
        pooled = torch.add(pairs[1], self.pooled_cross, alpha=2 * beta)
        pooled.add_(self.pooled_rec_sq, alpha=beta**2)
        text = torch.add(pairs[2], text_cross, alpha=2 * beta).add_(text_rec_sq, alpha=beta**2)
        return cosine_from_squares(dot, text, pooled)

    def rec_ratio(self, beta: float) -> float:
        """Median over the EM's rows (pooled videos and texts) of ``|beta mu z^T| / |x|``."""
        return beta * self._median_rec_ratio

    @cached_property
    def _median_rec_ratio(self) -> float:
        # beta-free (it scales every ratio alike), so a beta change skips the median of ~1M
        _, pooled_sq, text_sq = self.table.pairs
        pooled = self.pooled_rec_sq / pooled_sq.clamp(min=NORM_EPS)
        text = self.text_rec_sq / text_sq.clamp(min=NORM_EPS)
        both = torch.cat([pooled.flatten(), text.flatten()])
        if both.numel() == 0:
            return 0.0
        return float(both.median().clamp(min=0).sqrt())  # sqrt is monotone

    @property
    def effective_k(self) -> int:
        """Median effective K over the first video block's EM runs against up to 32 text
        blocks: representative, and 30× cheaper than every block."""
        if self.first_z.shape[0] == 0:
            return 0
        return int(effective_k(self.first_z).float().median().round())


class EmclNetTable:
    """Scores of ``text`` ``[Nt, D]`` against ``frames`` ``[Nv, T, D]`` in EMCL-Net blocks.

    ``text`` are the sentence features as the model was trained with them (not normalised:
    the pooling softmax sees their norm). Everything runs on the inputs' device in ``dtype``
    (fp32; fp64 as a reference for parity runs). The geometry takes about
    ``Nt * Nv * (T + 2)`` floats plus one ``D × D`` matrix per block; build one table per model
    and gallery and keep it. With ``keep_geometry=False`` each EM run recomputes it slice by
    slice instead (one-off tables, or a large ``D``).
    """

    def __init__(
        self,
        text: Tensor,
        frames: Tensor,
        frame_mask: Tensor | None = None,
        temperature: float = 3.0,
        block: tuple[int, int] = BLOCK[TRAINED],
        *,
        dtype: torch.dtype = torch.float32,
        keep_geometry: bool = True,
        max_slice_bytes: int | None = None,
    ) -> None:
        if dtype not in TABLE_DTYPES:
            raise ValueError(f"dtype must be one of {TABLE_DTYPES}, got {dtype}")
        self.text = text.to(dtype).contiguous()  # [Nt, D]
        self.frames = frames.to(device=self.text.device, dtype=dtype).contiguous()  # [Nv, T, D]
        self.frame_mask = None if frame_mask is None else frame_mask.to(self.text.device)
        self.temperature = temperature
        self.block = block
        self.shape = (self.text.shape[0], self.frames.shape[0])
        self.grids = _grids(*self.shape, *block)
        self.n_blocks = sum(g.n_blocks for g in self.grids)
        self.n_video_blocks = -(-self.shape[1] // block[1])
        columns = torch.arange(self.shape[1], device=self.text.device)
        self.column_block = columns // block[1]  # [Nv] each column's video block
        self.budget = max_slice_bytes or slice_bytes(self.text.device)
        # The EM's chunks: smaller on a CPU (CPU_EM_BYTES), the slice budget on a GPU.
        cpu = self.text.device.type == "cpu"
        self.em_budget = max_slice_bytes or (CPU_EM_BYTES if cpu else self.budget)
        self._kept: _KeptGeometry | None = None
        if keep_geometry:
            with torch.inference_mode():
                self._kept = _KeptGeometry.build(self)

    # ---------------------------------------------------------------------------------------
    def slices(self, k: int) -> list[_Slice]:
        """The grid slices one batched call handles, sized from :attr:`budget` for ``k``."""
        d, t = self.text.shape[-1], self.frames.shape[1]
        size = self.text.element_size()
        out = []
        for grid in self.grids:
            per_block = (grid.bt * grid.bv * (3 * t + 4 * k) + d * d + grid.bv * t * d) * size
            nt = min(grid.n_text, max(1, self.budget // per_block))
            nv = min(grid.n_video, max(1, self.budget // (nt * per_block)))
            for v0 in range(0, grid.n_video, nv):
                for t0 in range(0, grid.n_text, nt):
                    videos, texts = (
                        (v0, min(v0 + nv, grid.n_video)),
                        (t0, min(t0 + nt, grid.n_text)),
                    )
                    out.append(_Slice(grid, videos, texts))
        return out

    def slice_geometry(self, part: _Slice) -> Geometry:
        """The geometry of a slice's blocks, leading dims ``[nv, nt]``."""
        (r0, r1), (c0, c1) = part.rows, part.columns
        text = self.text[r0:r1].unflatten(0, (-1, part.grid.bt))[None]  # [1, nt, Bt, D]
        frames = self.frames[c0:c1].unflatten(0, (-1, part.grid.bv))[:, None]  # [nv, 1, Bv, T, D]
        mask = None
        if self.frame_mask is not None:
            mask = self.frame_mask[c0:c1].unflatten(0, (-1, part.grid.bv))[:, None]
        return geometry(text, frames, mask, self.temperature)

    @property
    def pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        """``<t_a, x_ab>`` and ``|x_ab|^2`` ``[Nt, Nv]``, ``|t_a|^2`` ``[Nt, 1]`` (kept)."""
        if self._kept is None:
            raise RuntimeError("this table keeps no geometry (keep_geometry=False)")
        return self._kept.pairs

    def base_scores(self) -> Tensor:
        """``[Nt, Nv]`` cosines of the text-conditioned pooled videos and the texts, no EMCL."""
        with torch.inference_mode():
            if self._kept is not None:
                dot, pooled_sq, text_sq = self._kept.pairs
                return cosine_from_squares(dot, text_sq, pooled_sq)
            out = self.text.new_empty(self.shape)
            for part in self.slices(1):
                _put_pairs(out, part, self.slice_geometry(part).pairs.base_scores())
            return out

    def terms(self, params: EMParams, prior: Tensor | None = None) -> TableTerms:
        """One EM run per block with ``params`` (beta ignored: it does not enter the EM)."""
        if self._kept is None:
            raise RuntimeError("terms need the kept geometry (keep_geometry=True)")
        with torch.inference_mode():
            return self._kept.terms(self, params, prior)

    def scores(self, params: EMParams | None, prior: Tensor | None = None) -> Tensor:
        """``[Nt, Nv]`` scores with EMCL at ``params`` (``None``: without EMCL)."""
        if params is None or params.iters == 0 or params.beta == 0.0:
            return self.base_scores()
        if self._kept is not None:
            return self.terms(params, prior).scores(params.beta)
        out = self.text.new_empty(self.shape)  # one-off: geometry per slice, then dropped
        with torch.inference_mode():
            for part in self.slices(params.k):
                geo = self.slice_geometry(part)
                z, norms = em_responsibilities(geo.gram, geo.row_sum, params, prior)
                terms = self.projected_terms(part, geo.weights.transpose(-3, -2), z, norms)
                _put_pairs(out, part, terms.cosines(geo.pairs, params.beta))
        return out

    def projected_terms(self, part: _Slice, weights: Tensor, z: Tensor, norms: Tensor) -> Terms:
        """:class:`emcl.core.gram.Terms` of a slice from its EM's ``z`` ``[nv, nt, D, K]`` and
        the pooling weights ``[nv, nt, Bv, Bt, T]``.

        Each video block's frames meet the responsibilities of all its text blocks in one
        matrix product (``[Bv*T, D] @ [D, nt*K]``) rather than one small product per block."""
        (r0, r1), (c0, c1) = part.rows, part.columns
        nv, nt, d, k = z.shape
        bv, t = part.grid.bv, self.frames.shape[1]
        frames = self.frames[c0:c1].reshape(nv, bv * t, d)
        stacked = z.permute(0, 2, 1, 3).reshape(nv, d, nt * k)  # [nv, D, nt*K]
        per_frame = (frames @ stacked).reshape(nv, bv, t, nt, k).permute(0, 3, 1, 2, 4)
        pooled_z = weights @ per_frame  # [nv, nt, Bv, Bt, K] z^T x_ab
        text_z = self.text[r0:r1].unflatten(0, (nt, -1)) @ z  # [nv, nt, Bt, K] z^T t_a
        return terms_from_projections(pooled_z, text_z, z, norms)


def _grids(n_texts: int, n_videos: int, bt: int, bv: int) -> list[_Grid]:
    """The table's blocks by shape: full × full first (video block 0, text block 0 lead)."""
    full_rows, full_columns = n_texts - n_texts % bt, n_videos - n_videos % bv
    row_parts = [((0, full_rows), bt), ((full_rows, n_texts), n_texts - full_rows)]
    column_parts = [((0, full_columns), bv), ((full_columns, n_videos), n_videos - full_columns)]
    grids, offset = [], 0
    for columns, width in column_parts:
        for rows, height in row_parts:
            if rows[1] > rows[0] and columns[1] > columns[0]:
                grid = _Grid(rows, columns, height, width, offset, columns[0] // bv)
                grids.append(grid)
                offset += grid.n_blocks
    return grids


@dataclass(frozen=True)
class _KeptGeometry:
    """Every block's knob-free geometry: Gram matrices and row sums of all blocks (grid
    by grid, video-major), pooling weights per grid, pair products as whole tables."""

    gram: Tensor  # [n_blocks, D, D]
    row_sum: Tensor  # [n_blocks, D]
    weights: list[Tensor]  # per grid [nv, nt, Bv, Bt, T] (video-major: one matmul per video)
    pairs: tuple[Tensor, Tensor, Tensor]  # <t, x> [Nt, Nv], |x|^2 [Nt, Nv], |t|^2 [Nt, 1]

    @classmethod
    def build(cls, table: EmclNetTable) -> _KeptGeometry:
        text, frames = table.text, table.frames
        n, d, t = table.n_blocks, text.shape[-1], frames.shape[1]
        gram, row_sum = text.new_empty(n, d, d), text.new_empty(n, d)
        weights = [text.new_empty(g.n_video, g.n_text, g.bv, g.bt, t) for g in table.grids]
        dot, pooled_sq = text.new_empty(table.shape), text.new_empty(table.shape)
        for part in table.slices(1):
            geo = table.slice_geometry(part)
            grid = part.grid
            (v0, v1), (t0, t1) = part.videos, part.texts
            blocks = gram[grid.offset : grid.offset + grid.n_blocks]
            blocks.view(grid.n_video, grid.n_text, d, d)[v0:v1, t0:t1] = geo.gram
            sums = row_sum[grid.offset : grid.offset + grid.n_blocks]
            sums.view(grid.n_video, grid.n_text, d)[v0:v1, t0:t1] = geo.row_sum
            weights[table.grids.index(grid)][v0:v1, t0:t1] = geo.weights.transpose(-3, -2)
            _put_pairs(dot, part, geo.pairs.text_dot_pooled)
            _put_pairs(pooled_sq, part, geo.pairs.pooled_sq)
        return cls(gram, row_sum, weights, (dot, pooled_sq, (text * text).sum(-1, keepdim=True)))

    def em(self, params: EMParams, prior: Tensor | None, budget: int) -> tuple[Tensor, Tensor]:
        """``z`` ``[n_blocks, D, K]`` and norms ``[n_blocks, K]``: every block's EM, in
        batched calls of ``budget`` bytes."""
        n, d, _ = self.gram.shape
        per_block = (d * d + 4 * d * params.k) * self.gram.element_size()
        step = max(1, budget // per_block)
        if step >= n:
            return em_responsibilities(self.gram, self.row_sum, params, prior)
        z, norms = self.gram.new_empty(n, d, params.k), self.gram.new_empty(n, params.k)
        for s in range(0, n, step):
            part = em_responsibilities(self.gram[s : s + step], self.row_sum[s : s + step],
                                       params, prior)  # fmt: skip
            z[s : s + step], norms[s : s + step] = part
        return z, norms

    def terms(self, table: EmclNetTable, params: EMParams, prior: Tensor | None) -> TableTerms:
        z, norms = self.em(params, prior, table.em_budget)
        pair = [table.text.new_empty(table.shape) for _ in range(4)]
        text = [table.text.new_empty(table.shape[0], table.n_video_blocks) for _ in range(2)]
        for part in table.slices(params.k):
            grid = part.grid
            (v0, v1), (t0, t1) = part.videos, part.texts
            z_grid = z[grid.offset : grid.offset + grid.n_blocks].unflatten(0, (grid.n_video, -1))
            n_grid = norms[grid.offset : grid.offset + grid.n_blocks]
            n_grid = n_grid.unflatten(0, (grid.n_video, -1))
            weights = self.weights[table.grids.index(grid)][v0:v1, t0:t1]
            got = table.projected_terms(part, weights, z_grid[v0:v1, t0:t1], n_grid[v0:v1, t0:t1])
            for out, values in zip(pair, (got.cross, got.rec_dot, got.pooled_cross,
                                          got.pooled_rec_sq), strict=True):  # fmt: skip
                _put_pairs(out, part, values)
            (r0, r1), b0 = part.rows, grid.video_block
            for out, values in zip(text, (got.text_cross, got.text_rec_sq), strict=True):
                out[r0:r1, b0 + v0 : b0 + v1].unflatten(0, (-1, grid.bt)).copy_(
                    values[..., 0].permute(1, 2, 0)
                )
        first = table.grids[0] if table.grids else None
        first_z = z[: min(EFFECTIVE_K_BLOCKS, first.n_text)] if first else z[:0]
        return TableTerms(table, *pair, *text, first_z=first_z)


__all__ = ["EmclNetTable", "TableTerms", "slice_bytes"]
