"""What the explorer's services return: plain data the UI renders and the API serialises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emcl.core.subspace import Alignment, Grounding
from emcl.explorer.knobs import Knobs
from emcl.retrieval.ranking import Hit

METRIC_KEYS = ("R1", "R5", "R10", "MdR", "MnR")
Progress = Callable[[float, str], None]  # progress(fraction done, what is running)


def no_progress(fraction: float, message: str) -> None:
    """The :data:`Progress` of a caller that shows none."""
    return None


@dataclass(frozen=True)
class SearchResult:
    query: str
    knobs: Knobs
    base: list[Hit]
    emcl: list[Hit]
    effective_k: int
    context: str
    em_rows: int
    rec_ratio: float  # median over the search EM's rows of |β μ z^T| / |x|
    ms: float
    targets: tuple[str, ...]  # ground-truth ids when the query is a known caption
    target_rank: dict[str, int | None]  # best ground-truth rank per column ("base", "emcl")
    notices: list[str]
    gallery_size: int
    protocol: str  # "trained" | "inference": how both columns were scored
    em_run: str  # the EM run behind the EMCL column and its figures, in words

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "mode": self.knobs.mode,
            "protocol": self.protocol,
            "em_run": self.em_run,
            "base": [hit.to_json() for hit in self.base],
            "emcl": [hit.to_json() for hit in self.emcl],
            "effective_k": self.effective_k,
            "context": self.context,
            "em_rows": self.em_rows,
            "rec_ratio": self.rec_ratio,
            "ms": round(self.ms, 3),
            "ground_truth": list(self.targets),
            "ground_truth_rank": self.target_rank,
            "notices": self.notices,
            "gallery_size": self.gallery_size,
        }


@dataclass(frozen=True)
class MetricsResult:
    knobs: Knobs  # the knobs these rows were computed with
    rows: list[tuple[str, dict[str, dict[str, float]]]]  # (label, {"t2v": ..., "v2t": ...})
    n_texts: int
    n_videos: int
    effective_k: int  # median over the EM blocks (trained), or of the first block (inference)
    rec_ratio: float  # median over the EM's rows of |β μ z^T| / |x|
    protocol: str  # "trained" | "inference"
    description: str  # says which rows share one EM run
    ms: float

    def table(self) -> list[list[Any]]:
        """Rows for a table: label, then t2v and v2t R1, R5, R10, MdR, MnR."""
        return [
            [label] + [round(m[d][k], 1) for d in ("t2v", "v2t") for k in METRIC_KEYS]
            for label, m in self.rows
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "description": self.description,
            "knobs": self.knobs.to_dict(),
            "rows": {label: m for label, m in self.rows},
            "captions": self.n_texts,
            "videos": self.n_videos,
            "effective_k": self.effective_k,
            "rec_ratio": self.rec_ratio,
            "ms": round(self.ms, 3),
        }


@dataclass(frozen=True)
class SweepResult:
    name: str
    values: list[float]
    series: dict[str, list[dict[str, dict[str, float]]]]  # label -> metrics per value
    reference: dict[str, dict[str, dict[str, float]]]  # label -> metrics without EM
    notes: list[str]


@dataclass(frozen=True)
class AlignResult:
    video_id: str
    caption: str
    alignment: Alignment
    grounding: dict[str, Grounding | None]  # "auto", "full", "s1".. -> score (demo world only)
    truncated: bool
    dropped_words: list[str]  # punctuation left out of the figure
    words: str = "tokens"  # the word encoding used: "tokens" | "alone"


@dataclass(frozen=True)
class GroundingAverage:
    """Grounding pooled over the test split's (video, first caption) pairs, one word encoding."""

    words: str  # the word encoding: "tokens" | "alone"
    auto: Grounding  # each word linked in its dominant subspace
    full: Grounding  # the same words linked in the full space
    pairs: int
    auto_interval: tuple[float, float] | None  # 95 % bootstrap interval over pairs
    full_interval: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "pairs": self.pairs,
            "scored_links": self.auto.scored,
            "subspaces": self.auto.score,
            "subspaces_95ci": self.auto_interval,
            "full_space": self.full.score,
            "full_space_95ci": self.full_interval,
            "chance": self.auto.chance_score,
        }


@dataclass(frozen=True)
class MapResult:
    coords_before: np.ndarray  # [N, 2]
    coords_after: np.ndarray  # [N, 2]
    modality: list[str]  # [N] "video" | "text"
    item_ids: list[str]  # [N] "video:<id>" | "text:<caption index>"
    labels: list[str]  # [N] hover text
    gap_before: float
    gap_after: float
    method: str
    note: str


__all__ = [
    "METRIC_KEYS",
    "AlignResult",
    "GroundingAverage",
    "MapResult",
    "MetricsResult",
    "Progress",
    "SearchResult",
    "SweepResult",
    "no_progress",
]
