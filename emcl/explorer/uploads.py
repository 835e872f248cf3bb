"""The Gallery tab's service: the gallery's rows, the skipped files, and uploads.

An upload is copied under a generated name (never the browser's file name), decoded in the
guarded decoder, embedded by every model, and then the snapshot is swapped: requests in
flight keep the snapshot they started with (docs/reliability.md §2, §4).

A served app passes :class:`UploadLimits`: each user's uploads and all uploads together are
capped, and the disk keeps a reserve free. Usage is measured on disk (the uploads folder and
an owners ledger beside it), so the caps hold across restarts.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import add_videos
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import MAX_QUERY_CHARS, KnobError, fold_text
from emcl.explorer.results import Progress, no_progress
from emcl.fileio import atomic_output, atomic_write, atomic_write_json
from emcl.video.probe import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    import os

MAX_UPLOADS = 8  # files per upload request
UPLOAD_MAX_BYTES = 50 * 2**20  # per file (the app sets the same limit on Gradio's upload route)
Refusal = dict[str, str]  # {"file": name, "reason": why}
ANONYMOUS = "anonymous"  # the user of a server without logins
MIB = 2**20


@dataclass(frozen=True)
class UploadLimits:
    """Disk caps for uploads on a served app (the flags --upload-quota-mb and --upload-cap-mb)."""

    per_user_bytes: int = 500 * MIB
    total_bytes: int = 5 * 2**30
    reserve_bytes: int = 2**30  # free disk space that uploads never take

    def __post_init__(self) -> None:
        for name in ("per_user_bytes", "total_bytes", "reserve_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class UploadUsage:
    """Bytes in the uploads folder: all of them, and per owner (from the ledger)."""

    total_bytes: int
    per_user: dict[str, int]

    def of(self, user: str) -> int:
        return self.per_user.get(user, 0)


def gallery_rows(ctx: ServiceContext) -> list[list[str]]:
    """One row per gallery video: id, split, captions, file name."""
    return [
        [r.video_id, r.split, " | ".join(r.captions), Path(r.path).name]
        for r in ctx.snapshot.records
    ]


def skipped_rows(ctx: ServiceContext) -> list[list[str]]:
    """One row per file left out: id, reason, message, file name."""
    return [
        [s["video_id"], s["reason"], s["message"], Path(s["path"]).name]
        for s in ctx.snapshot.skipped
    ]


def uploads_captions(uploads_dir: Path) -> Path:
    """Captions of uploads live beside (not inside) the served uploads folder."""
    return uploads_dir.with_name(uploads_dir.name + "-captions.jsonl")


def uploads_owners(uploads_dir: Path) -> Path:
    """Who uploaded which file (``{file name: user}``), beside the served folder."""
    return uploads_dir.with_name(uploads_dir.name + "-owners.json")


def upload_usage(uploads_dir: Path) -> UploadUsage:
    """What the uploads folder holds now; a file missing from the ledger counts in the total
    only, a ledger entry whose file is gone counts nowhere."""
    sizes = {}
    if uploads_dir.is_dir():
        sizes = {p.name: p.stat().st_size for p in uploads_dir.iterdir() if p.is_file()}
    owners = _read_owners(uploads_dir)
    per_user: dict[str, int] = {}
    for name, user in owners.items():
        if name in sizes:
            per_user[user] = per_user.get(user, 0) + sizes[name]
    return UploadUsage(sum(sizes.values()), per_user)


def _read_owners(uploads_dir: Path) -> dict[str, str]:
    path = uploads_owners(uploads_dir)
    try:
        owners = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged ledger: totals still hold (they are measured on the folder)
    return {str(k): str(v) for k, v in owners.items()} if isinstance(owners, dict) else {}


def add_uploads(
    ctx: ServiceContext,
    files: Sequence[str | os.PathLike],
    caption: str = "",
    progress: Progress = no_progress,
    *,
    user: str = ANONYMOUS,
    limits: UploadLimits | None = None,
) -> tuple[list[str], list[Refusal]]:
    """Add uploaded videos to the gallery; returns the added ids and the refused files.
    With ``limits``, a file that would take ``user`` past their quota, the uploads past the
    total cap, or the disk into its reserve is refused with the figures."""
    folder = ctx.uploads.folder
    if folder is None:
        raise KnobError("uploads are disabled (no uploads folder)")
    files = list(files or [])
    if not files:
        raise KnobError("choose one or more video files first")
    if len(files) > MAX_UPLOADS:
        raise KnobError(f"at most {MAX_UPLOADS} files per upload, got {len(files)}")
    caption = fold_text(caption or "")[:MAX_QUERY_CHARS]
    # One writer at a time: the usage a request checks is the usage it adds to.
    with ctx.store.write_lock:
        staged, refused = _stage(ctx, [Path(f) for f in files], caption, user, limits)
        if not staged:
            return [], refused
        added = _index(ctx, staged, refused, progress)
        if added and caption:
            _save_captions(folder, [(r.path.name, caption) for r in added])
        if added:
            owners = _read_owners(folder)
            owners.update({r.path.name: user for r in added})
            atomic_write_json(uploads_owners(folder), owners, indent=0)
    progress(1.0, "done")
    return [r.video_id for r in added], refused


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _over_limits(
    size: int, uploads_dir: Path, usage: UploadUsage, user: str, limits: UploadLimits
) -> str | None:
    """Why a file of ``size`` bytes cannot be stored now, or ``None``."""
    if usage.of(user) + size > limits.per_user_bytes:
        return (
            f"upload quota reached: your uploads use {_mib(usage.of(user))} of "
            f"{_mib(limits.per_user_bytes)}, this file needs {_mib(size)}"
        )
    if usage.total_bytes + size > limits.total_bytes:
        return (
            f"upload space is full: uploads use {_mib(usage.total_bytes)} of "
            f"{_mib(limits.total_bytes)} on this server; ask its operator for room"
        )
    uploads_dir.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(uploads_dir).free - size < limits.reserve_bytes:
        return "the server's disk is full: uploads are refused until space is freed"
    return None


def _stage(
    ctx: ServiceContext,
    files: list[Path],
    caption: str,
    user: str = ANONYMOUS,
    limits: UploadLimits | None = None,
) -> tuple[list[VideoRecord], list[Refusal]]:
    """Copy acceptable files into the uploads folder under generated names."""
    folder, max_bytes = ctx.uploads.folder, ctx.uploads.max_bytes
    assert folder is not None
    staged: list[VideoRecord] = []
    refused: list[Refusal] = []
    usage = upload_usage(folder) if limits is not None else None
    for source in files:
        name, suffix = source.name[:80], source.suffix.lower()
        if suffix not in VIDEO_EXTENSIONS:
            extensions = ", ".join(VIDEO_EXTENSIONS)
            refused.append({"file": name, "reason": f"not a video extension ({extensions})"})
            continue
        try:
            size = source.stat().st_size
        except OSError:
            refused.append({"file": name, "reason": "upload not found"})
            continue
        if size > max_bytes:
            limit = max_bytes // 2**20
            refused.append({"file": name, "reason": f"larger than {limit} MiB"})
            continue
        if limits is not None and usage is not None:
            full = _over_limits(size, folder, usage, user, limits)
            if full is not None:
                refused.append({"file": name, "reason": full})
                continue
            per_user = {**usage.per_user, user: usage.of(user) + size}
            usage = UploadUsage(usage.total_bytes + size, per_user)
        video_id = f"upload-{uuid.uuid4().hex[:12]}"
        target = folder / f"{video_id}{suffix}"
        with atomic_output(target) as tmp:
            shutil.copyfile(source, tmp)
        staged.append(VideoRecord(video_id, target, [caption] if caption else [], "upload"))
    return staged, refused


def _index(
    ctx: ServiceContext, staged: list[VideoRecord], refused: list[Refusal], progress: Progress
) -> list[VideoRecord]:
    """Embed ``staged`` with every model and publish the new snapshot; the videos that
    failed to decode are removed and added to ``refused``. Runs under the write lock."""
    snap = ctx.snapshot
    progress(0.05, "decoding and embedding (base model)")
    base_gallery = add_videos(snap.base.gallery, staged, snap.base.encoder)
    emcl_gallery = None
    if snap.emcl is not None:
        progress(0.5, "embedding (EMCL model)")
        emcl_gallery = add_videos(snap.emcl.gallery, staged, snap.emcl.encoder)
    failed = {s["video_id"]: s for s in base_gallery.report.skipped}
    if emcl_gallery is not None:
        failed.update({s["video_id"]: s for s in emcl_gallery.report.skipped})
    added = []
    for record in staged:
        if record.video_id in failed:
            why = failed[record.video_id]
            refused.append(
                {"file": record.path.name, "reason": f"{why['reason']}: {why['message']}"}
            )
            record.path.unlink(missing_ok=True)
        else:
            added.append(record)
    if not added:
        return []
    progress(0.9, "updating the gallery")
    ctx.store.publish(base_gallery, emcl_gallery)
    return added


def _save_captions(uploads_dir: Path, pairs: list[tuple[str, str]]) -> None:
    path = uploads_captions(uploads_dir)
    lines = path.read_text().splitlines() if path.is_file() else []
    lines += [json.dumps({"video": v, "caption": c}) for v, c in pairs]
    atomic_write(path, "\n".join(lines) + "\n")
