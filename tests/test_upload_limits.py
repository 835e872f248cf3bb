"""Uploads on a served app: per-user quota, total cap and disk reserve, measured on disk
and kept across restarts, each refusal with a message that says what is full."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emcl.explorer.uploads import (
    ANONYMOUS,
    UploadLimits,
    add_uploads,
    upload_usage,
    uploads_owners,
)
from emcl.video.writing import write_video


def no_progress(fraction: float, message: str) -> None:
    return None


@pytest.fixture
def fresh_explorer(explorer_inputs, tmp_path):
    """An explorer of its own (uploads change its gallery), sharing the warm feature cache."""
    cache = tmp_path / "cache"
    shutil.copytree(explorer_inputs["setup"]().features_dir, cache / "features")
    return explorer_inputs["make"](cache)


def clip(path: Path, colour: int = 200) -> Path:
    frames = [np.full((64, 64, 3), (colour + 5 * i) % 255, np.uint8) for i in range(12)]
    write_video(path, frames, 10)
    return path


def fake_video(path: Path, size: int) -> Path:
    path.write_bytes(b"\0" * size)
    return path


def test_usage_counts_the_folder_and_the_owners_ledger(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "a.mp4").write_bytes(b"x" * 100)
    (uploads / "b.mp4").write_bytes(b"x" * 30)
    (uploads / "c.mp4").write_bytes(b"x" * 7)  # no owner recorded: counts in the total only
    owners = {"a.mp4": "alice", "b.mp4": "bob", "gone.mp4": "alice"}
    uploads_owners(uploads).write_text(json.dumps(owners))
    usage = upload_usage(uploads)
    assert usage.total_bytes == 137
    assert usage.per_user == {"alice": 100, "bob": 30} and usage.of("carol") == 0
    uploads_owners(uploads).write_text("{not json")  # a damaged ledger: totals still hold
    assert upload_usage(uploads).total_bytes == 137
    assert upload_usage(tmp_path / "missing").total_bytes == 0


def test_quota_cap_and_reserve_refuse_with_the_figures(fresh_explorer, tmp_path):
    ex = fresh_explorer
    mib = 2**20
    size = mib // 2
    limits = UploadLimits(per_user_bytes=mib, total_bytes=10 * mib, reserve_bytes=0)
    # Over the quota: the second file of 0.5 MiB after 0.8 MiB would pass alice's 1 MiB.
    staged = fake_video(tmp_path / "first.mp4", int(0.8 * mib))
    files = [staged, fake_video(tmp_path / "second.mp4", size)]
    added, refused = add_uploads(ex.context, files, "", no_progress, user="alice", limits=limits)
    assert added == []  # zero bytes are not a video: the decoder refuses the first
    assert {r["file"]: r["reason"] for r in refused}["second.mp4"].startswith(
        "upload quota reached: your uploads use 0.8 MiB of 1.0 MiB, this file needs 0.5 MiB"
    )
    assert list(ex.uploads_dir.iterdir()) == []  # nothing left behind
    full = UploadLimits(per_user_bytes=mib, total_bytes=size - 1, reserve_bytes=0)
    added, refused = add_uploads(ex.context, [files[1]], "", no_progress, user="bob", limits=full)
    assert added == [] and refused[0]["reason"].startswith("upload space is full")
    no_disk = UploadLimits(reserve_bytes=2**62)
    added, refused = add_uploads(
        ex.context, [files[1]], "", no_progress, user="bob", limits=no_disk
    )
    assert added == [] and "disk is full" in refused[0]["reason"]


def test_an_added_video_counts_for_its_owner_across_a_restart(
    fresh_explorer, explorer_inputs, tmp_path
):
    ex = fresh_explorer
    video = clip(tmp_path / "mine.mp4")
    size = video.stat().st_size
    limits = UploadLimits(per_user_bytes=size + size // 2, total_bytes=10 * size, reserve_bytes=0)
    added, refused = add_uploads(
        ex.context, [video], "a box", no_progress, user="alice", limits=limits
    )
    assert len(added) == 1 and refused == []
    usage = upload_usage(ex.uploads_dir)
    assert usage.of("alice") == size and usage.total_bytes == size
    assert json.loads(uploads_owners(ex.uploads_dir).read_text()) == {f"{added[0]}.mp4": "alice"}
    again = clip(tmp_path / "again.mp4", colour=40)
    _, refused = add_uploads(ex.context, [again], "", no_progress, user="alice", limits=limits)
    assert refused[0]["reason"].startswith("upload quota reached")
    restarted = explorer_inputs["make"](ex.uploads_dir.parent)  # same cache folder, new process
    _, refused = add_uploads(
        restarted.context, [again], "", no_progress, user="alice", limits=limits
    )
    assert refused[0]["reason"].startswith("upload quota reached")
    added, _ = add_uploads(
        restarted.context, [again], "", no_progress, user=ANONYMOUS, limits=limits
    )
    assert len(added) == 1  # another user still has room
