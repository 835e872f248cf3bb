"""World v2's pretraining corpora, drawn from RNG streams of v2's spec generator that the world's
own clips never use (docs/design.md, "The demo world"), so no pretraining frame is a frame of
the world's clips.

* Frames (stream 1): single frames paired with phrases naming the group they show (count,
  size, colour, shape); distractors and the background stay unnamed.
* Clips (stream 2): whole clips sampled at the model's frame count, rendered straight to
  arrays (no codec), with a world-v2 caption (motion and order included). Clips come in
  *twins*: clip ``2p + 1`` is clip ``2p`` with one event's motion changed, and both captions
  name that event; ``pairs="twins"`` keeps both in one batch as hard negatives in motion, which
  measured worse than shuffling them (``pairs="video"``, the preset; docs/design.md).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
from collections.abc import Iterator

import numpy as np

from emcl.data.world.common import MOTIONS, group_path, size_of, subject
from emcl.data.world.v2 import (
    VERSION,
    ClipSpecV2,
    caption_with_facts,
    make_spec,
    objects,
    render_frame,
)
from emcl.video.sampling import uniform_indices

PRETRAIN_STREAM = 1  # RNG stream of the frame corpus (0: the world's clips)
CLIP_STREAM = 2  # RNG stream of the clip corpus


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


# ---------------------------------------------------------------------------- clips


def twin_spec(spec: ClipSpecV2, rng: np.random.Generator) -> tuple[ClipSpecV2, int]:
    """``spec`` with one event's motion changed (a motion its shape and size allow, path drawn
    again), and that event's index."""
    which = int(rng.integers(len(spec.events)))
    e = spec.events[which]
    banned = {e.motion, "spin" if e.shape == "circle" else "",
              "grow" if e.size == "large" else "shrink"}  # fmt: skip
    motion = str(rng.choice([m for m in MOTIONS if m not in banned]))
    _, path = group_path(rng, e.count, motion, e.size)
    changed = dataclasses.replace(e, motion=motion, path=tuple(round(p, 3) for p in path))
    events = (*spec.events[:which], changed, *spec.events[which + 1 :])
    return dataclasses.replace(spec, video_id=f"{spec.video_id}-twin", events=events), which


def _names(facts: list[list], event: list) -> bool:
    """Whether a caption's facts name ``event`` (its group and motion; size may be left out)."""
    return any(f[:2] == event[:2] and f[3:] == event[3:] for f in facts)


def pretrain_clip(seed: int, index: int, num_frames: int) -> tuple[np.ndarray, str]:
    """Clip ``index`` of the clip corpus: ``num_frames`` uniformly sampled frames
    ``[T, SIZE, SIZE, 3]`` uint8 and a caption naming the event its twin changes."""
    pair = index // 2
    spec = make_spec(seed, pair, f"pretrainclip{pair}", "pretrain", stream=CLIP_STREAM)
    twin, which = twin_spec(spec, np.random.default_rng([seed, pair, VERSION, CLIP_STREAM, 5]))
    if index % 2:
        spec = twin
    rng = np.random.default_rng([seed, index, VERSION, CLIP_STREAM, 11])
    event = spec.events[which].fact()
    for _ in range(50):  # almost always within a few draws; else the last one
        caption, facts = caption_with_facts(spec, rng)
        if _names(facts, event):
            break
    frames = np.stack([render_frame(spec, f) for f in uniform_indices(spec.num_frames, num_frames)])
    return frames, caption


def _clips_many(args: tuple[int, int, int, int]) -> tuple[np.ndarray, list[str]]:
    seed, start, stop, num_frames = args
    clips = [pretrain_clip(seed, i, num_frames) for i in range(start, stop)]
    return np.stack([c[0] for c in clips]), [c[1] for c in clips]


def pretrain_clip_chunks(
    seed: int, start: int, stop: int, num_frames: int, workers: int | None = None, chunk: int = 64
) -> Iterator[tuple[int, np.ndarray, list[str]]]:
    """Clips ``[start, stop)`` in order, as chunks ``(first index, frames [n, T, SIZE, SIZE, 3],
    captions)`` (rendered by ``workers`` processes; the caller keeps what it needs of each)."""
    jobs = [(seed, i, min(i + chunk, stop), num_frames) for i in range(start, stop, chunk)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        for job in jobs:
            yield (job[1], *_clips_many(job))
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        for job, (frames, texts) in zip(jobs, pool.imap(_clips_many, jobs), strict=True):
            yield job[1], frames, texts


__all__ = [
    "CLIP_STREAM",
    "PRETRAIN_STREAM",
    "pretrain_clip",
    "pretrain_clip_chunks",
    "pretrain_pair",
    "pretrain_pairs",
    "twin_spec",
]
