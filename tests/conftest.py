"""Shared fixtures: synthetic clips and a tiny demo world, all made inside the test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emcl.video import write_video


def clip_frames(n: int, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """``n`` RGB frames whose grey level encodes the frame index (frame i ~ 6 * i), so a test
    can tell which frame a decoder returned. The level is constant over the frame: robust to
    compression and resizing."""
    h, w = size
    return [np.full((h, w, 3), (6 * i) % 250, np.uint8) for i in range(n)]


def frame_number(frame: np.ndarray) -> int:
    """Inverse of :func:`clip_frames` for one decoded frame [H, W, 3]."""
    return round(float(frame.mean()) / 6)


@pytest.fixture
def make_clip(tmp_path: Path):
    """``make_clip(name, n=30, size=(96, 128), fps=10, **write_video_kwargs) -> Path``."""

    def make(name: str = "clip.mp4", n: int = 30, size=(96, 128), fps: float = 10, **kw) -> Path:
        path = tmp_path / name
        write_video(path, clip_frames(n, size), fps, **kw)
        return path

    return make


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A 20 train + 10 test demo world (seed 0), built once per session (~1 s)."""
    from emcl.demo_world import build_world

    out = tmp_path_factory.mktemp("tiny_world")
    build_world(out, n_train=20, n_test=10, seed=0, workers=1)
    return out
