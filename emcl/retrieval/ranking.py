"""One query against a gallery index: the base (cosine) ranking and the EMCL ranking.

EM context — which rows share one EM run (docs/design.md, "EM contexts"):
- ``shortlist``: the query plus its top-M base candidates (the search default; cheap at any
  gallery size; items outside the shortlist keep their base order below it);
- ``gallery``: the query plus every valid gallery video in one run;
- ``block``: the reference's evaluation protocol, the query against blocks of ``block_videos``
  videos, one EM run per block, all blocks batched.
Scores depend on the context; the result says which one was used.

Two protocols (emcl/core/protocols.py): :func:`rank_query` scores as the inference module does
(or with text-conditioned pooling of a unit-norm query, ``protocol="trained"``);
:func:`rank_as_trained` scores as EMCL-Net was trained (the model's own query feature and its
pooling temperature, one EM run per block of videos); :func:`rank_scores` ranks score rows
computed elsewhere (a row of the as-trained table, emcl/retrieval/emclnet_table.py).

Long videos as moments (emcl/data/windows.py): an index may hold several rows per video (its
time windows). With an :class:`ItemMap` the rows are ranked as items and each column keeps
every video's best item: a video's score is its best window's, and its hit carries that
window's ``span``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import EMParams, rec_ratios
from emcl.core.logits import text_conditioned_pool
from emcl.core.protocols import BLOCK, INFERENCE, PROTOCOLS, TRAINED, Protocol
from emcl.retrieval.index import GalleryIndex, valid_rows

Context = Literal["shortlist", "gallery", "block"]
Span = tuple[float, float]
CONTEXTS = ("shortlist", "gallery", "block")
DEFAULT_SHORTLIST = 64
SEARCH_BLOCK = BLOCK[INFERENCE][1]  # videos per EM run in the ``block`` context


@dataclass(frozen=True)
class Hit:
    """One ranked video in one column (the only hit type: search, the app and the API)."""

    video_id: str
    index: int  # position in the original gallery
    score: float
    rank: int  # 1-based, in this column
    other_rank: int | None  # 1-based rank in the other column (None: not among its candidates)
    rank_change: int | None  # base rank - EMCL rank (positive: moved up); None in the base column
    is_target: bool = False
    # The cosine of query and video as this column scores them: after EMCL in the EMCL
    # column (whose protocol may rank by another score, ``score``), the base cosine otherwise.
    cosine: float | None = None  # the ground truth of a known caption
    span: Span | None = None  # (start_s, end_s) of the matched window; None: the whole video

    def to_json(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "score": self.score,
            "rank": self.rank,
            "other_rank": self.other_rank,
            "rank_change": self.rank_change,
            "is_target": self.is_target,
            "cosine": self.cosine,
            "span": list(self.span) if self.span is not None else None,
        }


@dataclass(frozen=True)
class ItemMap:
    """What each row of an item index shows (emcl.data.windows.GalleryItems gives both)."""

    video_rows: Tensor  # [N] long: the position of the row's video (what ``Hit.index`` reports)
    spans: tuple[Span | None, ...]  # [N] the row's time span; None: the whole video

    def best_per_video(self, order: Tensor, rows: Tensor) -> Tensor:
        """``order`` ``[M]`` (index positions, best first) -> the best position of each
        video, best first ``[V]``; ``rows`` ``[M]`` maps index positions to item rows."""
        owners = self.video_rows[rows[order]]  # [M] video of each ranked item
        first = torch.full((int(self.video_rows.max()) + 1,), len(order), dtype=torch.long)
        first.scatter_reduce_(0, owners, torch.arange(len(order)), "amin")
        return order[first[first < len(order)].sort().values]


@dataclass(frozen=True)
class Ranking:
    base: list[Hit]
    emcl: list[Hit]
    effective_k: int
    context: str
    em_rows: int  # rows in one EM run
    rec_ratio: float  # median over the EM's rows of |β μ z^T| / |x| (EMCL's size)
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
    temperature: float = 3.0,
) -> _Run:
    """EMCL scores and cosines of ``candidates`` ``[C]``, the smallest effective K, rows per
    EM run and EMCL's size on every row."""
    if context != "block":
        parts = [candidates[None]]  # one EM run over all candidates
    else:
        # Full blocks run batched; a short last block runs on its own (padding it would
        # change its EM).
        full = len(candidates) - len(candidates) % block_videos
        parts = [candidates[:full].reshape(-1, block_videos)] if full else []
        if full < len(candidates):
            parts.append(candidates[full:][None])
    runs = [_run_blocks(query, index, part, params, prior, protocol, temperature) for part in parts]
    scores = torch.cat([run.scores.flatten() for run in runs])
    cosines = torch.cat([run.cosines.flatten() for run in runs])
    ratios = torch.cat([run.ratios.flatten() for run in runs])
    return _Run(
        scores,
        cosines,
        min(run.effective_k for run in runs),
        max(run.rows for run in runs),
        ratios,
    )


@dataclass(frozen=True)
class _Run:
    scores: Tensor  # [..., C] what the protocol ranks by
    cosines: Tensor  # [..., C] cosine of the query and each video after EMCL
    effective_k: int
    rows: int  # rows per EM run
    ratios: Tensor  # [...] |β μ z^T| / |x| of every row


def _run_blocks(
    query: Tensor,
    index: GalleryIndex,
    blocks: Tensor,
    params: EMParams,
    prior: Tensor | None,
    protocol: str,
    temperature: float = 3.0,
) -> _Run:
    """One batched EM call over ``blocks`` ``[B, C]`` (index positions): scores ``[B, C]``."""
    n_blocks = blocks.shape[0]
    text = query[None, None].expand(n_blocks, 1, -1)  # [B, 1, D]
    if protocol == TRAINED and index.frames is not None:
        frames = index.frames[blocks]  # [B, C, T, D]
        mask = index.frame_mask[blocks] if index.frame_mask is not None else None
        pooled = text_conditioned_pool(text, frames, mask, temperature)  # [B, 1, C, D]
        stacked = torch.cat([pooled[:, 0], text], dim=1)  # [B, C+1, D]
    else:
        stacked = torch.cat([index.embeddings[blocks].float(), text], dim=1)  # [B, C+1, D]
    result = params.run(stacked, prior if params.init == "prior" else None)
    out = result.embeddings
    unit = F.normalize(out, dim=-1)
    cosines = (unit[:, :-1] @ unit[:, -1:].mT)[..., 0]  # [B, C]
    # EMCL-Net ranks by the cosine; the inference module by the dot product (not re-normalised).
    scores = (
        cosines
        if protocol == TRAINED and index.frames is not None
        else (out[:, :-1] @ out[:, -1:].mT)[..., 0]
    )
    ratios = rec_ratios(stacked, result.reconstruction, params.beta)  # [B, C+1]
    return _Run(scores, cosines, int(result.effective_k.min()), stacked.shape[1], ratios)


def _check_request(
    query: Tensor, index: GalleryIndex, context: str, protocol: str, top_k: int, shortlist: int
) -> None:
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if not isinstance(shortlist, int) or shortlist < 1:
        raise ValueError(f"shortlist_size must be a positive integer, got {shortlist!r}")
    if len(index) == 0:
        raise ValueError("the gallery has no rankable videos")
    if query.dim() != 1 or not bool(valid_rows(query[None])[0]):
        raise ValueError("the query embedding must be a finite, non-zero [D] vector")


def _hits(
    index: GalleryIndex,
    order: Tensor,  # [k] index positions, best first
    values: Tensor,  # [M] scores by index position
    cosines: Tensor,  # [M] cosines by index position
    mine: dict[int, int],
    other: dict[int, int],
    *,
    is_emcl: bool,
    items: ItemMap | None = None,
) -> list[Hit]:
    rows = index.rows.tolist()
    hits = []
    for i in order.tolist():
        original = rows[i]
        key = int(items.video_rows[original]) if items is not None else original
        hits.append(
            Hit(
                video_id=index.video_ids[original],
                index=key,
                score=float(values[i]),
                rank=mine[key],
                other_rank=other[key],
                rank_change=(other[key] - mine[key]) if is_emcl else None,
                span=items.spans[original] if items is not None else None,
                cosine=float(cosines[i]),
            )
        )
    return hits


@dataclass(frozen=True)
class EmSummary:
    """What a column's EM runs were, as a result reports them."""

    context: str
    effective_k: int  # the smallest over the runs
    em_rows: int  # rows in one EM run (the largest)
    rec_ratio: float  # median over the EM's rows of |β μ z^T| / |x| (EMCL's size)


def _summary(context: str, run: _Run) -> EmSummary:
    return EmSummary(context, run.effective_k, run.rows, float(run.ratios.median()))


def _ranking(
    index: GalleryIndex,
    base: Tensor,  # [M] base scores (cosines) by index position
    candidates: Tensor,  # [C] the EM's index positions, in base order
    emcl_scores: Tensor,  # [C] what the EMCL column ranks them by
    emcl_cosines: Tensor,  # [C] their cosines after EMCL
    em: EmSummary,
    *,
    top_k: int,
    items: ItemMap | None,
    start: float,
) -> Ranking:
    """Both columns: the base order, the EM's candidates re-sorted above the rest (which keep
    base order), every video at its best item, the top-k hits and the full rank maps."""
    notices: list[str] = []
    base_order = torch.argsort(base, descending=True, stable=True)  # [M]
    emcl_cosine = base.clone()  # outside the EM's candidates the features are unchanged
    emcl_cosine[candidates] = emcl_cosines
    within = torch.argsort(emcl_scores, descending=True, stable=True)
    emcl_order = torch.cat([candidates[within], base_order[len(candidates) :]])
    emcl_value = torch.full_like(base, math.nan)
    emcl_value[candidates] = emcl_scores
    emcl_value = torch.where(torch.isfinite(emcl_value), emcl_value, base)  # outside: base score
    if len(candidates) < len(index):
        notices.append(
            f"EMCL re-ranks the top {len(candidates)} base candidates; the rest keep base order"
        )
    key = index.rows if items is None else items.video_rows[index.rows]  # [M] rank-map keys
    if items is not None:  # every video at its best item
        base_order = items.best_per_video(base_order, index.rows)
        emcl_order = items.best_per_video(emcl_order, index.rows)
    keys = key.tolist()
    base_rank = {keys[i]: r + 1 for r, i in enumerate(base_order.tolist())}
    emcl_rank = {keys[i]: r + 1 for r, i in enumerate(emcl_order.tolist())}
    k = min(top_k, len(base_order))
    shown = {"is_emcl": True, "items": items}
    return Ranking(
        base=_hits(
            index, base_order[:k], base, base, base_rank, emcl_rank, is_emcl=False, items=items
        ),
        emcl=_hits(index, emcl_order[:k], emcl_value, emcl_cosine, emcl_rank, base_rank, **shown),
        effective_k=em.effective_k,
        context=em.context,
        em_rows=em.em_rows,
        rec_ratio=em.rec_ratio,
        base_rank=base_rank,
        emcl_rank=emcl_rank,
        ms=(time.perf_counter() - start) * 1000.0,
        notices=notices,
    )


def _shortlist(base: Tensor, context: str, shortlist_size: int) -> Tensor:
    """The EM's candidates ``[C]``: the top ``shortlist_size`` in base order, or every row."""
    order = torch.argsort(base, descending=True, stable=True)
    return order[: min(shortlist_size, len(order))] if context == "shortlist" else order


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
    protocol: Protocol = INFERENCE,
    items: ItemMap | None = None,
) -> Ranking:
    """Base (cosine) and EMCL rankings of ``index`` for one ``query`` embedding ``[D]``.

    ``protocol="trained"`` uses text-conditioned frame pooling of the unit-norm query when the
    index has frames (:func:`rank_as_trained` pools as the model was trained).
    ``top_k`` larger than the gallery is clamped. Raises ``ValueError`` for an empty gallery or
    an invalid query. ``items``: the index rows are items (windows of long videos); the
    shortlist and the EM run are over items, the columns, ranks and ``top_k`` over videos,
    each at its best item (see the module docstring).
    """
    start = time.perf_counter()
    _check_request(query, index, context, protocol, top_k, shortlist_size)
    query = F.normalize(query.float(), dim=-1)
    use_frames = protocol == TRAINED and index.frames is not None
    base = _base_scores(query, index, use_frames)  # [M]
    candidates = _shortlist(base, context, shortlist_size)
    run = _emcl_scores(query, index, candidates, params, prior, context, block_videos, protocol)
    return _ranking(
        index, base, candidates, run.scores, run.cosines, _summary(context, run),
        top_k=top_k, items=items, start=start,
    )  # fmt: skip


def trained_base_scores(query: Tensor, index: GalleryIndex, temperature: float = 3.0) -> Tensor:
    """``[M]`` cosines of ``query`` (the model's own sentence feature ``[D]``) and each video
    of ``index`` pooled by EMCL-Net's text-conditioned pooling, without EMCL."""
    if index.frames is None:
        raise ValueError("the as-trained protocol needs the gallery's frame features")
    text = query.float()
    pooled = text_conditioned_pool(text[None], index.frames, index.frame_mask, temperature)
    return F.normalize(pooled[0], dim=-1) @ F.normalize(text, dim=-1)


def rank_as_trained(
    query: Tensor,
    index: GalleryIndex,
    params: EMParams,
    *,
    prior: Tensor | None = None,
    context: Context = "shortlist",
    shortlist_size: int = DEFAULT_SHORTLIST,
    top_k: int = 10,
    temperature: float = 3.0,
    items: ItemMap | None = None,
) -> Ranking:
    """Both columns as EMCL-Net was trained and is evaluated (docs/method.md §2.1), for a query
    that stands alone (free text): its videos pooled by a softmax over ``<query, frame> /
    temperature``, cosines, and one EM run on ``[pooled videos; query]`` per block of
    ``BLOCK["trained"][1]`` videos.

    ``query`` ``[D]`` is the model's own sentence feature, not normalised (the pooling softmax
    sees its norm); ``index`` must hold the frames. The blocks: the ``shortlist`` split into
    blocks (in base order), every video in blocks (``block``, base order), or one run over
    every video (``gallery``); a short last block runs alone.
    """
    start = time.perf_counter()
    _check_request(query, index, context, TRAINED, top_k, shortlist_size)
    if index.frames is None:
        raise ValueError("the as-trained protocol needs the gallery's frame features")
    text = query.float()
    base = trained_base_scores(text, index, temperature)  # [M]
    candidates = _shortlist(base, context, shortlist_size)
    runs = "gallery" if context == "gallery" else "block"
    block = BLOCK[TRAINED][1]
    run = _emcl_scores(text, index, candidates, params, prior, runs, block, TRAINED, temperature)
    return _ranking(
        index, base, candidates, run.scores, run.cosines, _summary(context, run),
        top_k=top_k, items=items, start=start,
    )  # fmt: skip


def rank_scores(
    index: GalleryIndex,
    base: Tensor,
    emcl: Tensor,
    em: EmSummary,
    *,
    top_k: int = 10,
    items: ItemMap | None = None,
) -> Ranking:
    """Both columns from score rows computed elsewhere, every video a candidate: ``base`` and
    ``emcl`` ``[M]`` by index position (cosines, as the as-trained table's rows are), ``em``
    what the EM runs behind ``emcl`` were."""
    start = time.perf_counter()
    if base.shape != (len(index),) or emcl.shape != (len(index),):
        raise ValueError(f"need one score per index row ({len(index)})")
    candidates = torch.argsort(base, descending=True, stable=True)
    scores = emcl[candidates]
    return _ranking(
        index, base, candidates, scores, scores, em, top_k=top_k, items=items, start=start
    )


__all__ = [
    "CONTEXTS",
    "DEFAULT_SHORTLIST",
    "SEARCH_BLOCK",
    "Context",
    "EmSummary",
    "Hit",
    "ItemMap",
    "Ranking",
    "rank_as_trained",
    "rank_query",
    "rank_scores",
    "trained_base_scores",
]
