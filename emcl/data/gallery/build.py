"""Building, extending and loading a gallery: the cache read, the stale videos extracted, the
gallery assembled, the cache compacted and the manifest and report written."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emcl.data.datasets import VideoRecord
from emcl.data.gallery.assemble import Assembled, Gallery, assemble
from emcl.data.gallery.entry import NOT_EXTRACTED, CachedVideo, CacheEntry
from emcl.data.gallery.extract import ExtractJob, VideoEncoder, extract_shared, extract_videos
from emcl.data.gallery.hashing import FileStat, read_stat
from emcl.data.gallery.report import GalleryReport, write_part_report, write_report
from emcl.data.gallery.settings import (
    BULK_LIMITS,
    ExtractOptions,
    cache_key,
    default_size,
    encoder_precision,
    gallery_settings,
    settings_size,
    window_spec,
)
from emcl.data.gallery.shards import compact, load_cache, needs_compaction, write_manifest
from emcl.data.windows import DEFAULT_WINDOWS, WindowSpec
from emcl.video.probe import Limits, Size

_NOT_EXTRACTED_MESSAGE = (
    "no valid cache entry (its part did not finish, or the file changed since): "
    "run the extraction again to resume"
)


def build_gallery(
    records: Sequence[VideoRecord],
    encoder: VideoEncoder,
    cache_dir: str | os.PathLike,
    *,
    num_frames: int = 12,
    size: Size = None,
    batch_size: int = 32,
    workers: int | None = None,
    timeout: float = 30.0,
    backend: str = "auto",
    limits: Limits = BULK_LIMITS,
    windows: WindowSpec | None = DEFAULT_WINDOWS,
    progress: bool = True,
    part: str | None = None,
    extract: bool = True,
) -> Gallery:
    """Features for ``records`` (uniform sampler, ``num_frames`` frames), from cache where valid.

    ``size``: int ``s`` (short side resized to ``s``, then centre-cropped to ``s x s``, as CLIP
    preprocessing does) or an exact ``(h, w)``; default ``encoder.image_size`` or 224.
    ``windows``: how videos longer than its threshold are also indexed as windows (None: never).
    Failures never raise: each skipped file is in ``gallery.report`` with its reason.

    Sharded extraction (emcl/data/sharding.py): ``part`` names one process's share; its shards
    carry the name, nothing is compacted and its report goes to ``parts/<part>.json`` instead
    of the manifest. ``extract=False`` decodes nothing: records without a valid cache entry are
    reported as skipped (``not_extracted``); this is the merge step.
    """
    options = ExtractOptions(
        num_frames=num_frames, size=default_size(encoder) if size is None else size,
        backend=backend, windows=windows, batch_size=batch_size, workers=workers,
        timeout=timeout, limits=limits, progress=progress, part=part,
        precision=encoder_precision(encoder),
    )  # fmt: skip
    return _build(list(records), encoder, Path(cache_dir), options, extract=extract)


def add_videos(
    gallery: Gallery,
    records: Sequence[VideoRecord],
    encoder: VideoEncoder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    timeout: float = 30.0,
    backend: str = "auto",
    limits: Limits = BULK_LIMITS,
    progress: bool = False,
) -> Gallery:
    """A *new* gallery: ``gallery`` plus ``records`` (same cache and settings; ids replaced).

    The input gallery is not modified, so readers holding it stay consistent; the caller swaps
    its reference. Records whose ids are already present replace the old entries.
    """
    if encoder.fingerprint != gallery.fingerprint:
        raise ValueError("encoder fingerprint differs from the gallery's: rebuild the gallery")
    if gallery.cache_dir is None:
        raise ValueError("gallery has no cache folder")
    s = gallery.settings
    if encoder_precision(encoder) != s.get("precision", "auto"):
        raise ValueError("encoder precision differs from the gallery's: rebuild the gallery")
    options = ExtractOptions(
        num_frames=s["num_frames"], size=settings_size(s), backend=backend,
        windows=window_spec(s), batch_size=batch_size, workers=workers, timeout=timeout,
        limits=limits, progress=progress, precision=s.get("precision", "auto"),
    )  # fmt: skip
    return _build(list(records), encoder, gallery.cache_dir.parent, options, base=gallery)


def load_gallery(
    cache_dir: str | os.PathLike,
    fingerprint: str,
    *,
    num_frames: int = 12,
    size: Size = 224,
    backend: str = "auto",
    windows: WindowSpec | None = DEFAULT_WINDOWS,
    precision: str = "auto",
) -> Gallery:
    """Every video cached for this model and settings, with no decoding and no file checks.

    Records (ids, paths, captions, splits) come from the cache itself, in id order of the
    shards. Use :func:`build_gallery` to also pick up added or changed files.
    """
    t0 = time.perf_counter()
    settings = gallery_settings(num_frames=num_frames, size=size, backend=backend,
                                windows=windows, precision=precision)  # fmt: skip
    folder = Path(cache_dir) / cache_key(fingerprint, settings)
    if not folder.is_dir():
        raise FileNotFoundError(f"no cache for this model/settings under {cache_dir}")
    report = GalleryReport(cache_dir=str(folder))
    cached = load_cache(folder, report)
    records = []
    for c in cached.values():
        if not c.entry.indexed:
            report.skipped.append(c.entry.skip_row())
            continue
        records.append(c.entry.record())
    assembled = assemble(records, cached, report=GalleryReport(), num_frames=num_frames)
    report.total = len(cached)
    report.reused = len(assembled.records)
    report.seconds = round(time.perf_counter() - t0, 2)
    return _gallery(assembled, report, fingerprint, settings, folder)


def cache_folder(
    cache_dir: str | os.PathLike,
    encoder: VideoEncoder,
    *,
    num_frames: int = 12,
    size: Size = None,
    backend: str = "auto",
    windows: WindowSpec | None = DEFAULT_WINDOWS,
    **_ignored: Any,
) -> Path:
    """The folder :func:`build_gallery` uses for this encoder and these settings (extra
    keyword arguments, e.g. ``batch_size``, are accepted and do not matter)."""
    size = default_size(encoder) if size is None else size
    settings = gallery_settings(num_frames=num_frames, size=size, backend=backend,
                                windows=windows, precision=encoder_precision(encoder))  # fmt: skip
    return Path(cache_dir) / cache_key(encoder.fingerprint, settings)


def build_galleries(
    records: Sequence[VideoRecord],
    encoders: Sequence[VideoEncoder],
    cache_dir: str | os.PathLike,
    *,
    num_frames: int | None = None,
    size: Size = None,
    batch_size: int = 32,
    workers: int | None = None,
    timeout: float = 30.0,
    backend: str = "auto",
    limits: Limits = BULK_LIMITS,
    windows: WindowSpec | None = DEFAULT_WINDOWS,
    progress: bool = True,
    report: Callable[[int, int], None] | None = None,
) -> list[Gallery]:
    """:func:`build_gallery` for each of ``encoders`` over the same ``records``, decoding each
    video once for every encoder that has no valid cache entry of it (the app's base and EMCL
    models index the same clips: half the decoding of two builds). Each encoder keeps its own
    cache folder, shards and report, as :func:`build_gallery` writes them. ``num_frames=None``
    and ``size=None``: each encoder's own ``num_frames`` (12 if it has none) and
    ``image_size``; encoders that differ in either decode in separate passes. ``report``
    hears (videos done, videos to do) of each decoding pass."""
    records = list(records)
    plans = []
    for encoder in encoders:
        frames = getattr(encoder, "num_frames", 12) if num_frames is None else num_frames
        options = ExtractOptions(
            num_frames=frames, size=default_size(encoder) if size is None else size,
            backend=backend, windows=windows, batch_size=batch_size, workers=workers,
            timeout=timeout, limits=limits, progress=progress,
            precision=encoder_precision(encoder), report=report,
        )  # fmt: skip
        shared = plans[0].stats if plans else None
        plans.append(_plan(records, encoder, Path(cache_dir), options, stats=shared))
    if len({plan.folder for plan in plans}) != len(plans):
        raise ValueError("two encoders share a cache folder (same fingerprint and settings)")
    passes: dict[Any, list[_Plan]] = {}
    for plan in plans:  # one decoding pass per sampling (the rest of the options agree)
        sampling = (plan.options.num_frames, str(plan.options.size))
        passes.setdefault(sampling, []).append(plan)
    for group in passes.values():
        jobs = [p.job() for p in group if p.todo]
        if jobs:
            extract_shared(records, jobs, group[0].options)
    return [_finish(plan, extract=True) for plan in plans]


@dataclass
class _Plan:
    """One encoder's build, up to the extraction: its cache read and the videos to extract."""

    records: list[VideoRecord]
    encoder: VideoEncoder
    options: ExtractOptions
    folder: Path
    report: GalleryReport
    cached: dict[str, CachedVideo]
    stats: dict[str, FileStat | None]
    missing: set[str]
    todo: list[VideoRecord]
    base: Gallery | None
    started: float

    def job(self) -> ExtractJob:
        return ExtractJob(
            self.todo, self.encoder, self.folder, self.options, self.stats, self.cached
        )


def _plan(
    records: list[VideoRecord],
    encoder: VideoEncoder,
    cache_root: Path,
    options: ExtractOptions,
    base: Gallery | None = None,
    stats: dict[str, FileStat | None] | None = None,
) -> _Plan:
    t0 = time.perf_counter()
    ids = [r.video_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate video ids in records")
    folder = cache_root / cache_key(encoder.fingerprint, options.settings())
    folder.mkdir(parents=True, exist_ok=True)
    report = GalleryReport(total=len(records), cache_dir=str(folder))
    # a part reads only shards of its own share; a whole build reads all (it may compact)
    cached = load_cache(folder, report, set(ids) if options.part is not None else None)
    if stats is None:  # build_galleries reads each file's identity once for all encoders
        stats = {r.video_id: read_stat(r.path) for r in records}
    missing = {v for v, stat in stats.items() if stat is None}  # not worth a shard
    todo = [r for r in records if r.video_id not in missing and _stale(cached, stats, r)]
    return _Plan(records, encoder, options, folder, report, cached, stats, missing, todo, base, t0)


def _build(
    records: list[VideoRecord],
    encoder: VideoEncoder,
    cache_root: Path,
    options: ExtractOptions,
    *,
    base: Gallery | None = None,
    extract: bool = True,
) -> Gallery:
    plan = _plan(records, encoder, cache_root, options, base)
    if plan.todo and extract:
        job = plan.job()
        extract_videos(
            job.todo, encoder=encoder, folder=job.folder, options=options, stats=job.stats,
            cached=job.cached,
        )  # fmt: skip
    elif plan.todo:  # the merge step: another process's share that never finished
        plan.cached |= {r.video_id: _not_extracted(r, plan.stats[r.video_id]) for r in plan.todo}
    return _finish(plan, extract=extract)


def _finish(plan: _Plan, *, extract: bool) -> Gallery:
    """Assemble the gallery from the cache, compact it, write the manifest and report."""
    options, folder, report = plan.options, plan.folder, plan.report
    settings = options.settings()
    fresh = {r.video_id for r in plan.todo} if extract else set()
    assembled = assemble(
        plan.records, plan.cached, report=report, num_frames=options.num_frames,
        missing=plan.missing, fresh=fresh, base=plan.base,
    )  # fmt: skip
    merging = not extract  # the merge of a sharded run: its parts left many small shards
    if options.part is None and (plan.todo or merging) and needs_compaction(folder):
        compact(folder, plan.cached)
    report.seconds = round(time.perf_counter() - plan.started, 2)
    if options.part is None:
        write_manifest(folder, plan.encoder.fingerprint, settings)
        write_report(folder, report)
    else:
        write_part_report(folder, options.part, report)
    return _gallery(assembled, report, plan.encoder.fingerprint, settings, folder)


def _stale(
    cached: dict[str, CachedVideo], stats: dict[str, FileStat | None], r: VideoRecord
) -> bool:
    """No cache entry of ``r``, or one made from another file."""
    c = cached.get(r.video_id)
    return c is None or not c.entry.same_file(stats[r.video_id])


def _not_extracted(r: VideoRecord, stat: FileStat | None) -> CachedVideo:
    entry = CacheEntry.for_record(r, stat, reason=NOT_EXTRACTED, message=_NOT_EXTRACTED_MESSAGE)
    return CachedVideo(entry, None, None)


def _gallery(
    a: Assembled, report: GalleryReport, fingerprint: str, settings: dict[str, Any], folder: Path
) -> Gallery:
    return Gallery(
        video_ids=[r.video_id for r in a.records],
        records=a.records,
        frame_embeddings=a.frames,
        video_embeddings=a.video,
        report=report,
        fingerprint=fingerprint,
        settings=settings,
        cache_dir=folder,
        windows=a.windows,
    )


__all__ = ["add_videos", "build_galleries", "build_gallery", "cache_folder", "load_gallery"]
