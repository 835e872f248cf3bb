"""The committed gallery cache (tests/fixtures/gallery_cache_v1) loads unchanged, and building the
same cache again writes the same bytes: shards, manifest and reports.

A shard is compared by its parsed header and its tensor bytes (see shard_digest).

The fixture holds four tiny clips (one long enough for windows, one not a video), the cache built
from them, and ``expected.json``: what the cache loads as, the digests of the compacted variant
and what made them reproducible (file times, decoder versions, the shard-name clock).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from helpers import clip_frames

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import Gallery, build_gallery, load_gallery
from emcl.data.windows import WindowSpec
from emcl.video.writing import write_video

FIXTURE = Path(__file__).parent / "fixtures" / "gallery_cache_v1"
SPEC = WindowSpec(threshold_s=2.0, length_s=2.0, stride_s=1.0)
OPTIONS: dict[str, Any] = {
    "num_frames": 4, "size": 32, "batch_size": 2, "backend": "pyav", "windows": SPEC,
    "workers": 1, "progress": False,
}  # fmt: skip
CLIPS = {"a": (6, 10.0), "b": (9, 10.0), "long": (16, 4.0)}  # frames, fps (long: 4 s, 3 windows)
MTIME_NS = 1_700_000_000_123_456_789
PID = 4242
CLOCK_START = 1_000_000  # the fake time_ns of the first shard name


class ExactEncoder:
    """A random-weight encoder in integer arithmetic, so its features (and the digests) do not
    depend on the CPU's float kernels: 2x2 sums of colours through a seeded integer matrix."""

    fingerprint = "exact-v1"
    image_size = 32

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randint(-8, 9, (12, 8), generator=g)  # int64
        self.encoded = 0

    def encode_videos(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        self.encoded += len(frames)
        x = torch.from_numpy(frames).to(torch.int64)  # [B, T, H, W, 3]
        b, t, h, w, _ = x.shape
        pooled = x.reshape(b, t, 2, h // 2, 2, w // 2, 3).sum((3, 5))  # [B, T, 2, 2, 3]
        f = (pooled.reshape(b, t, 12) @ self.proj).double() / 2**16  # [B, T, 8], exact
        return {"frames": f, "video": f.mean(1)}


def records() -> list[VideoRecord]:
    """Relative paths: the entries name ``videos/<id>.mp4`` wherever the fixture is copied."""
    ids = ["a", "bad", "b", "long", "gone"]
    return [VideoRecord(v, Path("videos") / f"{v}.mp4", [f"clip {v}"], "test") for v in ids]


def make_videos(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for vid, (n, fps) in CLIPS.items():
        write_video(folder / f"{vid}.mp4", clip_frames(n, (32, 32)), fps)
    (folder / "bad.mp4").write_text("not a video\n" * 20)


def shard_digest(path: Path) -> str:
    """SHA-256 of a shard's header (its keys sorted: safetensors writes them in hash-map order,
    which changes from run to run) and of every byte after it (the tensors)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    canonical = json.dumps(header, sort_keys=True).encode()
    return hashlib.sha256(canonical + b"\0" + data[8 + size :]).hexdigest()


def digests(folder: Path) -> dict[str, str]:
    """Each shard's digest and the manifest's SHA-256, by file name."""
    out = {p.name: shard_digest(p) for p in sorted(folder.glob("shard-*.safetensors"))}
    manifest = (folder / "manifest.json").read_bytes()
    return out | {"manifest.json": hashlib.sha256(manifest).hexdigest()}


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def summary(g: Gallery) -> dict[str, Any]:
    """What a loaded gallery holds, in a form that fits in a JSON file."""
    return {
        "video_ids": g.video_ids,
        "records": [[str(r.path), r.captions, r.split] for r in g.records],
        "frames": tensor_digest(g.frame_embeddings),
        "video": tensor_digest(g.video_embeddings),
        "shapes": [list(g.frame_embeddings.shape), list(g.video_embeddings.shape)],
        "window_ids": list(g.windows.video_ids),
        "spans": [list(s) for s in g.windows.spans],
        "window_frames": tensor_digest(g.windows.frame_embeddings),
        "window_video": tensor_digest(g.windows.video_embeddings),
        "skipped": g.report.skipped,
    }


def normalised_report(folder: Path) -> dict[str, Any]:
    """report.json and report.txt without what differs between runs (time taken, location)."""
    text = (folder / "report.json").read_text()
    report = json.loads(text)
    assert text == json.dumps(report, indent=1, sort_keys=True)  # the file's format
    report.pop("seconds"), report.pop("cache_dir")
    txt = re.sub(r"in \d+\.\d+ s", "in _ s", (folder / "report.txt").read_text())
    return {"json": report, "txt": txt}


def pin_environment(mp: pytest.MonkeyPatch, root: Path, versions: dict[str, str | None]) -> None:
    """Make a build reproducible: the working folder, file times, decoder versions and the
    clock and pid that name shards."""
    mp.chdir(root)
    for path in (root / "videos").iterdir():
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    real = importlib.metadata.version

    def version(package: str) -> str:
        if package not in versions:
            return real(package)
        if versions[package] is None:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    mp.setattr(importlib.metadata, "version", version)
    clock = itertools.count(CLOCK_START)
    mp.setattr(time, "time_ns", lambda: next(clock))
    mp.setattr(os, "getpid", lambda: PID)


def build_fixture(
    root: Path,
    mp: pytest.MonkeyPatch,
    shards: ModuleType,
    versions: dict[str, str | None],
    *,
    compact: bool,
) -> Gallery:
    """Build the fixture's cache under ``root/cache`` from the clips in ``root/videos``.
    ``shards``: the module holding the shard-name counter and the compaction threshold."""
    pin_environment(mp, root, versions)
    mp.setattr(shards, "_shard_counter", itertools.count())
    mp.setattr(shards, "COMPACT_AFTER", 1 if compact else 16)
    return build_gallery(records(), ExactEncoder(), root / "cache", **OPTIONS)


def shards_module() -> ModuleType:
    from emcl.data.gallery import shards

    return shards


@pytest.fixture
def expected() -> dict[str, Any]:
    return json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def copied(tmp_path) -> Path:
    """The fixture's clips and cache, copied where a test may change them."""
    shutil.copytree(FIXTURE / "videos", tmp_path / "videos")
    shutil.copytree(FIXTURE / "cache", tmp_path / "cache")
    return tmp_path


def test_the_committed_cache_loads_with_the_same_tensors(copied, expected, monkeypatch):
    pin_environment(monkeypatch, copied, expected["versions"])
    settings = {k: OPTIONS[k] for k in ("num_frames", "size", "backend", "windows")}
    g = load_gallery(copied / "cache", ExactEncoder.fingerprint, **settings)
    assert summary(g) == expected["loaded"]
    assert g.cache_dir.name == expected["cache_key"]


def test_the_committed_cache_is_reused_whole(copied, expected, monkeypatch):
    pin_environment(monkeypatch, copied, expected["versions"])
    encoder = ExactEncoder()
    g = build_gallery(records(), encoder, copied / "cache", **OPTIONS)
    assert encoder.encoded == 0 and g.report.reused == 3 and g.report.extracted == 0
    loaded = expected["loaded"]
    assert g.video_ids == loaded["video_ids"]
    assert tensor_digest(g.video_embeddings) == loaded["video"]
    assert tensor_digest(g.windows.video_embeddings) == loaded["window_video"]


@pytest.mark.parametrize("compact", [False, True], ids=["shards", "compacted"])
def test_building_again_writes_the_same_bytes(tmp_path, expected, monkeypatch, compact):
    shutil.copytree(FIXTURE / "videos", tmp_path / "videos")
    g = build_fixture(tmp_path, monkeypatch, shards_module(), expected["versions"], compact=compact)
    assert g.cache_dir.name == expected["cache_key"]
    want = expected["compacted"] if compact else digests(FIXTURE / "cache" / expected["cache_key"])
    assert digests(g.cache_dir) == want
    assert normalised_report(g.cache_dir) == expected["report"]
    assert summary(g) == expected["built"]
