"""Long videos as moments: overlapping time windows, each indexed like a short clip.

A video longer than :attr:`WindowSpec.threshold_s` is indexed as windows of ``length_s``
seconds every ``stride_s`` seconds (the last one ends at the video's end, so the tail is
covered), each with the gallery's ``num_frames`` frames. Frames come from one guarded decode
of the whole video with the ``fps`` sampler (the frame shown at t = 0, 1, 2, ... s; see
emcl/video/sampling.py), capped at :data:`MAX_TIMELINE_FRAMES` so that the decode stays within
the decoder's output limit; a longer video is sampled more sparsely and its frame times are
spread over its duration the way ``fps_indices`` subsamples them.

A gallery with windows exposes one embedding row per indexed *item* (a short video, or one
window of a long video) with the item's video and span: :class:`GalleryItems`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from emcl.video.probe import Size
from emcl.video.sampling import uniform_indices

if TYPE_CHECKING:
    from emcl.video.decoder import Decoded

# ~400 MB of 224-px frames: under the decoder's 512 MiB output cap (emcl/video/probe.py)
MAX_TIMELINE_FRAMES = 1500


@dataclass(frozen=True)
class WindowSpec:
    """Which videos become windows, and how long and how far apart the windows are."""

    threshold_s: float = 30.0  # videos longer than this are indexed as windows
    length_s: float = 10.0
    stride_s: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.stride_s <= self.length_s):
            raise ValueError(f"need 0 < stride_s <= length_s, got {self.stride_s}, {self.length_s}")
        if self.threshold_s < self.length_s:
            raise ValueError(f"threshold_s {self.threshold_s} is shorter than a window")

    def to_json(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_WINDOWS = WindowSpec()
Span = tuple[float, float]


def window_spans(duration_s: float | None, spec: WindowSpec | None) -> list[Span]:
    """``(start_s, end_s)`` of each window of a ``duration_s`` video; ``[]`` if it is short
    (or windows are off, or the duration is unknown)."""
    if spec is None or duration_s is None or not duration_s > spec.threshold_s:
        return []
    last = duration_s - spec.length_s
    starts = [k * spec.stride_s for k in range(math.floor(last / spec.stride_s + 1e-9) + 1)]
    if last - starts[-1] > 1e-3:  # (spans are rounded to ms)
        starts.append(last)  # the tail: a window that ends at the end
    return [(round(s, 3), round(min(s + spec.length_s, duration_s), 3)) for s in starts]


def timeline_times(count: int, duration_s: float) -> np.ndarray:
    """Presentation time (s) of each of ``count`` frames the ``fps`` sampler returned for a
    ``duration_s`` video when asked for :data:`MAX_TIMELINE_FRAMES`: k s below the cap, else
    its ``np.linspace`` subsampling of the ticks (their count estimated from the duration)."""
    ticks = math.floor(duration_s) + 1
    if count < MAX_TIMELINE_FRAMES or ticks <= count:
        return np.arange(count, dtype=np.float64)
    return np.linspace(0, ticks - 1, num=count, dtype=int).astype(np.float64)


def window_frames(
    timeline: np.ndarray, times: np.ndarray, span: Span, num_frames: int
) -> np.ndarray:
    """``num_frames`` frames ``[T, H, W, 3]`` of one window from the timeline ``[N, H, W, 3]``
    (frames at ``times`` ``[N]``): uniformly over the frames shown in ``[start, end)``, the
    nearest frame when none is."""
    start, end = span
    inside = np.flatnonzero((times >= start - 1e-6) & (times < end - 1e-6))
    if len(inside) == 0:
        inside = np.array([int(np.argmin(np.abs(times - (start + end) / 2)))])
    picks = inside[uniform_indices(len(inside), num_frames)]
    return timeline[picks]


def window_clips(
    timeline: np.ndarray, duration_s: float, spans: Sequence[Span], num_frames: int
) -> list[np.ndarray]:
    """Each window's frames ``[T, H, W, 3]`` from a ``fps``-sampler decode ``[N, H, W, 3]``
    of the whole video (asked for :data:`MAX_TIMELINE_FRAMES` frames)."""
    times = timeline_times(len(timeline), duration_s)
    return [window_frames(timeline, times, span, num_frames) for span in spans]


def decoded_duration(decoded: Decoded) -> float | None:
    """A decoded video's duration (s) from its header, else frames / fps; None if unknown."""
    info = decoded.probe
    if info is None:
        return None
    if info.duration_s:
        return info.duration_s
    return decoded.total_frames / info.fps if info.fps else None


def load_window(
    path: str | os.PathLike, span: Span, num_frames: int, size: Size, timeout: float = 60.0
) -> np.ndarray:
    """The frames ``[T, H, W, 3]`` the gallery encoded for one window of a long video,
    decoded in the guarded decoder (emcl/video/decoder.py) the same way."""
    from emcl.video.decoder import default_pool

    decoded = default_pool().decode(path, MAX_TIMELINE_FRAMES, size, "fps", timeout)
    duration = decoded_duration(decoded) or float(len(decoded.frames))
    return window_clips(decoded.frames, duration, [span], num_frames)[0]


@dataclass(frozen=True)
class Windows:
    """The windows of a gallery's long videos (each window's video by id, so a gallery can be
    subset or reordered without breaking them)."""

    video_ids: tuple[str, ...]  # [Nw]
    spans: tuple[Span, ...]  # [Nw]
    frame_embeddings: Tensor  # [Nw, T, D] fp16
    video_embeddings: Tensor  # [Nw, D] fp16

    def __len__(self) -> int:
        return len(self.video_ids)

    @classmethod
    def empty(cls, num_frames: int, dim: int) -> Windows:
        return cls((), (), torch.zeros(0, num_frames, dim, dtype=torch.float16),
                   torch.zeros(0, dim, dtype=torch.float16))  # fmt: skip


@dataclass(frozen=True)
class GalleryItems:
    """One row per indexed item: a short video, or one window of a long video (whose
    whole-video row is then not an item). Items are in the order of the videos given, a long
    video's windows in time order."""

    video_ids: tuple[str, ...]  # [Ni] the video each item shows
    video_rows: Tensor  # [Ni] long: the position of that video in the ids given
    spans: tuple[Span | None, ...]  # [Ni] None: the whole video
    frame_embeddings: Tensor  # [Ni, T, D]
    video_embeddings: Tensor  # [Ni, D]

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def has_windows(self) -> bool:
        return any(s is not None for s in self.spans)

    def to_json(self, row: int) -> dict[str, Any]:
        span = self.spans[row]
        return {"video_id": self.video_ids[row], "span": list(span) if span else None}


def gallery_items(
    ids: Sequence[str], frames: Tensor, videos: Tensor, windows: Windows | None
) -> GalleryItems:
    """Items of the videos ``ids`` (whole-video features ``frames`` ``[N, T, D]`` and
    ``videos`` ``[N, D]`` in that order) with their ``windows``."""
    by_video: dict[str, list[int]] = {}
    if windows is not None:
        for w, vid in enumerate(windows.video_ids):
            by_video.setdefault(vid, []).append(w)
    picks: list[tuple[int, int | None]] = []  # (video position, window row or None)
    for p, vid in enumerate(ids):
        picks += [(p, w) for w in by_video[vid]] if vid in by_video else [(p, None)]
    whole = [i for i, (_, w) in enumerate(picks) if w is None]
    parts = [i for i, (_, w) in enumerate(picks) if w is not None]
    n = len(picks)
    item_frames = frames.new_empty(n, *frames.shape[1:])
    item_videos = videos.new_empty(n, videos.shape[-1])
    if whole:
        rows = torch.tensor([picks[i][0] for i in whole])
        item_frames[whole], item_videos[whole] = frames[rows], videos[rows]
    if parts:
        assert windows is not None
        rows = torch.tensor([picks[i][1] for i in parts])
        item_frames[parts] = windows.frame_embeddings[rows].to(frames.dtype)
        item_videos[parts] = windows.video_embeddings[rows].to(videos.dtype)
    spans = tuple(windows.spans[w] if w is not None else None for _, w in picks)  # type: ignore[union-attr]
    return GalleryItems(
        video_ids=tuple(ids[p] for p, _ in picks),
        video_rows=torch.tensor([p for p, _ in picks], dtype=torch.long),
        spans=spans,
        frame_embeddings=item_frames,
        video_embeddings=item_videos,
    )


__all__ = [
    "DEFAULT_WINDOWS", "MAX_TIMELINE_FRAMES", "GalleryItems", "Span", "WindowSpec", "Windows",
    "decoded_duration", "gallery_items", "load_window", "timeline_times", "window_clips",
    "window_frames", "window_spans",
]  # fmt: skip
