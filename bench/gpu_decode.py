"""OpenCV clip writing and decoding for the GPU suite's indexing section, where the project's
own decoders (PyAV, decord) are absent but ``opencv-python-headless`` is there.

Imports only numpy, the project's sampler and cv2 (inside the functions), so the worker
processes of a decoding pool start in a fraction of a second.
"""

from __future__ import annotations

import numpy as np

from emcl.video.sampling import uniform_indices

FPS = 12
SIDE = 128  # the demo world's canvas (emcl/data/world/common.py)
CLIP_FRAMES = 48  # four seconds at 12 frames/s


def demo_like_frames(seed: int, n: int = CLIP_FRAMES, side: int = SIDE) -> np.ndarray:
    """uint8 ``[n, side, side, 3]``: a plain background and a square crossing it."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, side, side, 3), dtype=np.uint8)
    frames[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    box = side // 5
    start, end = rng.integers(0, side - box, 2), rng.integers(0, side - box, 2)
    for t in range(n):
        y, x = (start + (end - start) * t / max(n - 1, 1)).astype(int)
        frames[t, y : y + box, x : x + box] = colour
    return frames


def write_clip(job: tuple[str, int]) -> str:
    """Write clip ``seed`` to ``path`` as MPEG-4 (``mp4v``) with OpenCV; returns the path."""
    import cv2

    path, seed = job
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIDE, SIDE))
    for frame in demo_like_frames(seed):
        writer.write(frame[..., ::-1])  # OpenCV writes BGR
    writer.release()
    return path


def decode_clip(path: str, num_frames: int = 12) -> np.ndarray:
    """uint8 ``[num_frames, H, W, 3]`` RGB frames of ``path``, uniformly sampled, with OpenCV
    (frames between the samples are grabbed, not converted)."""
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            raise ValueError(f"{path}: no frames")
        wanted = uniform_indices(total, num_frames)
        out: list[np.ndarray] = []
        for index in range(wanted[-1] + 1):
            if not capture.grab():
                raise ValueError(f"{path}: ended at frame {index} of {total}")
            while len(out) < num_frames and wanted[len(out)] == index:
                ok, frame = capture.retrieve()
                if not ok:
                    raise ValueError(f"{path}: frame {index} did not decode")
                out.append(frame[..., ::-1])
        return np.ascontiguousarray(np.stack(out))
    finally:
        capture.release()


__all__ = ["decode_clip", "demo_like_frames", "write_clip"]
