"""One video's cache entry, typed, and its rows of features once read from a shard.

On disk an entry is one JSON object in a shard's ``entries`` metadata, with the keys in this
order: video_id, path, captions, split, size, mtime_ns, hash, row, reason, message, notes, then
``duration_s`` and ``windows`` where present (a long video has both; a compacted shard gives
every indexed entry a ``windows`` list, empty for a short video). :meth:`CacheEntry.to_json`
writes exactly that, so the shards' bytes do not depend on which code wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from emcl.data.datasets import VideoRecord
from emcl.data.gallery.hashing import NO_STAT, FileStat
from emcl.data.windows import Span

# the placeholder reason of a merge step's record whose part never wrote it (not a cache entry)
NOT_EXTRACTED = "not_extracted"


@dataclass(frozen=True)
class WindowRow:
    """One window of a long video: its tensor row in the shard and its span in seconds."""

    row: int
    span: Span

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "span": list(self.span)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WindowRow:
        return cls(d["row"], tuple(d["span"]))  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """What the cache knows of one video: the file it came from, and either its tensor row
    (``row``; windows too for a long video) or why it has none (``reason``, ``message``)."""

    video_id: str
    path: str
    captions: tuple[str, ...] = ()
    split: str = "all"
    stat: FileStat = NO_STAT
    row: int | None = None
    reason: str = ""
    message: str = ""
    notes: tuple[str, ...] = ()  # indexed, with warnings (e.g. frames repaired)
    duration_s: float | None = None  # long videos only
    windows: tuple[WindowRow, ...] | None = None  # None: the key is absent on disk

    @classmethod
    def for_record(cls, record: VideoRecord, stat: FileStat | None, **fields: Any) -> CacheEntry:
        """An entry of ``record`` (``stat`` None: the file is missing); ``fields`` as above."""
        return cls(
            video_id=record.video_id,
            path=str(record.path),
            captions=tuple(record.captions),
            split=record.split,
            stat=stat or NO_STAT,
            **fields,
        )

    @property
    def indexed(self) -> bool:
        return self.row is not None

    def rows(self) -> list[int]:
        """The tensor rows the entry owns: its whole-video row, then its windows' rows."""
        own = [self.row] if self.row is not None else []
        return own + [w.row for w in self.windows or ()]

    def same_file(self, stat: FileStat | None) -> bool:
        """Whether ``stat`` is that of the file this entry describes."""
        return stat is not None and stat == self.stat

    def record(self) -> VideoRecord:
        return VideoRecord(self.video_id, Path(self.path), list(self.captions), self.split)

    def skip_row(self) -> dict[str, str]:
        """The entry as a line of the report's skipped files."""
        return {
            "video_id": self.video_id, "path": self.path,
            "reason": self.reason, "message": self.message,
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "video_id": self.video_id, "path": self.path, "captions": list(self.captions),
            "split": self.split, **self.stat.to_json(), "row": self.row, "reason": self.reason,
            "message": self.message, "notes": list(self.notes),
        }  # fmt: skip
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        if self.windows is not None:
            out["windows"] = [w.to_json() for w in self.windows]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CacheEntry:
        """Raises KeyError or TypeError on an entry without its file's identity."""
        windows = d.get("windows")
        return cls(
            video_id=d["video_id"],
            path=d["path"],
            captions=tuple(d.get("captions", ())),
            split=d.get("split", "all"),
            stat=FileStat(d["size"], d["mtime_ns"], d["hash"]),
            row=d.get("row"),
            reason=d.get("reason", ""),
            message=d.get("message", ""),
            notes=tuple(d.get("notes", ())),
            duration_s=d.get("duration_s"),
            windows=None if windows is None else tuple(WindowRow.from_json(w) for w in windows),
        )


@dataclass(frozen=True)
class CachedVideo:
    """An entry with its features (None for an entry without a row)."""

    entry: CacheEntry
    frames: Tensor | None  # [T, D]
    video: Tensor | None  # [D]
    windows: tuple[tuple[Span, Tensor, Tensor], ...] = ()  # span, [T, D], [D]


def cached_rows(entry: CacheEntry, frames: Tensor, video: Tensor) -> CachedVideo:
    """``entry`` with its rows taken from a shard's ``frames`` [B, T, D] and ``video`` [B, D]."""
    if entry.row is None:
        return CachedVideo(entry, None, None)
    spans = tuple((w.span, frames[w.row], video[w.row]) for w in entry.windows or ())
    return CachedVideo(entry, frames[entry.row], video[entry.row], spans)


__all__ = ["NOT_EXTRACTED", "CacheEntry", "CachedVideo", "WindowRow", "cached_rows"]
