"""The Gallery tab's service: the gallery's rows, the skipped files, and uploads.

An upload is copied under a generated name (never the browser's file name), decoded in the
guarded decoder, embedded by every model, and then the snapshot is swapped: requests in
flight keep the snapshot they started with (docs/reliability.md §2, §4).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import add_videos
from emcl.explorer.knobs import MAX_QUERY_CHARS, KnobError, fold_text
from emcl.explorer.snapshot import make_snapshot
from emcl.fileio import atomic_output, atomic_write
from emcl.video.probe import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    import os

    from emcl.explorer.service import Explorer, Progress

MAX_UPLOADS = 8  # files per upload request
UPLOAD_MAX_BYTES = 50 * 2**20  # per file (the app sets the same limit on Gradio's upload route)
Refusal = dict[str, str]  # {"file": name, "reason": why}


def gallery_rows(explorer: Explorer) -> list[list[str]]:
    return [
        [r.video_id, r.split, " | ".join(r.captions), Path(r.path).name]
        for r in explorer.snapshot.records
    ]


def skipped_rows(explorer: Explorer) -> list[list[str]]:
    return [
        [s["video_id"], s["reason"], s["message"], Path(s["path"]).name]
        for s in explorer.snapshot.skipped
    ]


def uploads_captions(uploads_dir: Path) -> Path:
    """Captions of uploads live beside (not inside) the served uploads folder."""
    return uploads_dir.with_name(uploads_dir.name + "-captions.jsonl")


def add_uploads(
    explorer: Explorer,
    files: Sequence[str | os.PathLike],
    caption: str,
    progress: Progress,
) -> tuple[list[str], list[Refusal]]:
    """Add uploaded videos to the gallery; returns the added ids and the refused files."""
    if explorer.uploads_dir is None:
        raise KnobError("uploads are disabled (no uploads folder)")
    files = list(files or [])
    if not files:
        raise KnobError("choose one or more video files first")
    if len(files) > MAX_UPLOADS:
        raise KnobError(f"at most {MAX_UPLOADS} files per upload, got {len(files)}")
    caption = fold_text(caption or "")[:MAX_QUERY_CHARS]
    staged, refused = _stage(explorer, [Path(f) for f in files], caption)
    if not staged:
        return [], refused
    with explorer.write_lock:
        added = _index(explorer, staged, refused, progress)
        if added and caption:
            _save_captions(explorer.uploads_dir, [(r.path.name, caption) for r in added])
    progress(1.0, "done")
    return [r.video_id for r in added], refused


def _stage(
    explorer: Explorer, files: list[Path], caption: str
) -> tuple[list[VideoRecord], list[Refusal]]:
    """Copy acceptable files into the uploads folder under generated names."""
    assert explorer.uploads_dir is not None
    staged: list[VideoRecord] = []
    refused: list[Refusal] = []
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
        if size > explorer.upload_max_bytes:
            limit = explorer.upload_max_bytes // 2**20
            refused.append({"file": name, "reason": f"larger than {limit} MiB"})
            continue
        video_id = f"upload-{uuid.uuid4().hex[:12]}"
        target = explorer.uploads_dir / f"{video_id}{suffix}"
        with atomic_output(target) as tmp:
            shutil.copyfile(source, tmp)
        staged.append(VideoRecord(video_id, target, [caption] if caption else [], "upload"))
    return staged, refused


def _index(
    explorer: Explorer, staged: list[VideoRecord], refused: list[Refusal], progress: Progress
) -> list[VideoRecord]:
    """Embed ``staged`` with every model and swap in the new snapshot; the videos that
    failed to decode are removed and added to ``refused``."""
    snap = explorer.snapshot
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
    explorer.swap_snapshot(
        make_snapshot(
            snap.version + 1,
            snap.base.encoder,
            base_gallery,
            snap.emcl.encoder if snap.emcl else None,
            emcl_gallery,
            explorer.text_caches,
            skipped=snap.skipped,
        )
    )
    return added


def _save_captions(uploads_dir: Path | None, pairs: list[tuple[str, str]]) -> None:
    assert uploads_dir is not None
    path = uploads_captions(uploads_dir)
    lines = path.read_text().splitlines() if path.is_file() else []
    lines += [json.dumps({"video": v, "caption": c}) for v, c in pairs]
    atomic_write(path, "\n".join(lines) + "\n")
