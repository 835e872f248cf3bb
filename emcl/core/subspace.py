"""Figure 1 of the supplement: which frames and words meet in an EMCL semantic subspace.

The paper does not say how its figure was made (docs/method.md §5). This module fixes one precise
construction, consistent with the EM's semantics (subspaces are soft groups of feature
*channels*; docs/method.md §1.1):

1. Tokens. Frames ``F`` ``[T, D]``: the video's per-frame features after temporal aggregation
   (the gallery's frame embeddings). Words ``W`` ``[L, D]``: the caption's projected token
   states, BPE pieces averaged per word, tokens without a letter or digit dropped. Every token
   is L2-normalised.
2. Subspaces. One EM run with the current knobs (K, iterations, λ, init, seed; never a prior
   update) on ``X = [F; W]`` ``[T + L, D]`` gives the column-normalised responsibilities
   ``z`` ``[D, K]``. Subspace k weights channel j by ``y_k[j] = z[j, k] / max_j z[j, k]``
   (in [0, 1]). Columns whose weight profiles differ by at most ``GROUP_TOL`` (max abs) are one
   *distinct* subspace (the reference initialisation gives ≤ 2 of them; docs/method.md §1.5).
3. In-subspace similarity ``s_k(i, j) = cos(f_i ⊙ y_k, w_j ⊙ y_k)``; the full space is
   ``cos(f_i, w_j)``.
4. Links. Every word j links to its closest frame ``argmax_i s_k(i, j)``, labelled with ``s_k``.
5. Loadings. Token x loads on subspace k with ``e_k(x) = Σ_j y_k[j] x_j² / Σ_j y_k[j]`` (its
   mean squared coordinate on the subspace's channels); the heatmaps show the shares over the
   distinct subspaces. "Auto" links each word in its dominant subspace ``argmax_k e_k(w_j)``.
6. Grounding (worlds with per-frame ground truth). A link is correct when its frame shows the
   concept the word names; words that name no concept are not scored. Chance is the share of
   the video's frames that show the concept (the expected score of a random frame).

Zero rows are exactly neutral in the EM (they add nothing to ``X^T mu`` nor to the basis norms),
so pairs of different lengths run batched with zero padding (:func:`align_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import EMParams, effective_k, rec_ratios

GROUP_TOL = 1e-2  # max abs difference of two normalised weight profiles in one distinct subspace
_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Subspaces from one EM run
# --------------------------------------------------------------------------------------------
def channel_weights(z: Tensor) -> Tensor:
    """``z`` ``[..., D, K]`` -> weights ``[..., K, D]``: each column scaled to a maximum of 1."""
    top = z.amax(dim=-2, keepdim=True).clamp(min=_EPS)  # [..., 1, K]
    return (z / top).mT


def distinct_subspaces(weights: Tensor, tol: float = GROUP_TOL) -> list[list[int]]:
    """Group the K subspaces of ``weights`` ``[K, D]`` whose profiles agree within ``tol``.

    Greedy in column order: each group is the first unassigned column and every later one
    within ``tol`` (max abs difference) of it. Returns the member columns of each group.
    """
    groups: list[list[int]] = []
    leaders: list[int] = []
    for k in range(weights.shape[0]):
        for group, lead in zip(groups, leaders, strict=True):
            if float((weights[k] - weights[lead]).abs().max()) <= tol:
                group.append(k)
                break
        else:
            groups.append([k])
            leaders.append(k)
    return groups


def subspace_similarity(frames: Tensor, words: Tensor, weights: Tensor) -> Tensor:
    """``cos(f_i ⊙ y_k, w_j ⊙ y_k)`` for frames ``[..., T, D]``, words ``[..., L, D]`` and
    weights ``[..., S, D]``; returns ``[..., S, T, L]`` without forming the masked tokens."""
    w2 = weights.square()  # [..., S, D]
    dot = torch.einsum("...td,...sd,...ld->...stl", frames, w2, words)
    f_norm = (frames.square() @ w2.mT).clamp(min=0).sqrt()  # [..., T, S]
    w_norm = (words.square() @ w2.mT).clamp(min=0).sqrt()  # [..., L, S]
    denom = f_norm.mT.unsqueeze(-1) * w_norm.mT.unsqueeze(-2)  # [..., S, T, L]
    return dot / denom.clamp(min=_EPS)


def full_similarity(frames: Tensor, words: Tensor) -> Tensor:
    """Plain cosines ``[..., T, L]`` (the full space, no subspaces)."""
    return F.normalize(frames, dim=-1) @ F.normalize(words, dim=-1).mT


def loadings(tokens: Tensor, weights: Tensor) -> Tensor:
    """``e_k(x)`` for tokens ``[..., N, D]`` and weights ``[..., S, D]`` -> ``[..., N, S]``."""
    return (tokens.square() @ weights.mT) / weights.sum(dim=-1).clamp(min=_EPS).unsqueeze(-2)


def shares(values: Tensor) -> Tensor:
    """Normalise non-negative loadings ``[..., N, S]`` to shares over the last axis."""
    return values / values.sum(dim=-1, keepdim=True).clamp(min=_EPS)


def closest_frames(similarity: Tensor) -> tuple[Tensor, Tensor]:
    """For ``[..., T, L]``: each word's closest frame ``[..., L]`` and that similarity."""
    best, frame = similarity.max(dim=-2)
    return frame, best


# --------------------------------------------------------------------------------------------
# One video-caption pair
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alignment:
    """Everything the subspace view draws for one (video, caption) pair."""

    words: list[str]
    weights: Tensor  # [S, D] one weight profile per distinct subspace
    groups: list[list[int]]  # [S] the EM columns in each distinct subspace
    similarity: Tensor  # [S, T, L] in-subspace cosines
    full: Tensor  # [T, L] full-space cosines
    frame_loadings: Tensor  # [T, S] shares
    word_loadings: Tensor  # [L, S] shares
    dominant: Tensor  # [L] each word's dominant distinct subspace
    auto: tuple[Tensor, Tensor]  # ([L] frame, [L] similarity) in each word's dominant subspace
    effective_k: int  # numerical rank of z (docs/design.md)
    width: Tensor  # [S] channels each subspace spreads over (perplexity of its z column)
    rec_ratio: float = 0.0  # median over the rows of |β μ z^T| / |x| (EMCL's size)

    @property
    def n_subspaces(self) -> int:
        return len(self.groups)

    def links(self, subspace: int | None) -> tuple[Tensor, Tensor]:
        """(frame per word ``[L]``, similarity ``[L]``) in subspace ``subspace`` (0-based), in
        each word's dominant subspace for ``-1``, or in the full space for ``None``."""
        if subspace is None:
            return closest_frames(self.full)
        if subspace == -1:
            return self.auto
        if not 0 <= subspace < self.n_subspaces:
            raise ValueError(f"subspace must be in [1, {self.n_subspaces}], got {subspace + 1}")
        return closest_frames(self.similarity[subspace])


def keep_word(word: str) -> bool:
    """Words drawn in the figure: anything with a letter or digit (punctuation is dropped)."""
    return any(ch.isalnum() for ch in word)


def align(
    frames: Tensor,
    words: Tensor,
    word_text: Sequence[str],
    params: EMParams,
    prior: Tensor | None = None,
) -> Alignment:
    """Subspaces and links for frames ``[T, D]`` and words ``[L, D]`` (see the module doc)."""
    if frames.dim() != 2 or words.dim() != 2 or frames.shape[-1] != words.shape[-1]:
        raise ValueError(
            f"need frames [T, D] and words [L, D], got {tuple(frames.shape)}, {tuple(words.shape)}"
        )
    if len(word_text) != words.shape[0]:
        raise ValueError(f"{len(word_text)} word strings for {words.shape[0]} word vectors")
    if words.shape[0] == 0:
        raise ValueError("the caption has no words to align")
    f = F.normalize(frames.float(), dim=-1)  # [T, D]
    w = F.normalize(words.float(), dim=-1)  # [L, D]
    stacked = torch.cat([f, w])  # [T + L, D] unit-norm rows
    result = params.run(stacked, prior if params.init == "prior" else None)
    z = result.z  # [D, K]
    rec_ratio = float(rec_ratios(stacked, result.reconstruction, params.beta).median())
    all_weights = channel_weights(z)  # [K, D]
    groups = distinct_subspaces(all_weights)
    group_of = torch.empty(all_weights.shape[0], dtype=torch.long)  # [K] column -> group
    for g, members in enumerate(groups):
        group_of[members] = g
    weights = all_weights[[g[0] for g in groups]]  # [S, D]
    column = z[:, [g[0] for g in groups]].clamp(min=_EPS)  # [D, S]
    column = column / column.sum(dim=0, keepdim=True)
    width = torch.exp(-(column * column.log()).sum(dim=0))  # [S] perplexity
    # Auto links use the EM's own columns (as align_batch does); near-duplicate columns of one
    # distinct subspace give the same links up to GROUP_TOL.
    column_dominant = loadings(w, all_weights).argmax(dim=-1)  # [L]
    frame, best = closest_frames(subspace_similarity(f, w, all_weights))  # [K, L] each
    pick = column_dominant[None]
    return Alignment(
        words=list(word_text),
        weights=weights,
        groups=groups,
        similarity=subspace_similarity(f, w, weights),
        full=full_similarity(f, w),
        frame_loadings=shares(loadings(f, weights)),
        word_loadings=shares(loadings(w, weights)),
        dominant=group_of[column_dominant],
        auto=(frame.gather(0, pick)[0], best.gather(0, pick)[0]),
        effective_k=int(effective_k(z)) if params.iters > 0 else 0,
        width=width,
        rec_ratio=rec_ratio,
    )


@dataclass(frozen=True)
class BatchLinks:
    """Links of many pairs at once: ``[B, L]`` frames per word (auto and full space)."""

    auto: Tensor  # [B, L] closest frame in each word's dominant subspace
    full: Tensor  # [B, L] closest frame in the full space


def align_batch(
    frames: Tensor, words: Tensor, word_mask: Tensor, params: EMParams, prior: Tensor | None = None
) -> BatchLinks:
    """Auto and full-space links for ``B`` pairs: frames ``[B, T, D]``, words ``[B, L, D]``
    zero-padded with ``word_mask`` ``[B, L]``. Same EM per pair as :func:`align` (zero rows
    are neutral); duplicate subspaces need no grouping here since they tie exactly."""
    f = F.normalize(frames.float(), dim=-1)  # [B, T, D]
    w = F.normalize(words.float(), dim=-1) * word_mask[..., None]  # [B, L, D]
    result = params.run(torch.cat([f, w], dim=1), prior if params.init == "prior" else None)
    weights = channel_weights(result.z)  # [B, K, D]
    dominant = loadings(w, weights).argmax(dim=-1)  # [B, L]
    frame, _ = closest_frames(subspace_similarity(f, w, weights))  # [B, K, L]
    auto = frame.gather(1, dominant[:, None])[:, 0]  # [B, L]
    full, _ = closest_frames(full_similarity(f, w))
    return BatchLinks(auto=auto, full=full)


# --------------------------------------------------------------------------------------------
# Grounding score against per-frame ground truth
# --------------------------------------------------------------------------------------------
def normalise_word(word: str) -> str:
    """Lower-case letters only (how lexicon.json keys are matched)."""
    return "".join(ch for ch in word.lower() if ch.isalpha())


@dataclass(frozen=True)
class Grounding:
    """Scored links: ``hits`` of ``scored`` concept words; ``chance`` is the expected hits of a
    random frame. ``correct[j]`` is True/False for scored words and None otherwise."""

    hits: int
    scored: int
    chance: float
    correct: list[bool | None]

    @property
    def score(self) -> float | None:
        return self.hits / self.scored if self.scored else None

    @property
    def chance_score(self) -> float | None:
        return self.chance / self.scored if self.scored else None


def grounding(
    words: Sequence[str],
    linked_frames: Sequence[int],
    frame_concepts: Sequence[Sequence[str]],
    lexicon: Mapping[str, str],
    informative_only: bool = True,
) -> Grounding:
    """Score links ``word j -> frame linked_frames[j]`` against ``frame_concepts[t]``.

    With ``informative_only`` a word is scored only if its concept is visible in some but not
    all of the clip's frames: a concept every frame shows is linked correctly by any frame,
    so it cannot tell a grounding from chance (docs/method.md §5)."""
    if len(words) != len(linked_frames):
        raise ValueError(f"{len(words)} words but {len(linked_frames)} links")
    n_frames = len(frame_concepts)
    if n_frames == 0:
        raise ValueError("no frames to score against")
    visible = [set(c) for c in frame_concepts]
    hits, scored, chance = 0, 0, 0.0
    correct: list[bool | None] = []
    for word, frame in zip(words, linked_frames, strict=True):
        concept = lexicon.get(normalise_word(word))
        if concept is None:
            correct.append(None)
            continue
        if not 0 <= int(frame) < n_frames:
            raise ValueError(f"linked frame {frame} outside [0, {n_frames})")
        showing = sum(concept in v for v in visible)
        if informative_only and not 0 < showing < n_frames:
            correct.append(None)
            continue
        ok = concept in visible[int(frame)]
        correct.append(ok)
        hits += ok
        scored += 1
        chance += showing / n_frames
    return Grounding(hits, scored, chance, correct)


def total(scores: Sequence[Grounding]) -> Grounding:
    """Pool many pairs' scores (micro-average: every scored link weighs one)."""
    return Grounding(
        hits=sum(s.hits for s in scores),
        scored=sum(s.scored for s in scores),
        chance=sum(s.chance for s in scores),
        correct=[],
    )


def bootstrap_interval(
    scores: Sequence[Grounding], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the pooled score, resampling pairs (a pair's links are
    not independent of each other, so the pair is the unit). ``None`` without scored links."""
    hits = torch.tensor([float(s.hits) for s in scores], dtype=torch.float64)
    scored = torch.tensor([float(s.scored) for s in scores], dtype=torch.float64)
    if len(scores) == 0 or scored.sum() == 0:
        return None
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(scores), (resamples, len(scores)), generator=generator)
    pooled = hits[picks].sum(1) / scored[picks].sum(1).clamp(min=1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(pooled, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(low), float(high)


__all__ = [
    "GROUP_TOL",
    "Alignment",
    "BatchLinks",
    "Grounding",
    "align",
    "align_batch",
    "bootstrap_interval",
    "channel_weights",
    "closest_frames",
    "distinct_subspaces",
    "full_similarity",
    "grounding",
    "keep_word",
    "loadings",
    "normalise_word",
    "shares",
    "subspace_similarity",
    "total",
]
