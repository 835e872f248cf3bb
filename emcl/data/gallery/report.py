"""What an indexing run did, and the files it leaves beside the cache: ``report.json`` and
``report.txt`` (a whole build) or ``parts/<part>.json`` (one process of a sharded run)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emcl.fileio import atomic_write


@dataclass
class GalleryReport:
    """What an indexing run did: counts, timings and every skipped file with its reason."""

    total: int = 0
    reused: int = 0  # taken from the cache
    extracted: int = 0  # decoded and encoded in this run
    skipped: list[dict[str, str]] = field(default_factory=list)  # video_id, path, reason, message
    warnings: list[dict[str, str]] = field(
        default_factory=list
    )  # indexed, but e.g. frames repaired
    corrupt_shards: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cache_dir: str = ""

    @property
    def indexed(self) -> int:
        return self.reused + self.extracted

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s["reason"]] = out.get(s["reason"], 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"indexed": self.indexed, "reasons": self.reasons()}

    def __str__(self) -> str:
        lines = [
            f"gallery: {self.indexed}/{self.total} videos indexed "
            f"({self.reused} from cache, {self.extracted} extracted) in {self.seconds:.1f} s",
        ]
        if self.corrupt_shards:
            lines.append(f"rebuilt {len(self.corrupt_shards)} corrupt cache shard(s)")
        if self.skipped:
            counts = ", ".join(f"{k}: {v}" for k, v in self.reasons().items())
            lines.append(f"skipped {len(self.skipped)} ({counts}):")
            lines += [f"  {s['video_id']}  [{s['reason']}] {s['message']}" for s in self.skipped]
        if self.warnings:
            lines.append(f"indexed with warnings {len(self.warnings)}:")
            lines += [f"  {w['video_id']}  {w['message']}" for w in self.warnings]
        return "\n".join(lines)


def write_report(folder: Path, report: GalleryReport) -> None:
    """``report.json`` and ``report.txt`` of a whole build."""
    atomic_write(folder / "report.json", json.dumps(report.to_json(), indent=1, sort_keys=True))
    atomic_write(folder / "report.txt", str(report) + "\n")


def write_part_report(folder: Path, part: str, report: GalleryReport) -> None:
    """One part's report, which the merge of a sharded run reads (emcl/data/sharding.py)."""
    atomic_write(
        folder / "parts" / f"{part}.json", json.dumps(report.to_json(), indent=1, sort_keys=True)
    )


__all__ = ["GalleryReport", "write_part_report", "write_report"]
