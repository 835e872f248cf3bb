"""Training data: frames decoded once (a uint8 cache), captions tokenised once, epoch plans."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from emcl.data.datasets import read_dataset
from emcl.data.frame_cache import cache_frames
from emcl.model.model import EMCLRetrievalModel
from emcl.training.presets import TrainConfig


@dataclass
class Split:
    video_ids: list[str]
    frames: np.ndarray  # [N, T, S, S, 3] uint8
    token_ids: Tensor  # [C, L] every caption, tokenised
    caption_owner: np.ndarray  # [C] video row of each caption
    first_caption: np.ndarray  # [N] row in token_ids of each video's first caption
    failures: dict[str, str] = field(default_factory=dict)
    decode_seconds: float = 0.0


def load_split(
    model: EMCLRetrievalModel,
    root: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike | None,
    limit: int | None = None,
    progress: bool = True,
    workers: int = 2,
) -> Split:
    """The clips of ``split`` (at most ``limit``) at the model's frame count and resolution;
    ``cache_dir=None`` is the frame cache under the cache root (emcl.paths)."""
    records = read_dataset(root, split)[:limit]
    if not records:
        raise ValueError(f"no '{split}' clips under {root}")
    cached = cache_frames(
        [r.video_id for r in records],
        [r.path for r in records],
        num_frames=model.config.num_frames,
        size=model.image_size,
        cache_dir=cache_dir,
        progress=progress,
        workers=workers,
    )
    captions = {r.video_id: r.captions for r in records}
    texts: list[str] = []
    owner: list[int] = []
    first: list[int] = []
    for row, video_id in enumerate(cached.video_ids):
        first.append(len(texts))
        texts += captions[video_id]
        owner += [row] * len(captions[video_id])
    return Split(
        video_ids=cached.video_ids,
        frames=cached.frames,
        token_ids=model.tokenize(texts),
        caption_owner=np.asarray(owner),
        first_caption=np.asarray(first),
        failures=cached.failures,
        decode_seconds=cached.seconds,
    )


def epoch_plan(split: Split, epoch: int, cfg: TrainConfig) -> np.ndarray:
    """Caption rows ``[steps, batch]`` for one epoch, the same on every rank (seed + epoch).

    ``pairs="video"``: every video once with a random caption; ``"all"``: every caption once;
    ``"twins"``: as "video", with videos ``2p`` and ``2p + 1`` side by side in one batch (the
    clip corpus's motion twins, emcl/data/world/pretrain.py). The last incomplete batch is
    dropped so the global batch never changes size.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    n_videos = len(split.video_ids)
    if cfg.pairs == "twins":
        if n_videos % 2 or cfg.batch_size % 2:
            raise ValueError("pairs='twins' needs an even number of videos and an even batch")
        rows = _random_caption_rows(split, rng)
        order = (2 * rng.permutation(n_videos // 2))[:, None] + np.arange(2)  # [pairs, 2]
        rows = rows[order.reshape(-1)]
    elif cfg.pairs == "video":
        rows = _random_caption_rows(split, rng)[rng.permutation(n_videos)]
    else:  # "all" (TrainConfig admits only PAIRS)
        rows = rng.permutation(len(split.caption_owner))
    steps = len(rows) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"batch {cfg.batch_size} is larger than the {len(rows)} training pairs")
    return rows[: steps * cfg.batch_size].reshape(steps, cfg.batch_size)


def _random_caption_rows(split: Split, rng: np.random.Generator) -> np.ndarray:
    """One caption row per video ``[N]``, drawn uniformly among the video's captions."""
    counts = np.bincount(split.caption_owner, minlength=len(split.video_ids))
    return split.first_caption + (rng.random(len(split.video_ids)) * counts).astype(int)


def make_batch(
    model: EMCLRetrievalModel, split: Split, caption_rows: np.ndarray, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids ``[B, L]``, pixels ``[B, T, 3, S, S]`` and frame mask ``[B, T]``, on ``device``
    (the frames travel as uint8 and are normalised there)."""
    videos = split.caption_owner[caption_rows]
    frames = torch.from_numpy(np.ascontiguousarray(split.frames[videos]))  # [B, T, S, S, 3]
    pixels = model.frames_to_pixels(frames, device)
    mask = torch.ones(pixels.shape[:2], dtype=torch.bool, device=device)
    ids = split.token_ids[torch.from_numpy(caption_rows)]
    return ids.to(device), pixels, mask


__all__ = ["Split", "epoch_plan", "load_split", "make_batch"]
