"""The :class:`Gallery` of a build: cached entries put in gallery order, their features stacked
and the skipped files and warnings counted into the report."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emcl.data.datasets import VideoRecord
from emcl.data.gallery.entry import CachedVideo, CacheEntry
from emcl.data.gallery.report import GalleryReport
from emcl.data.windows import GalleryItems, Span, Windows, gallery_items


@dataclass(frozen=True)
class Gallery:
    """Cached features of the indexed videos, in record order (skipped ones left out)."""

    video_ids: list[str]
    records: list[VideoRecord]
    frame_embeddings: Tensor  # [Nv, T, D] fp16
    video_embeddings: Tensor  # [Nv, D] fp16
    report: GalleryReport
    fingerprint: str
    settings: dict[str, Any]
    cache_dir: Path | None = None
    windows: Windows | None = None  # the long videos' windows (None or empty: no long video)

    def __len__(self) -> int:
        return len(self.video_ids)

    def index(self, video_id: str) -> int:
        return self.video_ids.index(video_id)

    def items(self, ids: Sequence[str] | None = None) -> GalleryItems:
        """One embedding row per indexed item (a short video, or a window of a long one) of
        the videos ``ids`` (default: all, in gallery order), with each item's video and span."""
        if ids is None:
            return gallery_items(
                self.video_ids, self.frame_embeddings, self.video_embeddings, self.windows
            )
        where = {v: i for i, v in enumerate(self.video_ids)}
        rows = torch.tensor([where[v] for v in ids], dtype=torch.long)
        return gallery_items(
            list(ids), self.frame_embeddings[rows], self.video_embeddings[rows], self.windows
        )


@dataclass(frozen=True)
class Assembled:
    """A gallery's records, features and windows, in gallery order."""

    records: list[VideoRecord]
    frames: Tensor  # [Nv, T, D] fp16
    video: Tensor  # [Nv, D] fp16
    windows: Windows


@dataclass
class _Pieces:
    """Features gathered in gallery order, concatenated once at the end."""

    records: list[VideoRecord] = field(default_factory=list)
    frames: list[Tensor] = field(default_factory=list)  # [n, T, D] pieces
    video: list[Tensor] = field(default_factory=list)  # [n, D] pieces
    rows_f: list[Tensor] = field(default_factory=list)  # [T, D] rows after the pieces
    rows_v: list[Tensor] = field(default_factory=list)  # [D] rows after the pieces
    window_ids: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    window_f: list[Tensor] = field(default_factory=list)  # [n, T, D] pieces
    window_v: list[Tensor] = field(default_factory=list)  # [n, D] pieces

    def add_base(self, base: Gallery, replaced: set[str]) -> int:
        """The videos of ``base`` not in ``replaced``, in its order; how many."""
        keep = [i for i, v in enumerate(base.video_ids) if v not in replaced]
        self.records += [base.records[i] for i in keep]
        if keep:
            self.frames.append(base.frame_embeddings[keep])
            self.video.append(base.video_embeddings[keep])
        if base.windows is not None and len(base.windows):
            rows = [w for w, v in enumerate(base.windows.video_ids) if v not in replaced]
            self.window_ids += [base.windows.video_ids[w] for w in rows]
            self.spans += [base.windows.spans[w] for w in rows]
            self.window_f.append(base.windows.frame_embeddings[rows])
            self.window_v.append(base.windows.video_embeddings[rows])
        return len(keep)

    def add(self, record: VideoRecord, c: CachedVideo) -> None:
        """One indexed video: its row and its windows' rows."""
        assert c.frames is not None and c.video is not None
        self.records.append(record)
        self.rows_f.append(c.frames)
        self.rows_v.append(c.video)
        for span, f, v in c.windows:
            self.window_ids.append(record.video_id)
            self.spans.append(span)
            self.window_f.append(f[None])
            self.window_v.append(v[None])

    def stack(self, num_frames: int) -> Assembled:
        frames, video = list(self.frames), list(self.video)
        if self.rows_f:
            frames.append(torch.stack(self.rows_f))
            video.append(torch.stack(self.rows_v))
        d_dim = video[0].shape[-1] if video else 0
        fe = torch.cat(frames) if frames else torch.zeros(0, num_frames, d_dim, dtype=torch.float16)
        ve = torch.cat(video) if video else torch.zeros(0, d_dim, dtype=torch.float16)
        if not self.window_ids:
            return Assembled(self.records, fe, ve, Windows.empty(num_frames, d_dim))
        ids, spans = tuple(self.window_ids), tuple(self.spans)
        windows = Windows(ids, spans, torch.cat(self.window_f), torch.cat(self.window_v))
        return Assembled(self.records, fe, ve, windows)


def assemble(
    records: list[VideoRecord],
    cached: dict[str, CachedVideo],
    *,
    report: GalleryReport,
    num_frames: int,
    missing: Collection[str] = (),
    fresh: Collection[str] = (),
    base: Gallery | None = None,
) -> Assembled:
    """The base gallery's other videos first (add_videos), then ``records`` in order; every
    record not ``missing`` is in ``cached`` (features or a skip reason). Skips, warnings and
    counts (``fresh``: extracted in this run) go to ``report``."""
    pieces = _Pieces()
    if base is not None:
        kept = pieces.add_base(base, {r.video_id for r in records})
        report.total += kept
        report.reused += kept
    for r in records:
        if r.video_id in missing:
            gone = CacheEntry.for_record(r, None, reason="missing", message="file not found")
            report.skipped.append(gone.skip_row())
            continue
        c = cached[r.video_id]
        if not c.entry.indexed:
            report.skipped.append(c.entry.skip_row())
            continue
        if c.entry.notes:
            report.warnings.append({"video_id": r.video_id, "message": "; ".join(c.entry.notes)})
        if r.video_id in fresh:
            report.extracted += 1
        else:
            report.reused += 1
        pieces.add(r, c)
    return pieces.stack(num_frames)


__all__ = ["Assembled", "Gallery", "assemble"]
