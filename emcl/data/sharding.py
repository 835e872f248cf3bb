"""Sharded feature extraction: N processes (``torchrun``, one or many nodes) fill one cache.

Each rank takes a disjoint, deterministic share of the records (:func:`shard_records`: the
ids sorted, every ``world``-th from ``rank``) and runs :func:`~emcl.data.gallery.build_gallery`
on it as a *part*: its shards (one per batch, written atomically through emcl/fileio.py) land
in the shared cache folder, nothing is compacted, and its report goes to
``parts/rank-<r>-of-<w>.json``. After a barrier, rank 0 *merges*: it reads every shard (no
decoding), lists what could not be indexed (corrupt files with their reasons, and the videos of
a part that failed), compacts and writes the one ``manifest.json`` and report.

A killed run resumes: run the same command again and every video already in a shard is
reused. A rank that fails (an exception, not a kill) still reaches the barrier, so the others'
work merges; its videos are reported as ``not_extracted`` and the command exits non-zero.
Without a shared filesystem, copy every node's ``shard-*.safetensors`` into one folder and
run the merge alone (``python -m emcl extract ... --merge-only``).
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import Gallery, GalleryReport, VideoEncoder, build_gallery, cache_folder
from emcl.fileio import atomic_write_json

BARRIER_TIMEOUT = timedelta(hours=24)  # ranks that finish early wait for the slowest one


@dataclass(frozen=True)
class Rank:
    """This process's place in the run (``torchrun`` sets RANK and WORLD_SIZE)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Rank:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def part(self) -> str:
        return f"rank-{self.rank}-of-{self.world}"


def shard_records(records: Sequence[VideoRecord], rank: int, world: int) -> list[VideoRecord]:
    """Rank ``rank``'s share: the records sorted by id, every ``world``-th one from ``rank``.
    The shares are disjoint, cover every record and differ in size by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank {rank}, world {world}")
    return sorted(records, key=lambda r: r.video_id)[rank::world]


@dataclass
class MergeResult:
    """The merged gallery, and what each part reported."""

    gallery: Gallery
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # part -> its report
    failed: list[str] = field(default_factory=list)  # parts that raised or never reported

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "report": self.gallery.report.to_json(),
            "parts": self.parts,
            "failed_parts": self.failed,
            "items": len(self.gallery.items()),
        }

    def __str__(self) -> str:
        lines = [str(self.gallery.report)]
        for name in self.failed:
            error = self.parts.get(name, {}).get("error", "no report: killed or still running")
            lines.append(f"part {name} failed: {error.strip().splitlines()[-1]}")
        return "\n".join(lines)


def extract_part(
    records: Sequence[VideoRecord],
    encoder: VideoEncoder,
    cache_dir: str | os.PathLike,
    rank: Rank,
    **options: Any,
) -> GalleryReport | None:
    """Index this rank's share into the shared cache; ``None`` if it failed (the error is in
    its part report, so the merge can say why)."""
    folder = cache_folder(cache_dir, encoder, **options) / "parts"
    report_path = folder / f"{rank.part}.json"
    report_path.unlink(missing_ok=True)  # a stale "done" from an earlier run must not count
    mine = shard_records(records, rank.rank, rank.world)
    try:
        return build_gallery(mine, encoder, cache_dir, part=rank.part, **options).report
    except Exception:
        atomic_write_json(report_path, {"error": traceback.format_exc()}, indent=1)
        return None


def merge_parts(
    records: Sequence[VideoRecord],
    encoder: VideoEncoder,
    cache_dir: str | os.PathLike,
    world: int | None = None,
    **options: Any,
) -> MergeResult:
    """The gallery of every record from the shards on disk (nothing decoded); writes the one
    manifest and report. ``world``: how many parts to expect reports from (None: as many as
    the newest part report on disk names)."""
    options = {k: v for k, v in options.items() if k not in ("part", "extract")}
    folder = cache_folder(cache_dir, encoder, **options) / "parts"
    world = world or _last_world(folder)
    gallery = build_gallery(records, encoder, cache_dir, extract=False, **options)
    result = MergeResult(gallery)
    for r in range(world):
        name = Rank(r, world).part
        path = folder / f"{name}.json"
        try:
            result.parts[name] = json.loads(path.read_text())
        except (OSError, ValueError):
            result.failed.append(name)
            continue
        if "error" in result.parts[name]:
            result.failed.append(name)
    if gallery.cache_dir is not None:
        atomic_write_json(gallery.cache_dir / "merge.json", result.to_json(), indent=1)
    return result


def _last_world(folder: Path) -> int:
    """The ``N`` of the newest ``rank-R-of-N.json`` in ``folder`` (1 if there is none)."""
    reports = sorted(folder.glob("rank-*-of-*.json"), key=lambda p: p.stat().st_mtime_ns)
    if not reports:
        return 1
    return int(reports[-1].stem.rsplit("-", 1)[-1])


def run(
    records: Sequence[VideoRecord],
    encoder: VideoEncoder,
    cache_dir: str | os.PathLike,
    **options: Any,
) -> MergeResult | None:
    """One rank of a sharded extraction (or the whole of it, without ``torchrun``): extract
    this rank's share, wait for every rank, and on rank 0 merge. Returns the merge on rank 0."""
    import torch.distributed as dist

    rank = Rank.from_env()
    joined = rank.world > 1 and not dist.is_initialized()
    if joined:  # gloo: only a barrier is needed, on CPU or GPU nodes alike
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        extract_part(records, encoder, cache_dir, rank, **options)
        if rank.world > 1:
            dist.barrier()
        if rank.rank != 0:
            return None
        return merge_parts(records, encoder, cache_dir, rank.world, **options)
    finally:
        if joined:
            dist.destroy_process_group()


__all__ = ["MergeResult", "Rank", "extract_part", "merge_parts", "run", "shard_records"]
