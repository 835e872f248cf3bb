"""Writing clips: browser-playable, reproducible H.264 MP4 (the demo world, the tests)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 12,
    *,
    crf: int = 20,
    preset: str = "fast",
    faststart: bool = True,
    times: Sequence[float] | None = None,
) -> None:
    """Write RGB frames ``[H, W, 3]`` uint8 as browser-playable H.264 yuv420p MP4 (PyAV).

    ``times`` (seconds, increasing) gives each frame its own presentation time (VFR clips);
    otherwise frames are ``1/fps`` apart. Single-threaded x264 so output is reproducible.
    Writes ``path`` in place: a caller publishing the file wraps this in
    :func:`emcl.fileio.atomic_output`.
    """
    from fractions import Fraction

    import av

    path = os.fspath(path)
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(path, "w", format="mp4", options=opts) as c:
        rate = Fraction(fps).limit_denominator(1000)
        s = c.add_stream("libx264", rate=rate)
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        if times is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        started = False
        for i, arr in enumerate(frames):
            if not started:
                s.height, s.width = arr.shape[:2]
                started = True
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            if times is not None:
                frame.pts = round(times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in s.encode(frame):
                c.mux(packet)
        if not started:
            raise ValueError("no frames to write")
        for packet in s.encode():
            c.mux(packet)


__all__ = ["write_video"]
