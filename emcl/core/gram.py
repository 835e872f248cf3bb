"""EMCL-Net's block EM through the block's D × D Gram matrix, and its scores for any beta.

In an EMCL-Net block (docs/method.md §2.1) the EM runs on ``X = [x_ab; t_a]``: ``Bt * Bv`` pooled
rows ``x_ab = sum_f w_abf v_bf`` and ``Bt`` texts. Every product the EM iterations need goes
through ``G = X^T X`` ``[D, D]`` (docs/method.md §1.10):

- M-step: ``mu = X z / (eps + |X z|)`` with ``|X z|_k^2 = z_k^T G z_k``;
- E-step: ``X^T mu = G z / (eps + |X z|)``.

``G``, the pooling weights and the other quantities that no knob changes form the block's
:class:`Geometry`, computed once and reused by every EM run (the live metrics cache it). One
iteration then costs ``D^2 K`` multiply-adds instead of the ``~2 (Bv T + Bt Bv T) D K`` of
``emcl.core.factorized``. After the last iteration, the scores for *every* beta follow from six
beta-free products (:class:`Terms`), so a beta change costs a few element-wise operations.

Same arithmetic as the reference (same normalisations and ``1e-6`` guards); only the order of
summation differs. The tests compare it with :func:`emcl.core.logits.emclnet_logits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from emcl.core.em import (
    EPS,
    NORM_EPS,
    EMParams,
    check_iters,
    check_lam,
    data_init_columns,
    effective_k,
    reference_init,
)


@dataclass(frozen=True)
class Pairs:
    """The knob-free products the scores need (``[..., Bt, Bv]``; texts ``[..., Bt, 1]`` so
    that a whole table, with one value per text, broadcasts the same way)."""

    text_dot_pooled: Tensor  # [..., Bt, Bv] <t_a, x_ab>
    pooled_sq: Tensor  # [..., Bt, Bv] |x_ab|^2
    text_sq: Tensor  # [..., Bt, 1] |t_a|^2

    def base_scores(self) -> Tensor:  # [..., Bt, Bv] the cosines without EMCL
        return cosine_from_squares(self.text_dot_pooled, self.text_sq, self.pooled_sq)


@dataclass(frozen=True)
class Geometry:
    """What the knobs do not change in a batch of EMCL-Net blocks (leading dims ``...``)."""

    text: Tensor  # [..., Bt, D] sentence features as trained (not normalised)
    frames: Tensor  # [..., Bv, T, D]
    weights: Tensor  # [..., Bt, Bv, T] text-conditioned pooling weights (mask applied)
    pairs: Pairs
    gram: Tensor  # [..., D, D] X^T X over the block's pooled rows and texts
    row_sum: Tensor  # [..., D] the sum of the block's rows (the first E-step of a constant init)


@dataclass(frozen=True)
class Terms:
    """Beta-free products of one EM run; with ``r = mu z^T`` the reconstruction per unit beta,
    the output rows are ``x + beta r``. Pair terms ``[..., Bt, Bv]``, text terms ``[..., Bt, 1]``
    (or ``[Nt, Nv]`` in a whole table, where each video block has its own EM run)."""

    cross: Tensor  # <t_a, r_ab> + <r_a, x_ab>
    rec_dot: Tensor  # <r_a, r_ab>
    pooled_cross: Tensor  # <x_ab, r_ab>
    pooled_rec_sq: Tensor  # |r_ab|^2
    text_cross: Tensor  # <t_a, r_a>
    text_rec_sq: Tensor  # |r_a|^2
    z: Tensor  # [..., D, K] the final responsibilities

    @cached_property
    def effective_k(self) -> Tensor:  # [...] numerical rank of z per block
        return effective_k(self.z)

    def cosines(self, pairs: Pairs, beta: float) -> Tensor:
        """Scores ``[..., Bt, Bv]``: the cosine of the outputs ``t + beta r`` and ``x + beta r``."""
        dot = pairs.text_dot_pooled + beta * self.cross + beta**2 * self.rec_dot
        pooled = pairs.pooled_sq + 2 * beta * self.pooled_cross + beta**2 * self.pooled_rec_sq
        text = pairs.text_sq + 2 * beta * self.text_cross + beta**2 * self.text_rec_sq
        return cosine_from_squares(dot, text, pooled)

    def rec_ratios(self, pairs: Pairs, beta: float) -> Tensor:
        """``|beta r| / |x|`` of every row the EM ran on, flattened: pooled rows, then texts."""
        pooled = self.pooled_rec_sq / pairs.pooled_sq.clamp(min=NORM_EPS)
        text = self.text_rec_sq / pairs.text_sq.clamp(min=NORM_EPS)
        both = torch.cat([pooled.flatten(), text.flatten()])
        return beta * both.clamp(min=0).sqrt()


def cosine_from_squares(dot: Tensor, text_sq: Tensor, pooled_sq: Tensor) -> Tensor:
    """``dot / (|t| |x|)`` from the dot product and both squared norms (F.normalize's guard)."""
    text_norm = text_sq.clamp(min=0).sqrt().clamp(min=NORM_EPS)
    pooled_norm = pooled_sq.clamp(min=0).sqrt().clamp(min=NORM_EPS)
    return dot / (text_norm * pooled_norm)


def geometry(
    text: Tensor, frames: Tensor, frame_mask: Tensor | None = None, temperature: float = 3.0
) -> Geometry:
    """The knob-free part of EMCL-Net blocks: ``text`` ``[..., Bt, D]``, ``frames``
    ``[..., Bv, T, D]``, ``frame_mask`` ``[..., Bv, T]`` (True for real frames). The leading
    dims of ``frames`` broadcast: one video block ``[Bv, T, D]`` serves many text blocks."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    dtype = torch.promote_types(text.dtype, torch.float32)  # fp16 -> fp32; fp64 stays
    text, frames = text.to(dtype), frames.to(dtype)
    bv, t, d = frames.shape[-3:]
    frame_rows = frames.reshape(*frames.shape[:-3], bv * t, d)  # [..., Bv*T, D]
    text_frame = text @ frame_rows.mT  # [..., Bt, Bv*T]
    text_frame = text_frame.reshape(*text_frame.shape[:-1], bv, t)  # [..., Bt, Bv, T]
    weights = torch.softmax(text_frame / temperature, dim=-1)
    if frame_mask is not None:  # as the reference: mask after the softmax, no renormalising
        weights = weights * frame_mask.to(weights.dtype).unsqueeze(-3)
    by_video = weights.transpose(-3, -2)  # [..., Bv, Bt, T]
    frame_gram = frames @ frames.mT  # [..., Bv, T, T]
    pooled_sq = ((by_video @ frame_gram) * by_video).sum(-1).transpose(-2, -1)  # |x_ab|^2
    # sum_a w_ab w_ab^T per video: the pooled rows' Gram matrix in frame coordinates.
    mixed = (by_video.mT @ by_video) @ frames  # [..., Bv, T, D]
    return Geometry(
        text=text,
        frames=frames,
        weights=weights,
        pairs=Pairs(
            text_dot_pooled=(weights * text_frame).sum(-1),
            pooled_sq=pooled_sq,
            text_sq=(text * text).sum(-1, keepdim=True),
        ),
        gram=frame_rows.mT @ mixed.reshape(*mixed.shape[:-3], bv * t, d) + text.mT @ text,
        row_sum=(weights.sum(-3)[..., None] * frames).sum((-3, -2)) + text.sum(-2),
    )


def first_logits(
    gram: Tensor, row_sum: Tensor, params: EMParams, prior: Tensor | None = None
) -> Tensor:
    """``X^T mu_0`` ``[..., D, K]`` for the initial bases of ``params``, without forming them
    (``gram`` ``[..., D, D]``, ``row_sum`` ``[..., D]``)."""
    k = params.k
    init = params.resolve_init(prior)
    if isinstance(init, Tensor) or init == "reference":
        # Every row starts from the same K-vector, so X^T mu_0 = (sum of rows) mu_0^T.
        start = init if isinstance(init, Tensor) else reference_init(k, params.generator())
        start = start.detach().to(gram).reshape(-1)  # [K]
        if start.shape[0] != k:
            raise ValueError(f"init has {start.shape[0]} bases but k={k}")
        return row_sum[..., :, None] * start  # [..., D, K]
    # "data": the K feature columns emcl.core.em.data_init draws, as unit-norm bases.
    columns = data_init_columns(gram.shape[-1], k, params.generator()).to(gram.device)
    column_norms = gram.diagonal(dim1=-2, dim2=-1)[..., columns].clamp(min=0).sqrt()
    return gram[..., :, columns] / (EPS + column_norms[..., None, :])


def em_responsibilities(
    gram: Tensor, row_sum: Tensor, params: EMParams, prior: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The EM of ``params`` (beta ignored) on Gram matrices ``[..., D, D]``: the final
    responsibilities ``z`` ``[..., D, K]`` (columns sum to 1) and ``EPS + |X z_k|`` ``[..., K]``.

    One batched program per iteration over every leading index, with no host synchronisation
    (the same kernels on a CPU and a GPU). The column normalisation of ``z`` and the division
    by the bases' norms are per-column factors, so they are folded into one ``[..., 1, K]``
    scale on the next iteration's logits instead of passes over ``[..., D, K]``."""
    check_iters(params.iters)
    lam = check_lam(params.lam)
    d, k = gram.shape[-1], params.k
    if params.iters == 0:
        return gram.new_zeros(*gram.shape[:-2], d, k), gram.new_ones(*gram.shape[:-2], k)
    logits = first_logits(gram, row_sum, params, prior)  # [..., D, K], a fresh tensor
    scale: Tensor | float = 1.0 / lam
    for _ in range(params.iters):
        # In place: the logits are not read again, and on a CPU a new [..., D, K] tensor per
        # iteration costs an allocation and a pass over memory (the same values either way);
        # not under autograd, which keeps the logits for the backward of x_p.
        scaled = logits * scale if logits.requires_grad else logits.mul_(scale)
        p = torch.softmax(scaled, dim=-1)  # [..., D, K] before the column sums
        columns = EPS + p.sum(dim=-2, keepdim=True)  # [..., 1, K]: z = p / columns
        logits = gram @ p  # [..., D, K] = X^T X p
        x_p = (p * logits).sum(dim=-2, keepdim=True).clamp(min=0).sqrt()  # [..., 1, K] |X p|
        norms = EPS + x_p / columns  # eps + |X z|
        scale = 1.0 / (lam * columns * norms)  # X^T mu / lam = (X^T X p) * scale
    return p / columns, norms.squeeze(-2)


def em_terms(geo: Geometry, params: EMParams, prior: Tensor | None = None) -> Terms:
    """Run the EM of ``params`` (its beta is ignored) on every block of ``geo``."""
    z, norms = em_responsibilities(geo.gram, geo.row_sum, params, prior)
    return _terms(geo, z, norms)


def _terms(geo: Geometry, z: Tensor, norms: Tensor) -> Terms:
    # Pair quantities are computed video-major ([..., Bv, Bt, K]): each video's pooled rows
    # are one small matrix product with that video's frames.
    bv, t, d = geo.frames.shape[-3:]
    per_frame = geo.frames.reshape(*geo.frames.shape[:-3], bv * t, d) @ z  # [..., Bv*T, K]
    per_frame = per_frame.reshape(*per_frame.shape[:-2], bv, t, -1)  # [..., Bv, T, K]
    pooled_z = geo.weights.transpose(-3, -2) @ per_frame  # [..., Bv, Bt, K] z^T x_ab
    text_z = geo.text @ z  # [..., Bt, K] z^T t_a
    return terms_from_projections(pooled_z, text_z, z, norms)


def terms_from_projections(pooled_z: Tensor, text_z: Tensor, z: Tensor, norms: Tensor) -> Terms:
    """:class:`Terms` from ``z^T x_ab`` ``[..., Bv, Bt, K]`` (video-major), ``z^T t_a``
    ``[..., Bt, K]``, ``z`` ``[..., D, K]`` and ``EPS + |X z|`` ``[..., K]``."""
    text_z = text_z.unsqueeze(-3)  # [..., 1, Bt, K]
    # mu = X z / norms: fold 1/norms into the K × K matrices instead of scaling every row.
    scale = 1.0 / norms  # [..., K]
    zz = z.mT @ z  # [..., K, K]: <r_i, r_j> = mu_i^T (z^T z) mu_j
    zz_scaled = scale[..., :, None] * zz * scale[..., None, :]
    text_weights = text_z * scale[..., None, None, :]  # [..., 1, Bt, K] = mu_t
    text_rec = text_z @ zz_scaled.unsqueeze(-3)  # [..., 1, Bt, K] = (S zz S) z^T t_a
    pooled_rec = (pooled_z.flatten(-3, -2) @ zz_scaled).reshape(pooled_z.shape)

    def pair(values: Tensor) -> Tensor:  # [..., Bv, Bt] -> [..., Bt, Bv]
        return values.transpose(-2, -1)

    return Terms(
        cross=pair(2.0 * (text_weights * pooled_z).sum(-1)),
        rec_dot=pair((text_rec * pooled_z).sum(-1)),
        # sum_k pz_k^2 / norm_k element-wise: a [K] @ [K, 1] product per pair ran slower.
        pooled_cross=pair(torch.linalg.vecdot(pooled_z * scale[..., None, None, :], pooled_z)),
        pooled_rec_sq=pair((pooled_rec * pooled_z).sum(-1)),
        text_cross=pair((text_weights * text_z).sum(-1)),
        text_rec_sq=pair((text_rec * text_z).sum(-1)),
        z=z,
    )


def emclnet_scores(
    text: Tensor,
    frames: Tensor,
    frame_mask: Tensor | None,
    params: EMParams,
    prior: Tensor | None = None,
    temperature: float = 3.0,
) -> Tensor:
    """EMCL-Net block scores ``[..., Bt, Bv]``; equal (up to float summation order) to
    ``emclnet_logits(text, frames, frame_mask, lambda x: params.run(x, prior).embeddings)``."""
    geo = geometry(text, frames, frame_mask, temperature)
    if params.iters == 0 or params.beta == 0.0:
        return geo.pairs.base_scores()
    return em_terms(geo, params, prior).cosines(geo.pairs, params.beta)


def gram_cost(n_texts: int, n_videos: int, n_frames: int, dim: int, k: int, iters: int) -> float:
    """Multiply-adds of one block by this route (Gram set-up + iterations + final products)."""
    setup = n_videos * (n_frames * n_frames * dim + n_frames * dim * dim) + n_texts * dim * dim
    final = n_videos * n_frames * dim * k + 2 * n_texts * n_videos * (n_frames * k + k * k)
    return float(setup + iters * dim * dim * k + final)


__all__ = [
    "Geometry",
    "Pairs",
    "Terms",
    "cosine_from_squares",
    "em_responsibilities",
    "em_terms",
    "emclnet_scores",
    "first_logits",
    "geometry",
    "gram_cost",
    "terms_from_projections",
]
