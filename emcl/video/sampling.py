"""Which frames to decode, and at what size.

Samplers (frame indices refer to presentation order):
- ``uniform``: ``uniform_indices(n, T)`` -- slot i takes the frame under the centre of the
  i-th of T equal time slices. Always exactly T frames; a clip shorter than T frames repeats
  frames (each slot takes the nearest frame), e.g. n=1 gives T copies of frame 0.
- ``fps``: like the reference CLIP4Clip/EMCL loader, one frame per second (the frame shown at
  t = 0 s, 1 s, 2 s, ...), subsampled with ``np.linspace`` to at most T frames.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from emcl.video.probe import Size

Sampler = Literal["uniform", "fps"]


def uniform_indices(total_frames: int, num_frames: int) -> list[int]:
    """Indices of ``num_frames`` frames spread uniformly over ``total_frames``.

    Slot ``i`` takes frame ``floor((i + 0.5) * total / num)``: the frame under the centre of
    the i-th equal time slice. The result has exactly ``num_frames`` non-decreasing entries;
    when ``total_frames < num_frames`` frames repeat (each slot the nearest frame), so a
    1-frame clip yields ``num_frames`` copies of frame 0.
    """
    if total_frames < 1 or num_frames < 1:
        raise ValueError(
            f"need total_frames >= 1 and num_frames >= 1, got {total_frames}, {num_frames}"
        )
    return [(2 * i + 1) * total_frames // (2 * num_frames) for i in range(num_frames)]


def fps_indices(frame_times: Sequence[float], num_frames: int, fps: float = 1.0) -> list[int]:
    """Reference-style sampling: the frames shown at t = 0, 1/fps, 2/fps, ... (<= ``num_frames``).

    ``frame_times`` are the presentation times (s) of all frames in order, relative to the first.
    """
    n = len(frame_times)
    if n < 1 or num_frames < 1:
        raise ValueError("need at least one frame and num_frames >= 1")
    last = frame_times[-1]
    ticks = [k / fps for k in range(math.floor(last * fps + 1e-9) + 1)]
    idx = [max(0, bisect.bisect_right(frame_times, t + 1e-6) - 1) for t in ticks]
    if len(idx) > num_frames:  # same subsampling as the reference loader
        idx = [idx[j] for j in np.linspace(0, len(idx) - 1, num=num_frames, dtype=int)]
    return idx


def output_size(height: int, width: int, size: Size) -> tuple[int, int]:
    """Output (h, w): ``None`` keeps the size, an int sets the short side (aspect kept)."""
    if size is None:
        return height, width
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if height <= width:
            return size, max(1, round(width * size / height))
        return max(1, round(height * size / width)), size
    h, w = size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def center_crop(frames: np.ndarray, size: Size) -> np.ndarray:
    """[T, H, W, 3] -> [T, s, s, 3] for an int ``size`` (short side already ``s``), as CLIP does;
    an (h, w) size is already exact. Keeps every video in a batch the same shape."""
    if not isinstance(size, int):
        return frames
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top : top + size, left : left + size]


__all__ = ["Sampler", "center_crop", "fps_indices", "output_size", "uniform_indices"]
