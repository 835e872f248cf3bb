"""Small helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


def clip_frames(n: int, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """``n`` RGB frames whose grey level encodes the frame index (frame i ~ 6 * i), so a test
    can tell which frame a decoder returned. The level is constant over the frame: robust to
    compression and resizing."""
    h, w = size
    return [np.full((h, w, 3), (6 * i) % 250, np.uint8) for i in range(n)]


def frame_number(frame: np.ndarray) -> int:
    """Inverse of :func:`clip_frames` for one decoded frame [H, W, 3]."""
    return round(float(frame.mean()) / 6)


def run_in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(i)`` for ``i < count`` on ``count`` threads at once; the exceptions raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as error:  # reported to the caller
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
