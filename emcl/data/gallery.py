"""Gallery feature extraction with an on-disk, resumable cache.

``build_gallery`` decodes each record's video (guarded, in decoder children), runs the encoder
in batches and stores fp16 features. The cache folder holds one sub-folder per *cache key*
(model fingerprint + sampler settings + decoder), so a different model or sampler never reuses
features. Inside it:

    shard-<time>-<pid>-<n>.safetensors   one per batch: tensors ``frames`` [B, T, D] and
                                         ``video`` [B, D] (fp16) plus metadata: the entries
                                         (video id, path, size, mtime, quick hash, row or the
                                         skip reason) and a SHA-256 of the tensor bytes
    manifest.json                        settings and shard list (informational)
    report.json, report.txt              the last run's gallery report

Every file is written through :mod:`emcl.fileio` (temp name, fsync, rename: atomic). Shards are
self-describing, so an interrupted run leaves only complete shards and the next run recomputes
nothing they hold.
An entry is reused only if the file's size, mtime and quick content hash are unchanged (a
touched file, or one replaced by other content of the same size and mtime, is re-extracted); a
shard that fails to load or whose checksum differs is deleted and its videos are recomputed.
Files that cannot be decoded are recorded with their reason (and not retried until they
change).

Videos longer than the window threshold are also indexed as overlapping windows
(emcl/data/windows.py): their entry lists each window's row and span, stored in the same shard
as the whole-video row. :mod:`emcl.data.sharding` runs the extraction over many processes: each
writes shards for its part (``part=``, no compaction) and one merge (``extract=False``) reads
them all and writes the manifest.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from emcl.data.datasets import VideoRecord
from emcl.data.windows import (
    DEFAULT_WINDOWS,
    MAX_TIMELINE_FRAMES,
    GalleryItems,
    Span,
    Windows,
    WindowSpec,
    decoded_duration,
    gallery_items,
    window_clips,
    window_spans,
)
from emcl.fileio import atomic_output, atomic_write
from emcl.video.decoder import Decoded, DecoderPool
from emcl.video.errors import VideoDecodeError
from emcl.video.probe import Limits, Size
from emcl.video.sampling import center_crop

CACHE_VERSION = 2  # 2: window rows, a sampled content hash
COMPACT_AFTER = 16  # shards: beyond this, a finished build merges them into one
# Bulk indexing probes headers with PyAV's demuxer inside the decoder child: the same checks
# as ffprobe (allow-listed containers, size and duration caps) at ~1 ms instead of ~50 ms per
# file (bench: 160 vs 15 clips/s on 2 cores). PyAV 18.1 bundles FFmpeg 8.1.2.
BULK_LIMITS = Limits(probe="pyav")
_shard_counter = itertools.count()


class VideoEncoder(Protocol):
    """What the gallery needs from a model."""

    fingerprint: str

    def encode_videos(self, frames: np.ndarray) -> dict[str, Tensor]:
        """``frames`` uint8 [B, T, H, W, 3] -> ``{"frames": [B, T, D], "video": [B, D]}``."""
        ...


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


# ---------------------------------------------------------------------------- cache files


HASH_HEAD = 2**20  # bytes hashed at each end of a file
HASH_SAMPLES = 16  # and this many 64 KiB pieces spread between them


def file_stat(path: Path) -> dict[str, Any] | None:
    """Size, mtime and a quick content hash, or None if absent. The hash covers the size,
    the first and last MiB and 16 evenly spread 64 KiB pieces (all of a file up to ~3 MiB):
    ~3 MiB read per file, whatever its size."""
    try:
        st = path.stat()
    except OSError:
        return None
    h = hashlib.sha256(str(st.st_size).encode())
    try:
        with open(path, "rb") as f:
            h.update(f.read(HASH_HEAD))
            middle = st.st_size - 2 * HASH_HEAD
            if middle > 0:
                piece = 2**16
                for k in range(HASH_SAMPLES):
                    f.seek(HASH_HEAD + middle * k // HASH_SAMPLES)
                    h.update(f.read(min(piece, middle)))
            if st.st_size > HASH_HEAD:
                f.seek(max(HASH_HEAD, st.st_size - HASH_HEAD))
                h.update(f.read(HASH_HEAD))
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": h.hexdigest()[:32]}


def _same_file(entry: dict[str, Any], stat: dict[str, Any] | None) -> bool:
    """Unchanged: same size, mtime *and* content hash (a file replaced by other content with
    the same size and mtime differs in its hash)."""
    return stat is not None and all(entry.get(k) == stat[k] for k in ("size", "mtime_ns", "hash"))


def _tensor_digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _write_shard(
    folder: Path, entries: list[dict[str, Any]], frames: Tensor, video: Tensor, tag: str = ""
) -> Path:
    tensors = {"frames": frames.contiguous(), "video": video.contiguous()}
    meta = {
        "entries": json.dumps(entries),
        "sha256": _tensor_digest(tensors),
        "version": str(CACHE_VERSION),
    }
    # ``tag`` (e.g. "r3", the rank) keeps names unique across hosts sharing one folder
    suffix = f"-{tag}" if tag else ""
    name = f"shard-{time.time_ns()}-{os.getpid()}-{next(_shard_counter)}{suffix}.safetensors"
    with atomic_output(folder / name) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return folder / name


def _read_shard(
    path: Path, wanted: set[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Tensor] | None]:
    """Entries and tensors of one shard; raises ValueError if it is damaged in any way.
    With ``wanted`` ids, a shard holding none of them is not read beyond its header
    (tensors ``None``): one rank of a sharded run reads only its own share."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            entries = json.loads(meta["entries"])
            if wanted is not None and not any(e["video_id"] in wanted for e in entries):
                return entries, None
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises several types on truncated/garbled files
        raise ValueError(f"{path.name}: unreadable ({type(e).__name__}: {e})") from e
    if meta.get("sha256") != _tensor_digest(tensors):
        raise ValueError(f"{path.name}: checksum mismatch")
    rows = sum(len(_entry_rows(e)) for e in entries)
    if (
        set(tensors) != {"frames", "video"}
        or len(tensors["video"]) != rows
        or len(tensors["frames"]) != rows
    ):
        raise ValueError(f"{path.name}: entries and tensors disagree")
    return entries, tensors


def _entry_rows(entry: dict[str, Any]) -> list[int]:
    """The tensor rows an entry owns: its whole-video row, then its windows' rows."""
    rows = [entry["row"]] if entry.get("row") is not None else []
    return rows + [w["row"] for w in entry.get("windows", ())]


@dataclass
class _Cached:
    entry: dict[str, Any]
    frames: Tensor | None  # [T, D]
    video: Tensor | None  # [D]
    windows: list[tuple[Span, Tensor, Tensor]] = field(default_factory=list)  # span, [T, D], [D]


def _cached(entry: dict[str, Any], frames: Tensor, video: Tensor) -> _Cached:
    """An entry with its rows taken from a shard's ``frames`` [B, T, D] and ``video`` [B, D]."""
    row = entry.get("row")
    if row is None:
        return _Cached(entry, None, None)
    spans = [
        (tuple(w["span"]), frames[w["row"]], video[w["row"]]) for w in entry.get("windows", ())
    ]
    return _Cached(entry, frames[row], video[row], spans)  # type: ignore[arg-type]


def _load_cache(
    folder: Path, report: GalleryReport, wanted: set[str] | None = None
) -> dict[str, _Cached]:
    """Every valid entry in ``folder`` by video id (later shards win); damaged shards deleted.
    ``wanted``: only shards holding one of these ids are read (entries of other ids may come
    along with them)."""
    cached: dict[str, _Cached] = {}
    for path in sorted(folder.glob("shard-*.safetensors"), key=lambda p: _shard_order(p.name)):
        try:
            entries, t = _read_shard(path, wanted)
        except ValueError as e:
            report.corrupt_shards.append(str(e))
            path.unlink(missing_ok=True)
            continue
        if t is None:
            continue
        for e in entries:
            cached[e["video_id"]] = _cached(e, t["frames"], t["video"])
    return cached


def _shard_order(name: str) -> tuple[int, ...]:
    parts = name.removeprefix("shard-").removesuffix(".safetensors").split("-")
    return tuple(int(p) for p in parts if p.isdigit())


# ---------------------------------------------------------------------------- building


def cache_key(fingerprint: str, settings: dict[str, Any]) -> str:
    """Folder name of one (model, sampler, decoder) combination."""
    blob = json.dumps({"fingerprint": fingerprint, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _settings(
    num_frames: int, size: Size, backend: str, windows: WindowSpec | None
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:  # a decoder may be absent (e.g. PyAV only)
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "cache_version": CACHE_VERSION,
        "num_frames": num_frames,
        "size": list(size) if isinstance(size, tuple) else size,
        "sampler": "uniform",
        "backend": backend,
        "decord": installed("decord"),
        "pyav": installed("av"),
        "windows": windows.to_json() if windows is not None else None,
    }


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
    size = _default_size(encoder) if size is None else size
    settings = _settings(num_frames, size, backend, windows)
    return Path(cache_dir) / cache_key(encoder.fingerprint, settings)


def _window_spec(settings: dict[str, Any]) -> WindowSpec | None:
    spec = settings.get("windows")
    return WindowSpec(**spec) if spec else None


def _default_size(encoder: Any) -> Size:
    s = getattr(encoder, "image_size", 224)
    return tuple(s) if isinstance(s, list | tuple) else int(s)


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
    size = _default_size(encoder) if size is None else size
    options = _Extraction(
        num_frames, size, windows, batch_size, workers, timeout, backend, limits, progress, part
    )
    return _build(list(records), encoder, Path(cache_dir), options, base=None, extract=extract)


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
    size = tuple(s["size"]) if isinstance(s["size"], list) else s["size"]
    options = _Extraction(
        s["num_frames"], size, _window_spec(s), batch_size, workers, timeout, backend, limits,
        progress, None,
    )  # fmt: skip
    return _build(list(records), encoder, gallery.cache_dir.parent, options, base=gallery)


@dataclass(frozen=True)
class _Extraction:
    """How videos are decoded and encoded for one build (the cache key uses the first three)."""

    num_frames: int
    size: Size  # resolved: never None here
    windows: WindowSpec | None
    batch_size: int
    workers: int | None
    timeout: float
    backend: str
    limits: Limits
    progress: bool
    part: str | None  # one process's share of a sharded extraction (its shards' name tag)


def _build(
    records: list[VideoRecord],
    encoder: VideoEncoder,
    cache_root: Path,
    options: _Extraction,
    base: Gallery | None,
    extract: bool = True,
) -> Gallery:
    t0 = time.perf_counter()
    ids = [r.video_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate video ids in records")
    settings = _settings(options.num_frames, options.size, options.backend, options.windows)
    folder = cache_root / cache_key(encoder.fingerprint, settings)
    folder.mkdir(parents=True, exist_ok=True)
    report = GalleryReport(total=len(records), cache_dir=str(folder))
    # a part reads only shards of its own share; a whole build reads all (it may compact)
    cached = _load_cache(folder, report, set(ids) if options.part is not None else None)

    stats = {r.video_id: file_stat(r.path) for r in records}
    missing = {r.video_id for r in records if stats[r.video_id] is None}  # not worth a shard
    todo = [
        r for r in records
        if r.video_id not in missing
        and not (r.video_id in cached and _same_file(cached[r.video_id].entry, stats[r.video_id]))
    ]  # fmt: skip
    if todo and extract:
        _extract(todo, stats, encoder, folder, cached, options, report)
    elif todo:  # the merge step: another process's share that never finished
        for r in todo:
            cached[r.video_id] = _Cached(_entry(
                r, stats[r.video_id], reason="not_extracted",
                message="no valid cache entry (its part did not finish, or the file changed "
                "since): run the extraction again to resume",
            ), None, None)  # fmt: skip

    fresh = {r.video_id for r in todo} if extract else set()
    order, fe, ve, windows = _assemble(
        records, cached, missing, fresh, base, report, options.num_frames
    )
    merging = not extract  # the merge of a sharded run: its parts left many small shards
    if (
        options.part is None
        and (todo or merging)
        and len(list(folder.glob("shard-*.safetensors"))) > COMPACT_AFTER
    ):
        _compact(folder, cached)
    report.seconds = round(time.perf_counter() - t0, 2)
    if options.part is None:
        _write_reports(folder, report, encoder.fingerprint, settings)
    else:
        atomic_write(folder / "parts" / f"{options.part}.json",
                     json.dumps(report.to_json(), indent=1, sort_keys=True))  # fmt: skip
    return Gallery(
        [r.video_id for r in order], order, fe, ve, report, encoder.fingerprint, settings, folder,
        windows,
    )  # fmt: skip


def _assemble(
    records: list[VideoRecord],
    cached: dict[str, _Cached],
    missing: set[str],
    fresh: set[str],
    base: Gallery | None,
    report: GalleryReport,
    num_frames: int,
) -> tuple[list[VideoRecord], Tensor, Tensor, Windows]:
    """The gallery's records, features and windows: the base gallery's other videos first
    (add_videos), then ``records`` in order; skips, warnings and counts go to ``report``."""
    order: list[VideoRecord] = []
    frames: list[Tensor] = []  # [n, T, D] pieces
    video: list[Tensor] = []  # [n, D] pieces
    window_ids: list[str] = []
    spans: list[Span] = []
    window_f: list[Tensor] = []  # [n, T, D] pieces
    window_v: list[Tensor] = []  # [n, D] pieces
    if base is not None:
        replaced = {r.video_id for r in records}
        keep = [i for i, v in enumerate(base.video_ids) if v not in replaced]
        order += [base.records[i] for i in keep]
        if keep:
            frames.append(base.frame_embeddings[keep])
            video.append(base.video_embeddings[keep])
        if base.windows is not None and len(base.windows):
            rows = [w for w, v in enumerate(base.windows.video_ids) if v not in replaced]
            window_ids += [base.windows.video_ids[w] for w in rows]
            spans += [base.windows.spans[w] for w in rows]
            window_f.append(base.windows.frame_embeddings[rows])
            window_v.append(base.windows.video_embeddings[rows])
        report.total += len(keep)
        report.reused += len(keep)
    rows_f, rows_v = [], []
    for r in records:
        if r.video_id in missing:
            gone = _entry(r, None, reason="missing", message="file not found")
            report.skipped.append(_skip_row(gone))
            continue
        c = cached[r.video_id]  # every other record is cached now: features or a skip reason
        if c.entry.get("row") is None:
            report.skipped.append(_skip_row(c.entry))
            continue
        if c.entry.get("notes"):
            report.warnings.append({"video_id": r.video_id, "message": "; ".join(c.entry["notes"])})
        if r.video_id in fresh:
            report.extracted += 1
        else:
            report.reused += 1
        order.append(r)
        rows_f.append(c.frames)
        rows_v.append(c.video)
        for span, f, v in c.windows:
            window_ids.append(r.video_id)
            spans.append(span)
            window_f.append(f[None])
            window_v.append(v[None])
    if rows_f:
        frames.append(torch.stack(rows_f))
        video.append(torch.stack(rows_v))
    d_dim = video[0].shape[-1] if video else 0
    fe = torch.cat(frames) if frames else torch.zeros(0, num_frames, d_dim, dtype=torch.float16)
    ve = torch.cat(video) if video else torch.zeros(0, d_dim, dtype=torch.float16)
    windows = (
        Windows(tuple(window_ids), tuple(spans), torch.cat(window_f), torch.cat(window_v))
        if window_ids
        else Windows.empty(num_frames, d_dim)
    )
    return order, fe, ve, windows


def _encode(encoder: VideoEncoder, clips: np.ndarray, num_frames: int) -> tuple[Tensor, Tensor]:
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


def _extract(
    todo: list[VideoRecord],
    stats: dict[str, dict[str, Any] | None],
    encoder: VideoEncoder,
    folder: Path,
    cached: dict[str, _Cached],
    options: _Extraction,
    report: GalleryReport,
) -> None:
    """Decode and encode ``todo``; one shard per batch (failures included) as it completes,
    one shard per long video (its whole-video row and its windows)."""
    from tqdm import tqdm

    num_frames, size = options.num_frames, options.size
    tag = "".join(ch for ch in options.part or "" if ch.isalnum())
    workers = options.workers or min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="indexing videos", unit="video", disable=not options.progress)
    batch: list[tuple[VideoRecord, np.ndarray, list[str]]] = []
    failed: list[dict[str, Any]] = []

    def store(entries: list[dict[str, Any]], f_t: Tensor | None, v_t: Tensor | None) -> None:
        if f_t is None or v_t is None:
            f_t = torch.zeros(0, num_frames, 0, dtype=torch.float16)
            v_t = torch.zeros(0, 0, dtype=torch.float16)
        _write_shard(folder, entries, f_t, v_t, tag)
        for e in entries:
            cached[e["video_id"]] = _cached(e, f_t, v_t)
        bar.update(len(entries))

    def flush() -> None:
        entries, f_t, v_t = list(failed), None, None
        if batch:
            f_t, v_t = _encode(encoder, np.stack([f for _, f, _ in batch]), num_frames)
            for i, (r, _, notes) in enumerate(batch):
                entries.append(_entry(r, stats[r.video_id], row=i, notes=notes))
        if entries:
            store(entries, f_t, v_t)
        batch.clear()
        failed.clear()

    def long_video(
        pool: DecoderPool, r: VideoRecord, res: Decoded, duration: float, spans: list[Span]
    ) -> None:
        """The whole-video row plus one row per window, in a shard of their own."""
        notes = list(res.notes)
        clips = [center_crop(res.frames, size)]
        try:
            timeline = pool.decode(r.path, MAX_TIMELINE_FRAMES, size, "fps",
                                   options.timeout + duration, options.backend)  # fmt: skip
        except VideoDecodeError as e:
            notes.append(f"indexed whole, without windows: {e.reason} ({e.message[:200]})")
            spans = []
        else:
            clips += window_clips(center_crop(timeline.frames, size), duration, spans, num_frames)
        parts = [
            _encode(encoder, np.stack(clips[i : i + options.batch_size]), num_frames)
            for i in range(0, len(clips), options.batch_size)
        ]
        f_t, v_t = torch.cat([f for f, _ in parts]), torch.cat([v for _, v in parts])
        entry = _entry(r, stats[r.video_id], row=0, notes=notes)
        entry["duration_s"] = round(duration, 3)
        entry["windows"] = [{"row": i + 1, "span": list(s)} for i, s in enumerate(spans)]
        store([entry], f_t, v_t)

    try:
        with DecoderPool(workers, options.limits) as pool:
            paths = [r.path for r in todo]
            results = pool.imap(
                paths, num_frames, size, "uniform", options.timeout, options.backend
            )
            for r, res in zip(todo, results, strict=True):
                if isinstance(res, VideoDecodeError):
                    failed.append(
                        _entry(r, stats[r.video_id], reason=res.reason, message=res.message)
                    )
                else:
                    duration = decoded_duration(res)
                    spans = window_spans(duration, options.windows)
                    if spans and duration is not None:
                        long_video(pool, r, res, duration, spans)
                    else:
                        batch.append((r, center_crop(res.frames, size), res.notes))
                if len(batch) >= options.batch_size or len(failed) >= options.batch_size:
                    flush()
            flush()
    finally:
        bar.close()


def _entry(
    r: VideoRecord,
    stat: dict[str, Any] | None,
    row: int | None = None,
    reason: str = "",
    message: str = "",
    notes: list[str] | None = None,
) -> dict[str, Any]:
    stat = stat or {"size": -1, "mtime_ns": -1, "hash": ""}
    return {"video_id": r.video_id, "path": str(r.path), "captions": r.captions, "split": r.split,
            **stat, "row": row, "reason": reason, "message": message,
            "notes": list(notes or [])}  # fmt: skip


def _compact(folder: Path, cached: dict[str, _Cached]) -> None:
    """Merge every shard into one, so a reload opens one file. The merged shard is written
    (atomically) before the old ones are deleted; a crash in between leaves duplicates with
    equal content, which the loader resolves (later shards win)."""
    old = list(folder.glob("shard-*.safetensors"))
    entries, rows_f, rows_v = [], [], []
    for c in cached.values():
        if c.entry.get("reason") == "not_extracted":
            continue  # the merge step's placeholder, not a cache entry
        e = dict(c.entry)
        if c.frames is not None:
            e["row"] = len(rows_f)
            rows_f.append(c.frames)
            rows_v.append(c.video)
            windows = []
            for span, f, v in c.windows:
                windows.append({"row": len(rows_f), "span": list(span)})
                rows_f.append(f)
                rows_v.append(v)
            e["windows"] = windows
        entries.append(e)
    if not rows_f:
        return
    _write_shard(folder, entries, torch.stack(rows_f), torch.stack(rows_v))
    for p in old:
        p.unlink(missing_ok=True)


def _skip_row(e: dict[str, Any]) -> dict[str, str]:
    return {k: str(e[k]) for k in ("video_id", "path", "reason", "message")}


def _write_reports(
    folder: Path, report: GalleryReport, fingerprint: str, settings: dict[str, Any]
) -> None:
    shards = sorted(p.name for p in folder.glob("shard-*.safetensors"))
    manifest = {"fingerprint": fingerprint, "settings": settings, "shards": shards}
    # indent=1 and no final newline: the format these files have always had
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    atomic_write(folder / "report.json", json.dumps(report.to_json(), indent=1, sort_keys=True))
    atomic_write(folder / "report.txt", str(report) + "\n")


def load_gallery(
    cache_dir: str | os.PathLike,
    fingerprint: str,
    *,
    num_frames: int = 12,
    size: Size = 224,
    backend: str = "auto",
    windows: WindowSpec | None = DEFAULT_WINDOWS,
) -> Gallery:
    """Every video cached for this model and settings, with no decoding and no file checks.

    Records (ids, paths, captions, splits) come from the cache itself, in id order of the
    shards. Use :func:`build_gallery` to also pick up added or changed files.
    """
    t0 = time.perf_counter()
    settings = _settings(num_frames, size, backend, windows)
    folder = Path(cache_dir) / cache_key(fingerprint, settings)
    if not folder.is_dir():
        raise FileNotFoundError(f"no cache for this model/settings under {cache_dir}")
    report = GalleryReport(cache_dir=str(folder))
    cached = _load_cache(folder, report)
    records = []
    for vid, c in cached.items():
        e = c.entry
        if e.get("row") is None:
            report.skipped.append(_skip_row(e))
            continue
        records.append(
            VideoRecord(vid, Path(e["path"]), list(e.get("captions", [])), e.get("split", "all"))
        )
    order, fe, ve, window_rows = _assemble(
        records, cached, set(), set(), None, GalleryReport(), num_frames
    )
    report.total = len(cached)
    report.reused = len(order)
    report.seconds = round(time.perf_counter() - t0, 2)
    return Gallery(
        [r.video_id for r in order], order, fe, ve, report, fingerprint, settings, folder,
        window_rows,
    )  # fmt: skip


__all__ = [
    "BULK_LIMITS", "Gallery", "GalleryReport", "VideoEncoder", "add_videos", "build_gallery",
    "cache_folder", "cache_key", "file_stat", "load_gallery",
]  # fmt: skip
