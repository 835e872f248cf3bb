"""The item index of a gallery with long videos: one row per short video or window.

Search ranks it with :func:`~emcl.retrieval.ranking.rank_query` (``items=``), so a video's
score is its best window's and a hit names the window's span; the subspace view reads a
window's frame features with :meth:`MomentIndex.frames_of`. Built from a gallery's
``items()`` (emcl/data/windows.py); videos without windows are rows of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import ItemMap, Span


@dataclass(frozen=True)
class MomentIndex:
    index: GalleryIndex  # over item rows (ids repeat: a long video's windows)
    items: ItemMap  # item row -> (video position, span)
    frames: Tensor  # [Ni, T, D] per-frame features of every item

    @classmethod
    def build(
        cls,
        video_ids: Sequence[str],  # [Ni] each item's video
        video_rows: Tensor,  # [Ni] each item's video position
        spans: Sequence[Span | None],  # [Ni]
        frames: Tensor,  # [Ni, T, D]
        videos: Tensor,  # [Ni, D]
    ) -> MomentIndex:
        index = GalleryIndex.build(list(video_ids), videos.float())
        return cls(index, ItemMap(video_rows, tuple(spans)), frames)

    def window(self, position: int, span: Span) -> tuple[Span, Tensor]:
        """The window of video ``position`` closest to ``span`` (start and end in seconds):
        its exact span and frame features ``[T, D]``; ValueError if it has no windows."""
        rows = (self.items.video_rows == position).nonzero().flatten().tolist()
        windows = [(r, w) for r in rows if (w := self.items.spans[r]) is not None]
        if not windows:
            raise ValueError("this video is indexed whole (it has no windows): clear the window")
        row, best = min(windows, key=lambda w: abs(w[1][0] - span[0]) + abs(w[1][1] - span[1]))
        return best, self.frames[row]

    def spans_of(self, position: int) -> list[Span]:
        """The windows of video ``position``, in time order (``[]``: indexed whole)."""
        rows = (self.items.video_rows == position).nonzero().flatten().tolist()
        return [s for r in rows if (s := self.items.spans[r]) is not None]


def parse_span(text: object) -> Span | None:
    """``"60-70"``, ``"60–70 s"`` or ``"60,70"`` -> ``(60.0, 70.0)``; empty -> None (the whole
    video). ValueError for anything else."""
    if text is None or not str(text).strip():
        return None
    cleaned = str(text).strip().removesuffix("s").strip()
    for sep in ("–", ",", "-"):
        if sep in cleaned:
            start, _, end = cleaned.partition(sep)
            try:
                span = (float(start), float(end))
            except ValueError:
                break
            if all(map(math.isfinite, span)) and 0 <= span[0] < span[1]:
                return span
            break
    raise ValueError(f"a window is 'start-end' in seconds, e.g. 60-70; got {str(text)[:40]!r}")


def format_span(span: Span | None) -> str:
    """``(60.0, 70.0)`` -> ``"60–70 s"``; None -> ``""``."""
    return "" if span is None else f"{span[0]:g}–{span[1]:g} s"


__all__ = ["MomentIndex", "format_span", "parse_span"]
