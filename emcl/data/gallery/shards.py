"""The cache folder's files: shards, their loading and compaction, and the manifest.

A shard is one safetensors file: tensors ``frames`` [B, T, D] and ``video`` [B, D] (fp16) plus
metadata: the entries (JSON, emcl/data/gallery/entry.py), a SHA-256 of the tensor bytes and the
cache version. Every file is written through :mod:`emcl.fileio` (temp name, fsync, rename), so
an interrupted run leaves only complete shards; a shard that fails to load or whose checksum
differs is deleted and its videos are recomputed (docs/reliability.md §4).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from emcl.data.gallery.entry import NOT_EXTRACTED, CachedVideo, CacheEntry, WindowRow, cached_rows
from emcl.data.gallery.hashing import tensor_digest
from emcl.data.gallery.report import GalleryReport
from emcl.fileio import atomic_output, atomic_write

CACHE_VERSION = 2  # 2: window rows, a sampled content hash
COMPACT_AFTER = 16  # shards: beyond this, a finished build merges them into one
_shard_counter = itertools.count()


def write_shard(
    folder: Path, entries: list[CacheEntry], frames: Tensor, video: Tensor, *, tag: str = ""
) -> Path:
    """One shard of ``entries`` with their rows ``frames`` [B, T, D] and ``video`` [B, D].
    ``tag`` (e.g. "r3", the rank) keeps names unique across hosts sharing one folder."""
    tensors = {"frames": frames.contiguous(), "video": video.contiguous()}
    meta = {
        "entries": json.dumps([e.to_json() for e in entries]),
        "sha256": tensor_digest(tensors),
        "version": str(CACHE_VERSION),
    }
    suffix = f"-{tag}" if tag else ""
    name = f"shard-{time.time_ns()}-{os.getpid()}-{next(_shard_counter)}{suffix}.safetensors"
    with atomic_output(folder / name) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return folder / name


def read_shard(
    path: Path, wanted: set[str] | None = None
) -> tuple[list[CacheEntry], dict[str, Tensor] | None]:
    """Entries and tensors of one shard; raises ValueError if it is damaged in any way.
    With ``wanted`` ids, a shard holding none of them is not read beyond its header
    (tensors ``None``): one rank of a sharded run reads only its own share."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            entries = [CacheEntry.from_json(e) for e in json.loads(meta["entries"])]
            if wanted is not None and not any(e.video_id in wanted for e in entries):
                return entries, None
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises several types on truncated/garbled files
        raise ValueError(f"{path.name}: unreadable ({type(e).__name__}: {e})") from e
    if meta.get("sha256") != tensor_digest(tensors):
        raise ValueError(f"{path.name}: checksum mismatch")
    rows = sum(len(e.rows()) for e in entries)
    if (
        set(tensors) != {"frames", "video"}
        or len(tensors["video"]) != rows
        or len(tensors["frames"]) != rows
    ):
        raise ValueError(f"{path.name}: entries and tensors disagree")
    return entries, tensors


def load_cache(
    folder: Path, report: GalleryReport, wanted: set[str] | None = None
) -> dict[str, CachedVideo]:
    """Every valid entry in ``folder`` by video id (later shards win); damaged shards deleted.
    ``wanted``: only shards holding one of these ids are read (entries of other ids may come
    along with them)."""
    cached: dict[str, CachedVideo] = {}
    for path in sorted(shard_paths(folder), key=lambda p: _shard_order(p.name)):
        try:
            entries, t = read_shard(path, wanted)
        except ValueError as e:
            report.corrupt_shards.append(str(e))
            path.unlink(missing_ok=True)
            continue
        if t is None:
            continue
        for e in entries:
            cached[e.video_id] = cached_rows(e, t["frames"], t["video"])
    return cached


def shard_paths(folder: Path) -> list[Path]:
    return list(folder.glob("shard-*.safetensors"))


def _shard_order(name: str) -> tuple[int, ...]:
    """Write order: the time, pid and counter in the name (a tag is not a number)."""
    parts = name.removeprefix("shard-").removesuffix(".safetensors").split("-")
    return tuple(int(p) for p in parts if p.isdigit())


def needs_compaction(folder: Path) -> bool:
    return len(shard_paths(folder)) > COMPACT_AFTER


def compact(folder: Path, cached: dict[str, CachedVideo]) -> None:
    """Merge every shard into one, so a reload opens one file. The merged shard is written
    (atomically) before the old ones are deleted; a crash in between leaves duplicates with
    equal content, which the loader resolves (later shards win)."""
    old = shard_paths(folder)
    entries: list[CacheEntry] = []
    rows_f: list[Tensor] = []  # [T, D] each
    rows_v: list[Tensor] = []  # [D] each
    for c in cached.values():
        if c.entry.reason == NOT_EXTRACTED:
            continue  # the merge step's placeholder, not a cache entry
        entry = c.entry
        if c.frames is not None and c.video is not None:
            row = len(rows_f)  # the video's row, then its windows' rows
            windows = tuple(WindowRow(row + 1 + i, s) for i, (s, _, _) in enumerate(c.windows))
            entry = replace(entry, row=row, windows=windows)
            rows_f += [c.frames, *(f for _, f, _ in c.windows)]
            rows_v += [c.video, *(v for _, _, v in c.windows)]
        entries.append(entry)
    if not rows_f:
        return
    write_shard(folder, entries, torch.stack(rows_f), torch.stack(rows_v))
    for p in old:
        p.unlink(missing_ok=True)


def write_manifest(folder: Path, fingerprint: str, settings: dict[str, Any]) -> None:
    """``manifest.json``: the settings and the shard list (informational)."""
    shards = sorted(p.name for p in shard_paths(folder))
    manifest = {"fingerprint": fingerprint, "settings": settings, "shards": shards}
    # indent=1 and no final newline: the on-disk format (tests/test_gallery_cache_compat.py)
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))


__all__ = [
    "CACHE_VERSION", "COMPACT_AFTER", "compact", "load_cache", "needs_compaction", "read_shard",
    "shard_paths", "write_manifest", "write_shard",
]  # fmt: skip
