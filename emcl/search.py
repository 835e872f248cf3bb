"""Ranking over cached embeddings: one query (base vs EMCL) and full evaluation matrices.

EM context — which rows share one EM run (DESIGN.md):
- ``shortlist``: the query plus its top-M base candidates (the search default; cheap at any
  gallery size; items outside the shortlist keep their base order below it);
- ``gallery``: the query plus every valid gallery video in one run;
- ``block``: the reference's evaluation protocol, the query against blocks of ``block_videos``
  videos, one EM run per block, all blocks batched.
Scores depend on the context; the result says which one was used.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.em import EMParams
from emcl.factorized import emclnet_logits_factorized, worth_it
from emcl.similarity import emclnet_logits, inference_module_logits, text_conditioned_pool

Context = Literal["shortlist", "gallery", "block"]
Protocol = Literal["inference", "emclnet"]
CONTEXTS = ("shortlist", "gallery", "block")
PROTOCOLS = ("inference", "emclnet")
DEFAULT_SHORTLIST = 64
DEFAULT_BLOCK = {"inference": (64, 64), "emclnet": (32, 32)}  # (texts, videos) per EM block
CPU_ROWS_PER_CALL = 2048  # EM rows per batched call: cache-sized on a CPU
GPU_ROWS_PER_CALL = 1 << 19  # ... and large on a GPU, where launches dominate small calls
FP32_GALLERY_LIMIT = 50_000  # above this the index keeps only fp16 (2 bytes × D per video)


# --------------------------------------------------------------------------------------------
# Gallery index
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# One query
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    video_id: str
    index: int  # position in the original gallery
    score: float
    rank: int  # 1-based, in this column
    other_rank: int  # 1-based rank of the same video in the other column
    rank_change: int | None  # base rank - EMCL rank (positive: moved up); None in the base column


@dataclass(frozen=True)
class Ranking:
    base: list[Hit]
    emcl: list[Hit]
    effective_k: int
    context: str
    em_rows: int  # rows in one EM run
    base_rank: dict[int, int]  # original index -> 1-based base rank (every ranked video)
    emcl_rank: dict[int, int]
    ms: float
    notices: list[str] = field(default_factory=list)


def _base_scores(query: Tensor, index: GalleryIndex, query_frames_text: bool) -> Tensor:  # [M]
    if query_frames_text and index.frames is not None:
        pooled = text_conditioned_pool(query[None], index.frames, index.frame_mask)[0]  # [M, D]
        return F.normalize(pooled, dim=-1) @ query
    return (index.embeddings @ query.to(index.embeddings.dtype)).float()


def _emcl_scores(
    query: Tensor,  # [D] unit norm
    index: GalleryIndex,
    candidates: Tensor,  # [C] positions in the index
    params: EMParams,
    prior: Tensor | None,
    context: str,
    block_videos: int,
    protocol: str,
) -> tuple[Tensor, int, int]:
    """EMCL scores of ``candidates`` ``[C]``, the smallest effective K and rows per EM run."""
    if context != "block":
        parts = [candidates[None]]  # one EM run over all candidates
    else:
        # Full blocks run batched; a short last block runs on its own (padding it would
        # change its EM).
        full = len(candidates) - len(candidates) % block_videos
        parts = [candidates[:full].reshape(-1, block_videos)] if full else []
        if full < len(candidates):
            parts.append(candidates[full:][None])
    runs = [_run_blocks(query, index, part, params, prior, protocol) for part in parts]
    scores = torch.cat([block_scores.flatten() for block_scores, _, _ in runs])
    return scores, min(k for _, k, _ in runs), max(rows for _, _, rows in runs)


def _run_blocks(
    query: Tensor,
    index: GalleryIndex,
    blocks: Tensor,
    params: EMParams,
    prior: Tensor | None,
    protocol: str,
) -> tuple[Tensor, int, int]:
    """One batched EM call over ``blocks`` ``[B, C]`` (index positions): scores ``[B, C]``."""
    n_blocks = blocks.shape[0]
    text = query[None, None].expand(n_blocks, 1, -1)  # [B, 1, D]
    if protocol == "emclnet" and index.frames is not None:
        frames = index.frames[blocks]  # [B, C, T, D]
        mask = index.frame_mask[blocks] if index.frame_mask is not None else None
        pooled = text_conditioned_pool(text, frames, mask)  # [B, 1, C, D]
        stacked = torch.cat([pooled[:, 0], text], dim=1)  # [B, C+1, D]
        result = params.run(stacked, prior if params.init == "prior" else None)
        out = F.normalize(result.embeddings, dim=-1)
        scores = out[:, :-1] @ out[:, -1:].mT  # [B, C, 1]
    else:
        videos = index.embeddings[blocks].float()  # [B, C, D]
        stacked = torch.cat([videos, text], dim=1)  # [B, C+1, D]
        result = params.run(stacked, prior if params.init == "prior" else None)
        out = result.embeddings
        scores = out[:, :-1] @ out[:, -1:].mT  # [B, C, 1]
    return scores[..., 0], int(result.effective_k.min()), stacked.shape[1]


def rank_query(
    query: Tensor,
    index: GalleryIndex,
    params: EMParams,
    *,
    prior: Tensor | None = None,
    context: Context = "shortlist",
    shortlist_size: int = DEFAULT_SHORTLIST,
    block_videos: int = 64,
    top_k: int = 10,
    protocol: Protocol = "inference",
) -> Ranking:
    """Base (cosine) and EMCL rankings of ``index`` for one ``query`` embedding ``[D]``.

    ``protocol="emclnet"`` uses text-conditioned frame pooling when the index has frames.
    ``top_k`` larger than the gallery is clamped. Raises ``ValueError`` for an empty gallery or
    an invalid query.
    """
    start = time.perf_counter()
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if not isinstance(shortlist_size, int) or shortlist_size < 1:
        raise ValueError(f"shortlist_size must be a positive integer, got {shortlist_size!r}")
    if len(index) == 0:
        raise ValueError("the gallery has no rankable videos")
    if query.dim() != 1 or not bool(valid_rows(query[None])[0]):
        raise ValueError("the query embedding must be a finite, non-zero [D] vector")
    notices: list[str] = []
    query = F.normalize(query.float(), dim=-1)
    use_frames = protocol == "emclnet" and index.frames is not None

    base = _base_scores(query, index, use_frames)  # [M]
    base_order = torch.argsort(base, descending=True, stable=True)  # [M]
    if context == "shortlist":
        candidates = base_order[: min(shortlist_size, len(index))]
    else:
        candidates = base_order
    emcl_scores, k_eff, em_rows = _emcl_scores(
        query, index, candidates, params, prior, context, block_videos, protocol
    )
    within = torch.argsort(emcl_scores, descending=True, stable=True)
    emcl_order = torch.cat([candidates[within], base_order[len(candidates) :]])
    emcl_value = torch.full_like(base, math.nan)
    emcl_value[candidates] = emcl_scores
    if len(candidates) < len(index):
        notices.append(
            f"EMCL re-ranks the top {len(candidates)} base candidates; the rest keep base order"
        )

    rows = index.rows.tolist()
    base_rank = {rows[i]: r + 1 for r, i in enumerate(base_order.tolist())}
    emcl_rank = {rows[i]: r + 1 for r, i in enumerate(emcl_order.tolist())}
    k = min(top_k, len(index))

    def hits(order: Tensor, values: Tensor, mine: dict, other: dict, is_emcl: bool) -> list[Hit]:
        out = []
        for i in order[:k].tolist():
            original = rows[i]
            value = float(values[i]) if math.isfinite(float(values[i])) else float(base[i])
            out.append(
                Hit(
                    video_id=index.video_ids[original],
                    index=original,
                    score=value,
                    rank=mine[original],
                    other_rank=other[original],
                    rank_change=(other[original] - mine[original]) if is_emcl else None,
                )
            )
        return out

    return Ranking(
        base=hits(base_order, base, base_rank, emcl_rank, False),
        emcl=hits(emcl_order, emcl_value, emcl_rank, base_rank, True),
        effective_k=k_eff,
        context=context,
        em_rows=em_rows,
        base_rank=base_rank,
        emcl_rank=emcl_rank,
        ms=(time.perf_counter() - start) * 1000.0,
        notices=notices,
    )


# --------------------------------------------------------------------------------------------
# Full matrices for evaluation
# --------------------------------------------------------------------------------------------
def _split(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def similarity_matrix(
    text: Tensor,
    *,
    videos: Tensor | None = None,
    frames: Tensor | None = None,
    frame_mask: Tensor | None = None,
    params: EMParams | None = None,
    prior: Tensor | None = None,
    protocol: Protocol = "inference",
    block_texts: int | None = None,
    block_videos: int | None = None,
    frame_temp: float = 3.0,
    max_rows_per_call: int | None = None,
    factorize: bool = True,
) -> Tensor:
    """Text × video scores ``[Nt, Nv]`` in the reference's block protocol (PAPER.md §2).

    ``protocol="inference"`` needs ``videos`` ``[Nv, D]`` (EM on ``[videos; texts]`` of unit-norm
    features, 64 × 64 blocks by default); ``"emclnet"`` needs ``frames`` ``[Nv, T, D]`` (text-
    conditioned pooling, EM on ``[pooled; texts]``, 32 × 32 blocks). ``params=None`` gives the
    scores without EMCL (no blocking needed; it does not change them). With ``factorize`` the
    EMCL-Net EM runs on the frame rows instead of the pooled rows where that is cheaper
    (``emcl.factorized``; same result up to float summation order). Blocks of equal shape run
    in one batched call; ``max_rows_per_call`` bounds one call: on a CPU small calls keep their
    blocks in cache (``bench/em_bench.py``: larger calls are memory-bound and slower), on a GPU
    large calls amortise the kernel launches.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "inference" and videos is None:
        raise ValueError("the inference protocol needs video embeddings")
    if protocol == "emclnet" and frames is None:
        raise ValueError("the emclnet protocol needs frame embeddings")
    if max_rows_per_call is None:
        on_gpu = (videos if videos is not None else frames).device.type != "cpu"
        max_rows_per_call = GPU_ROWS_PER_CALL if on_gpu else CPU_ROWS_PER_CALL
    default_t, default_v = DEFAULT_BLOCK[protocol]
    block_texts = block_texts or default_t
    block_videos = block_videos or default_v
    text = text.float()
    n_texts = text.shape[0]
    n_videos = (videos if protocol == "inference" else frames).shape[0]
    device = text.device
    out = torch.empty(n_texts, n_videos, device=device)

    emcl = None
    if params is not None:
        init_prior = prior if params.init == "prior" else None
        params.resolve_init(prior)

        def emcl(x: Tensor) -> Tensor:
            return params.run(x, init_prior).embeddings

    # Group blocks by shape so that every group is one batched call.
    text_spans = _split(n_texts, block_texts)
    video_spans = _split(n_videos, block_videos)
    groups: dict[tuple[int, int], list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    for ts in text_spans:
        for vs in video_spans:
            groups.setdefault((ts[1] - ts[0], vs[1] - vs[0]), []).append((ts, vs))

    n_frames = frames.shape[1] if frames is not None else 0
    for (bt, bv), pairs in groups.items():
        fast = protocol == "emclnet" and params is not None and factorize and worth_it(bt, n_frames)
        if protocol == "inference":
            rows_per_block = bt + bv
        else:
            rows_per_block = bv * n_frames + bt if fast else bt * bv + bt
        per_call = max(1, max_rows_per_call // rows_per_block)
        for start in range(0, len(pairs), per_call):
            chunk = pairs[start : start + per_call]
            text_idx = torch.stack([torch.arange(*ts, device=device) for ts, _ in chunk])  # [B, bt]
            video_idx = torch.stack([torch.arange(*vs, device=device) for _, vs in chunk])
            block_text = text[text_idx]  # [B, bt, D]
            if protocol == "inference":
                scores = inference_module_logits(block_text, videos[video_idx].float(), emcl)
            else:
                mask = frame_mask[video_idx] if frame_mask is not None else None
                block_frames = frames[video_idx].float()
                if fast:
                    scores, _ = emclnet_logits_factorized(
                        block_text, block_frames, mask, params, prior, frame_temp
                    )
                else:
                    scores = emclnet_logits(block_text, block_frames, mask, emcl, frame_temp)
            for (ts, vs), block in zip(chunk, scores, strict=True):
                out[ts[0] : ts[1], vs[0] : vs[1]] = block
    return out
