"""What the explorer's services return: plain data the UI renders and the API serialises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emcl.core.subspace import Alignment, Grounding
from emcl.explorer.knobs import Knobs
from emcl.retrieval.ranking import Hit

METRIC_KEYS = ("R1", "R5", "R10", "MdR", "MnR")


@dataclass(frozen=True)
class SearchResult:
    query: str
    knobs: Knobs
    base: list[Hit]
    emcl: list[Hit]
    effective_k: int
    context: str
    em_rows: int
    ms: float
    targets: tuple[str, ...]  # ground-truth ids when the query is a known caption
    target_rank: dict[str, int | None]  # best ground-truth rank per column ("base", "emcl")
    notices: list[str]
    gallery_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "mode": self.knobs.mode,
            "base": [hit.to_json() for hit in self.base],
            "emcl": [hit.to_json() for hit in self.emcl],
            "effective_k": self.effective_k,
            "context": self.context,
            "em_rows": self.em_rows,
            "ms": round(self.ms, 3),
            "ground_truth": list(self.targets),
            "ground_truth_rank": self.target_rank,
            "notices": self.notices,
            "gallery_size": self.gallery_size,
        }


@dataclass(frozen=True)
class MetricsResult:
    rows: list[tuple[str, dict[str, dict[str, float]]]]  # (label, {"t2v": ..., "v2t": ...})
    n_texts: int
    n_videos: int
    effective_k: int  # of one representative EM block
    protocol: str  # says which rows share one EM run
    ms: float

    def table(self) -> list[list[Any]]:
        """Rows for a table: label, then t2v and v2t R1, R5, R10, MdR, MnR."""
        return [
            [label] + [round(m[d][k], 1) for d in ("t2v", "v2t") for k in METRIC_KEYS]
            for label, m in self.rows
        ]


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


@dataclass(frozen=True)
class GroundingAverage:
    auto: Grounding  # each word linked in its dominant subspace
    full: Grounding  # the same words linked in the full space
    pairs: int


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
    "SearchResult",
    "SweepResult",
]
