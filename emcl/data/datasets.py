"""Dataset readers: the MSR-VTT layout (also written by the demo world) and a plain folder.

Every reader returns ``list[VideoRecord]``. Records whose video file is absent are still
returned (a corpus without videos can still be listed and evaluated on cached features); they
are announced with one :class:`MissingVideosWarning` and listed by :func:`missing_videos`.

Splits of the MSR-VTT layout:
- ``test``: ``MSRVTT_JSFUSION_test.csv`` (the 1K-A protocol: one caption per video).
- ``trainval``: every id in ``MSRVTT_train.9k.csv`` (the official 9k training list).
- ``val``: a deterministic held-out slice of that list, never the test split: the
  ``round(VAL_FRACTION * n)`` ids with the smallest ``crc32(video_id)`` (ties by id). It depends
  only on the ids, not on file order, so model selection sees the same clips everywhere.
- ``train``: ``trainval`` minus ``val`` (what a model is fitted on when ``val`` selects it).
- ``all``: ``trainval`` + ``test``.
Train/val captions come from ``MSRVTT_data.json`` (all sentences of the video); without that
file those records have ``captions == []``.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from emcl.video.probe import VIDEO_EXTENSIONS

Split = Literal["train", "val", "trainval", "test", "all"]
SPLITS = ("train", "val", "trainval", "test", "all")
VAL_FRACTION = 0.1

MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"
MSRVTT_TRAIN = "MSRVTT_train.9k.csv"
MSRVTT_DATA = "MSRVTT_data.json"
VIDEO_DIRS = ("videos", "videos/all", "MSRVTT/videos/all")  # official zips use videos/all


class MissingVideosWarning(UserWarning):
    """Some records point at video files that do not exist."""


@dataclass
class VideoRecord:
    """One video and its captions (possibly none: a search-only gallery)."""

    video_id: str
    path: Path
    captions: list[str] = field(default_factory=list)
    split: str = "all"


def missing_videos(records: list[VideoRecord]) -> list[str]:
    """Ids of records whose file is absent."""
    return [r.video_id for r in records if not r.path.is_file()]


def _warn_missing(records: list[VideoRecord], where: Path) -> None:
    missing = missing_videos(records)
    if missing:
        head = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{len(missing)} of {len(records)} videos missing under {where} ({head})",
            MissingVideosWarning,
            stacklevel=3,
        )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def val_ids(train_ids: list[str], fraction: float = VAL_FRACTION) -> set[str]:
    """The held-out validation slice of a training id list (see module docstring)."""
    k = round(fraction * len(train_ids))
    ranked = sorted(set(train_ids), key=lambda v: (zlib.crc32(v.encode()), v))
    return set(ranked[:k])


def _video_dir(root: Path) -> Path:
    for d in VIDEO_DIRS:
        if (root / d).is_dir():
            return root / d
    return root / VIDEO_DIRS[0]


def _video_path(vdir: Path, video_id: str) -> Path:
    p = vdir / f"{video_id}.mp4"
    if p.exists():
        return p
    for ext in VIDEO_EXTENSIONS:  # tolerate other containers with the same stem
        q = vdir / f"{video_id}{ext}"
        if q.exists():
            return q
    return p


def read_msrvtt(
    root: str | os.PathLike, split: Split = "test", val_fraction: float = VAL_FRACTION
) -> list[VideoRecord]:
    """Records of one split of an MSR-VTT-layout folder (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    vdir = _video_dir(root)
    records: list[VideoRecord] = []
    if split in ("train", "val", "trainval", "all"):
        train_csv = root / MSRVTT_TRAIN
        if not train_csv.is_file():
            raise FileNotFoundError(f"{train_csv} not found (needed for split {split!r})")
        ids = [row["video_id"].strip() for row in _read_csv(train_csv) if row.get("video_id")]
        caps: dict[str, list[str]] = {}
        data = root / MSRVTT_DATA
        if data.is_file():
            for s in json.loads(data.read_text(encoding="utf-8")).get("sentences", []):
                caps.setdefault(s["video_id"], []).append(s["caption"])
        else:
            warnings.warn(f"{data} not found: training records have no captions", stacklevel=2)
        held = val_ids(ids, val_fraction)
        for v in ids:
            which = "val" if v in held else "train"
            if split in (which, "trainval", "all"):
                records.append(VideoRecord(v, _video_path(vdir, v), list(caps.get(v, [])), which))
    if split in ("test", "all"):
        test_csv = root / MSRVTT_TEST
        if not test_csv.is_file():
            raise FileNotFoundError(f"{test_csv} not found (needed for split {split!r})")
        for row in _read_csv(test_csv):
            v = row["video_id"].strip()
            records.append(VideoRecord(v, _video_path(vdir, v), [row["sentence"]], "test"))
    _warn_missing(records, vdir)
    return records


def _read_captions(path: Path) -> list[tuple[str, str]]:
    """(video, caption) pairs from a CSV with header ``video,caption`` or JSON Lines."""
    pairs = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                    pairs.append((str(obj["video"]), str(obj["caption"])))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{path}:{n}: expected {{'video': ..., 'caption': ...}}"
                    ) from e
    else:
        rows = _read_csv(path)
        if rows and not {"video", "caption"} <= set(rows[0]):
            raise ValueError(f"{path}: header must contain 'video' and 'caption'")
        pairs = [(r["video"], r["caption"]) for r in rows]
    return pairs


def _folder_id(root: Path, p: Path) -> str:
    return p.relative_to(root).with_suffix("").as_posix()


def read_folder(
    root: str | os.PathLike, captions: str | os.PathLike | None = None
) -> list[VideoRecord]:
    """Every video under ``root`` (recursive, sorted), with captions if given.

    ``captions``: CSV (``video,caption``) or JSON Lines (``{"video", "caption"}``), one row per
    caption; ``video`` is the file name relative to ``root`` with or without extension. Default:
    ``root/captions.csv`` or ``root/captions.jsonl`` if present, else no captions (search only).
    Caption rows naming absent videos become records with missing files (warned).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )  # fmt: skip
    records = {_folder_id(root, p): VideoRecord(_folder_id(root, p), p, [], "all") for p in files}
    if captions is None:
        for name in ("captions.csv", "captions.jsonl"):
            if (root / name).is_file():
                captions = root / name
                break
    if captions is not None:
        for video, caption in _read_captions(Path(captions)):
            vid = (
                Path(video).with_suffix("").as_posix()
                if Path(video).suffix.lower() in VIDEO_EXTENSIONS
                else video
            )
            if vid not in records:
                records[vid] = VideoRecord(
                    vid, root / (video if vid != video else f"{video}.mp4"), [], "all"
                )
            records[vid].captions.append(caption)
    out = list(records.values())
    _warn_missing(out, root)
    return out


def is_msrvtt(root: str | os.PathLike) -> bool:
    """Whether ``root`` has the MSR-VTT layout (a test or train list)."""
    root = Path(root)
    return (root / MSRVTT_TEST).is_file() or (root / MSRVTT_TRAIN).is_file()


def read_dataset(root: str | os.PathLike, split: Split = "test") -> list[VideoRecord]:
    """MSR-VTT layout (demo world included) if detected, else a plain folder (split ignored)."""
    return read_msrvtt(root, split) if is_msrvtt(root) else read_folder(root)
