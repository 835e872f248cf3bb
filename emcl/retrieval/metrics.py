"""Retrieval metrics (R@K, MdR, MnR; 1-based ranks), inverted softmax (docs/method.md §3, §6).

Ties. The reference (CLIP4Clip's ``compute_metrics``) emits every tied position of the ground
truth and averages over that expanded list, so a query with ties weighs more than one without
(docs/method.md §6.1). Here every query weighs exactly one, and ties are resolved by one
documented rule:

- ``"expected"`` (default): the expectation under a uniformly random tie break. A ground truth
  with ``g`` strictly higher scores and ``e`` other equal scores has mean rank ``g + 1 + e / 2``,
  and counts ``clamp((K - g) / (e + 1), 0, 1)`` towards R@K. A constant score matrix gives chance
  level, not R@1 = 100.
- ``"optimistic"``: rank ``g + 1``; ``"pessimistic"``: rank ``g + e + 1``.
- ``"reference"``: the reference's expansion, exactly (for comparing with published numbers).

Without ties all four agree with the reference. NaN scores are treated as ``-inf``: they never
outrank anything (the reference silently drops rows whose ground truth is NaN).

MdR is ``numpy.median`` of the ranks (the mean of the two middle values for an even count) in both
protocols; the reference's multi-caption T2V uses ``torch.median`` (the lower one) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Ties = Literal["expected", "optimistic", "pessimistic", "reference"]
RECALL_AT = (1, 5, 10)


def _as_scores(sim: Tensor | np.ndarray) -> Tensor:
    scores = torch.as_tensor(sim).detach().to("cpu", torch.float64)
    if scores.dim() != 2:
        raise ValueError(f"a score matrix must be 2-D, got shape {tuple(scores.shape)}")
    return torch.nan_to_num(scores, nan=-math.inf)


def direction_metrics(
    scores: Tensor | np.ndarray, ground_truth: Sequence[int] | Tensor, ties: Ties = "expected"
) -> dict[str, float]:
    """R1, R5, R10 (percent), MdR, MnR for ``scores`` ``[Q, G]`` (rows are queries).

    ``ground_truth[q]`` is the column of query q's correct item.
    """
    matrix = _as_scores(scores)  # [Q, G]
    gt = torch.as_tensor(ground_truth, dtype=torch.long)
    if gt.shape != (matrix.shape[0],):
        raise ValueError(f"need one ground truth per query ({matrix.shape[0]}), got {gt.shape}")
    if matrix.shape[0] == 0:
        raise ValueError("no queries to score")
    if gt.min() < 0 or gt.max() >= matrix.shape[1]:
        raise ValueError("ground truth index out of range")
    gt_score = matrix.gather(1, gt[:, None])  # [Q, 1]
    higher = (matrix > gt_score).sum(dim=1).double()  # [Q]
    equal = (matrix == gt_score).sum(dim=1).double() - 1.0  # [Q] other items tied with the gt

    if ties == "reference":
        # One entry per tied position: ranks higher+1 ... higher+equal+1.
        ranks = torch.cat(
            [
                torch.arange(int(h) + 1, int(h) + int(e) + 2, dtype=torch.float64)
                for h, e in zip(higher.tolist(), equal.tolist(), strict=True)
            ]
        )
        hits = {k: (ranks <= k).double() for k in RECALL_AT}
    elif ties == "optimistic":
        ranks = higher + 1
        hits = {k: (ranks <= k).double() for k in RECALL_AT}
    elif ties == "pessimistic":
        ranks = higher + equal + 1
        hits = {k: (ranks <= k).double() for k in RECALL_AT}
    elif ties == "expected":
        ranks = higher + 1 + equal / 2
        hits = {k: ((k - higher) / (equal + 1)).clamp(0, 1) for k in RECALL_AT}
    else:
        raise ValueError(f"ties must be expected, optimistic, pessimistic or reference: {ties!r}")

    result = {f"R{k}": 100.0 * float(hits[k].mean()) for k in RECALL_AT}
    result["MdR"] = float(np.median(ranks.numpy()))
    result["MnR"] = float(ranks.mean())
    return result


def video_to_text_scores(sim: Tensor | np.ndarray, text_to_video: Sequence[int] | Tensor) -> Tensor:
    """The reference's multi-caption V2T matrix ``[Nv, Nv]``: entry (v, g) is the best score of
    video g's captions against video v (``-inf`` where g has no caption). Input ``sim`` is
    ``[Nt, Nv]``."""
    scores = _as_scores(sim)
    owner = torch.as_tensor(text_to_video, dtype=torch.long)
    n_videos = scores.shape[1]
    best = torch.full((n_videos, n_videos), -math.inf, dtype=scores.dtype)  # [group g, video v]
    best.scatter_reduce_(0, owner[:, None].expand(-1, n_videos), scores, "amax")
    return best.T  # [video v, group g]


def inverted_softmax(
    sim: Tensor | np.ndarray, temperature: float = 0.01, direction: str = "t2v"
) -> Tensor:
    """``S * softmax(S / temperature) * Nt``, the softmax over the query axis (docs/method.md §3).

    ``sim`` is ``[Nt, Nv]`` (rows are texts). ``"t2v"`` normalises over texts (dim 0) and is ranked
    row-wise; ``"v2t"`` normalises over videos (dim 1) and is ranked on the transpose. Transductive:
    it needs the whole query set at once.
    """
    finite_number = isinstance(temperature, (int, float)) and math.isfinite(temperature)
    if not (finite_number and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if direction not in ("t2v", "v2t"):
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")
    scores = _as_scores(sim)
    dim = 0 if direction == "t2v" else 1
    finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -1e30))
    return scores * torch.softmax(finite / temperature, dim=dim) * scores.shape[0]


def retrieval_metrics(
    sim: Tensor | np.ndarray,
    text_to_video: Sequence[int] | Tensor | None = None,
    *,
    ties: Ties = "expected",
    inverted_softmax_temp: float | None = None,
) -> dict[str, dict[str, float]]:
    """Both directions for a text × video score matrix ``[Nt, Nv]``.

    ``text_to_video`` gives each caption's video (several captions per video: docs/method.md §6.2;
    each caption is a t2v query, and v2t ranks videos' caption groups by their best caption).
    ``None`` means one caption per video with the ground truth on the diagonal. With
    ``inverted_softmax_temp`` the scores are post-processed first (before any multi-caption
    grouping, as the author suggests). Returns ``{"t2v": {...}, "v2t": {...}}``.
    """
    scores = _as_scores(sim)
    n_texts, n_videos = scores.shape
    if text_to_video is None:
        if n_texts != n_videos:
            raise ValueError(
                f"{n_texts} texts × {n_videos} videos: pass text_to_video for several captions"
            )
        owner = torch.arange(n_texts)
    else:
        owner = torch.as_tensor(text_to_video, dtype=torch.long)
        if owner.shape != (n_texts,):
            raise ValueError(f"text_to_video needs {n_texts} entries, got {tuple(owner.shape)}")
    t2v_scores = v2t_scores = scores
    if inverted_softmax_temp is not None:
        t2v_scores = inverted_softmax(scores, inverted_softmax_temp, "t2v")
        v2t_scores = inverted_softmax(scores, inverted_softmax_temp, "v2t")
    t2v = direction_metrics(t2v_scores, owner, ties)
    if text_to_video is None:
        v2t = direction_metrics(v2t_scores.T, torch.arange(n_videos), ties)
    else:
        captioned = torch.unique(owner)  # videos that have a caption group
        by_video = video_to_text_scores(v2t_scores, owner)  # [Nv, Nv]
        groups = by_video[captioned][:, captioned]
        v2t = direction_metrics(groups, torch.arange(len(captioned)), ties)
    return {"t2v": t2v, "v2t": v2t}
