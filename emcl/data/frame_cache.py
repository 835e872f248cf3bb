"""Decode every clip once and keep its sampled frames at model resolution on disk.

Training reads frames from one uint8 array ``[N, T, S, S, 3]`` instead of decoding per step.
Frames are decoded exactly as the gallery does (emcl/data/gallery/extract.py: uniform sampler,
short side resized to S in the decoder, centre crop), so training, evaluation and the app see
the same pixels. The file is keyed by the clip list (path, size, mtime), the frame count and S,
so a change of any of them makes a new cache. Clips that fail to decode are skipped and reported
with their reason (docs/reliability.md §1); the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emcl.data.gallery import BULK_LIMITS
from emcl.fileio import atomic_output, atomic_write
from emcl.paths import frames_dir
from emcl.video.decoder import DecoderPool
from emcl.video.errors import VideoDecodeError
from emcl.video.sampling import center_crop

CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedFrames:
    video_ids: list[str]  # the clips that decoded, in input order
    frames: np.ndarray  # [N, T, S, S, 3] uint8 (memory-mapped)
    failures: dict[str, str]  # video_id -> reason, for the clips left out
    seconds: float  # time spent decoding now (0 when read from the cache)

    def index(self) -> dict[str, int]:
        return {video_id: i for i, video_id in enumerate(self.video_ids)}


def _key(paths: Sequence[Path], num_frames: int, size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{num_frames}|{size}|uniform".encode())
    for path in paths:
        stat = path.stat() if path.exists() else None
        size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (None, None)
        digest.update(f"|{path.resolve()}|{size}|{mtime}".encode())
    return digest.hexdigest()[:20]


def cache_frames(
    video_ids: Sequence[str],
    paths: Sequence[str | os.PathLike],
    *,
    num_frames: int,
    size: int,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    progress: bool = True,
) -> CachedFrames:
    """Frames ``[T, size, size, 3]`` of every clip, decoded once (uniform sampler) and cached
    under ``cache_dir`` (default :func:`emcl.paths.frames_dir`: the one cache root)."""
    paths = [Path(p) for p in paths]
    if len(paths) != len(video_ids):
        raise ValueError("need one path per video id")
    cache_dir = Path(cache_dir) if cache_dir is not None else frames_dir()
    key = _key(paths, num_frames, size)
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if array_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        frames = np.load(array_path, mmap_mode="r")
        if frames.shape[0] == len(meta["video_ids"]):
            return CachedFrames(meta["video_ids"], frames, meta["failures"], 0.0)

    start = time.perf_counter()
    kept: list[str] = []
    arrays: list[np.ndarray] = []
    failures: dict[str, str] = {}
    with DecoderPool(workers=workers, limits=BULK_LIMITS) as pool:
        results = pool.imap(paths, num_frames=num_frames, size=size)
        bar = tqdm(results, total=len(paths), desc="decoding clips", disable=not progress)
        for video_id, result in zip(video_ids, bar, strict=True):
            if isinstance(result, VideoDecodeError):
                failures[video_id] = f"{result.reason}: {result.message}"
                continue
            arrays.append(np.ascontiguousarray(center_crop(result.frames, size), dtype=np.uint8))
            kept.append(video_id)
    if not arrays:
        raise RuntimeError(f"none of the {len(paths)} clips could be decoded: {failures}")
    frames = np.stack(arrays)  # [N, T, S, S, 3]
    with atomic_output(array_path) as tmp, open(tmp, "wb") as f:
        np.save(f, frames)  # a file object: np.save would add ".npy" to the temp name
    meta = {"video_ids": kept, "failures": failures, "num_frames": num_frames, "size": size}
    atomic_write(meta_path, json.dumps(meta).encode())
    return CachedFrames(kept, frames, failures, time.perf_counter() - start)


__all__ = ["CachedFrames", "cache_frames"]
