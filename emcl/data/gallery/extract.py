"""Decode and encode videos into cached features, one shard per batch as it completes.

Decoding is guarded (in decoder children, docs/reliability.md §1), one child per CPU, and runs a
batch ahead of a GPU encoder, so decoding and encoding overlap; a file that cannot be decoded
is stored as an entry with its reason, so it is not retried until it changes. A video longer
than the window threshold (emcl/data/windows.py) gets a shard of its own holding its whole-video
row and one row per window. Each shard is written as soon as its batch is done, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from emcl.data.datasets import VideoRecord
from emcl.data.gallery.entry import CachedVideo, CacheEntry, WindowRow, cached_rows
from emcl.data.gallery.hashing import FileStat
from emcl.data.gallery.settings import ExtractOptions
from emcl.data.gallery.shards import write_shard
from emcl.data.windows import (
    MAX_TIMELINE_FRAMES,
    Span,
    decoded_duration,
    window_clips,
    window_spans,
)
from emcl.video.decoder import Decoded, DecoderPool, default_workers
from emcl.video.errors import VideoDecodeError
from emcl.video.sampling import center_crop


class VideoEncoder(Protocol):
    """What the gallery needs from a model."""

    fingerprint: str

    def encode_videos(self, frames: np.ndarray) -> dict[str, Tensor]:
        """``frames`` uint8 [B, T, H, W, 3] -> ``{"frames": [B, T, D], "video": [B, D]}``."""
        ...


def encode(encoder: VideoEncoder, clips: np.ndarray, num_frames: int) -> tuple[Tensor, Tensor]:
    """``clips`` uint8 [B, T, H, W, 3] -> fp16 CPU ``frames`` [B, T, D] and ``video`` [B, D]."""
    with torch.inference_mode():
        out = encoder.encode_videos(clips)
    f_t = out["frames"].detach().to("cpu", torch.float16)  # [B, T, D]
    v_t = out["video"].detach().to("cpu", torch.float16)  # [B, D]
    if f_t.shape[:2] != (len(clips), num_frames) or v_t.shape != (len(clips), f_t.shape[-1]):
        raise ValueError(f"encoder returned frames {tuple(f_t.shape)}, video {tuple(v_t.shape)}")
    if not (torch.isfinite(f_t).all() and torch.isfinite(v_t).all()):
        raise ValueError("encoder returned non-finite features (fp16 overflow?)")
    return f_t, v_t


def extract_videos(
    todo: list[VideoRecord],
    *,
    encoder: VideoEncoder,
    folder: Path,
    options: ExtractOptions,
    stats: dict[str, FileStat | None],
    cached: dict[str, CachedVideo],
) -> None:
    """Decode and encode ``todo`` into shards in ``folder``; each stored entry (failures
    included) goes into ``cached`` by video id."""
    bar = _Bar(len(todo), options)
    try:
        _Extractor(encoder, folder, options, stats, cached, bar).run(todo)
    finally:
        bar.close()


def extract_shared(
    records: list[VideoRecord], jobs: list[ExtractJob], options: ExtractOptions
) -> None:
    """Several encoders' extractions with each video decoded once: every decoded clip goes to
    each job whose ``todo`` (in the order of ``records``) holds it, so each job's shards hold what
    :func:`extract_videos` would have written for it alone. The jobs' decode settings must
    be those of ``options`` (frames, size, backend, windows, limits, timeout; a long video's
    1 frame/s timeline is still decoded once per job that needs it)."""
    total = sum(len(job.todo) for job in jobs)
    bar = _Bar(total, options)
    extractors = [
        (_Extractor(j.encoder, j.folder, j.options, j.stats, j.cached, bar), j.todo) for j in jobs
    ]
    wanted = [{r.video_id for r in todo} for _, todo in extractors]
    needed = set().union(*wanted)
    records = [r for r in records if r.video_id in needed]  # decoded once each, in order
    try:
        workers = options.workers or default_workers()
        ahead = max((e._ahead(workers) or 0 for e, _ in extractors), default=0) or None
        with DecoderPool(workers=workers, limits=options.limits) as pool:
            results = _decoded(pool, records, options, ahead)
            for r, res in zip(records, results, strict=True):
                for (extractor, _), ids in zip(extractors, wanted, strict=True):
                    if r.video_id in ids:
                        extractor.take(pool, r, res)
            for extractor, _ in extractors:
                extractor.flush()
    finally:
        bar.close()


class _Bar:
    """The terminal's progress bar and the caller's ``report``, advanced together."""

    def __init__(self, total: int, options: ExtractOptions) -> None:
        self.total, self.done, self.report = total, 0, options.report
        self.bar = tqdm(total=total, desc="indexing videos", unit="video",
                        disable=not options.progress)  # fmt: skip

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        if self.report is not None:
            self.report(self.done, self.total)

    def close(self) -> None:
        self.bar.close()


@dataclass(frozen=True)
class ExtractJob:
    """One encoder's share of :func:`extract_shared`: what :func:`extract_videos` takes."""

    todo: list[VideoRecord]
    encoder: VideoEncoder
    folder: Path
    options: ExtractOptions
    stats: dict[str, FileStat | None]
    cached: dict[str, CachedVideo]


def _decoded(
    pool: DecoderPool, records: list[VideoRecord], o: ExtractOptions, ahead: int | None
) -> Iterator[Decoded | VideoDecodeError]:
    paths = [r.path for r in records]
    return pool.imap(paths, o.num_frames, o.size, "uniform", o.timeout, o.backend, ahead=ahead)


class _Extractor:
    """One build's extraction: a batch of decoded short videos and of failures, each written
    as one shard when ``batch_size`` of either have gathered."""

    def __init__(
        self,
        encoder: VideoEncoder,
        folder: Path,
        options: ExtractOptions,
        stats: dict[str, FileStat | None],
        cached: dict[str, CachedVideo],
        bar: _Bar,
    ) -> None:
        self.encoder, self.folder, self.options = encoder, folder, options
        self.stats, self.cached, self.bar = stats, cached, bar
        self.batch: list[tuple[VideoRecord, np.ndarray, list[str]]] = []  # clip [T, H, W, 3]
        self.failed: list[CacheEntry] = []

    def run(self, todo: list[VideoRecord]) -> None:
        o = self.options
        workers = o.workers or default_workers()
        with DecoderPool(workers=workers, limits=o.limits) as pool:
            results = _decoded(pool, todo, o, self._ahead(workers))
            for r, res in zip(todo, results, strict=True):
                self.take(pool, r, res)
            self.flush()

    def take(self, pool: DecoderPool, r: VideoRecord, res: Decoded | VideoDecodeError) -> None:
        """One decode result into the batch, the batch written as a shard when full."""
        self._take(pool, r, res)
        size = self.options.batch_size
        if len(self.batch) >= size or len(self.failed) >= size:
            self.flush()

    def _ahead(self, workers: int) -> int | None:
        """Decode the next batch while a GPU encodes one. An encoder on the CPU shares the
        cores with the decoders, so nothing would overlap: the pool keeps its small window."""
        device = getattr(self.encoder, "device", None)
        on_gpu = isinstance(device, torch.device) and device.type != "cpu"
        return self.options.batch_size + 2 * workers if on_gpu else None

    def _take(self, pool: DecoderPool, r: VideoRecord, res: Decoded | VideoDecodeError) -> None:
        """One decode result: a failure entry, a long video's shard, or a batch member."""
        if isinstance(res, VideoDecodeError):
            stat = self.stats[r.video_id]
            self.failed.append(
                CacheEntry.for_record(r, stat, reason=res.reason, message=res.message)
            )
            return
        duration = decoded_duration(res)
        spans = window_spans(duration, self.options.windows)
        if spans and duration is not None:
            self._long_video(pool, r, res, duration, spans)
        else:
            self.batch.append((r, center_crop(res.frames, self.options.size), res.notes))

    def flush(self) -> None:
        """The gathered failures and batch as one shard (nothing if both are empty)."""
        entries, f_t, v_t = list(self.failed), None, None
        if self.batch:
            clips = np.stack([clip for _, clip, _ in self.batch])  # [B, T, H, W, 3]
            f_t, v_t = encode(self.encoder, clips, self.options.num_frames)
            for i, (r, _, notes) in enumerate(self.batch):
                stat = self.stats[r.video_id]
                entries.append(CacheEntry.for_record(r, stat, row=i, notes=tuple(notes)))
        if entries:
            self._store(entries, f_t, v_t)
        self.batch.clear()
        self.failed.clear()

    def _long_video(
        self, pool: DecoderPool, r: VideoRecord, res: Decoded, duration: float, spans: list[Span]
    ) -> None:
        """The whole-video row plus one row per window, in a shard of their own."""
        o = self.options
        notes = list(res.notes)
        clips = [center_crop(res.frames, o.size)]  # [T, H, W, 3] each
        try:
            timeline = pool.decode(
                r.path, MAX_TIMELINE_FRAMES, o.size, "fps", o.timeout + duration, o.backend
            )
        except VideoDecodeError as e:
            notes.append(f"indexed whole, without windows: {e.reason} ({e.message[:200]})")
            spans = []
        else:
            frames = center_crop(timeline.frames, o.size)
            clips += window_clips(frames, duration, spans, o.num_frames)
        parts = [
            encode(self.encoder, np.stack(clips[i : i + o.batch_size]), o.num_frames)
            for i in range(0, len(clips), o.batch_size)
        ]
        f_t, v_t = torch.cat([f for f, _ in parts]), torch.cat([v for _, v in parts])
        entry = CacheEntry.for_record(
            r, self.stats[r.video_id], row=0, notes=tuple(notes),
            duration_s=round(duration, 3),
            windows=tuple(WindowRow(i + 1, s) for i, s in enumerate(spans)),
        )  # fmt: skip
        self._store([entry], f_t, v_t)

    def _store(self, entries: list[CacheEntry], f_t: Tensor | None, v_t: Tensor | None) -> None:
        """One shard of ``entries``; a shard of failures only has empty tensors."""
        if f_t is None or v_t is None:
            f_t = torch.zeros(0, self.options.num_frames, 0, dtype=torch.float16)
            v_t = torch.zeros(0, 0, dtype=torch.float16)
        write_shard(self.folder, entries, f_t, v_t, tag=self.options.tag)
        for e in entries:
            self.cached[e.video_id] = cached_rows(e, f_t, v_t)
        self.bar.update(len(entries))


__all__ = ["ExtractJob", "VideoEncoder", "encode", "extract_shared", "extract_videos"]
