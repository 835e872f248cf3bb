"""World v2's pretraining corpus: single frames paired with phrases naming the group they show.

Its clips come from a separate RNG stream of v2's spec generator, so no pretraining frame is a
frame of the world's clips (docs/design.md, "The demo world"). A phrase names the count, size,
colour and shape of the group; distractors and the background stay unnamed.
"""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np

from emcl.data.world.common import size_of, subject
from emcl.data.world.v2 import VERSION, make_spec, objects, render_frame

PRETRAIN_STREAM = 1  # RNG stream of the pretraining clips (0: the world's clips)


def pretrain_pair(seed: int, index: int) -> tuple[np.ndarray, str]:
    """Frame ``index`` of the pretraining corpus ``[SIZE, SIZE, 3]`` uint8 and its phrase."""
    spec = make_spec(seed, index, f"pretrain{index}", "pretrain", stream=PRETRAIN_STREAM)
    rng = np.random.default_rng([seed, index, VERSION, PRETRAIN_STREAM, 7])
    frame = int(rng.integers(spec.num_frames))
    e = spec.event_at(frame)
    shown = next(o for o in objects(spec, frame) if o.role == "main")
    phrase = subject(rng, count=e.count, size=size_of(shown.r), color=e.color, shape=e.shape,
                     with_size=bool(rng.random() < 0.7))  # fmt: skip
    return render_frame(spec, frame, whole_clip=False), phrase


def _pretrain_many(args: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    seed, start, stop = args
    pairs = [pretrain_pair(seed, i) for i in range(start, stop)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def pretrain_pairs(seed: int, n: int, workers: int | None = None) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` pretraining pairs: frames ``[n, SIZE, SIZE, 3]`` uint8 and phrases."""
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    chunk = max(1, min(512, -(-n // workers)))
    jobs = [(seed, i, min(i + chunk, n)) for i in range(0, n, chunk)]
    if workers == 1:
        parts = [_pretrain_many(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_pretrain_many, jobs)
    return np.concatenate([p[0] for p in parts]), [t for p in parts for t in p[1]]


__all__ = ["PRETRAIN_STREAM", "pretrain_pair", "pretrain_pairs"]
