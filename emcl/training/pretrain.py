"""CLIP-like pretraining data and the backbone hand-over to the video models.

The corpus is world v2's pretraining stream (emcl/data/world/pretrain.py, :func:`pretrain_pairs`):
single frames paired with phrases naming the group the frame shows, drawn from their own RNG
stream, so no frame of the world's clips is in it. Pairs ``[0, corpus)`` train, the next
``val_videos`` validate. Each frame is a one-frame "clip", so the training loop, the loss and
the checkpoint format are the video models' own.

:func:`init_backbone` starts a video model from a pretrained checkpoint: its CLIP weights, then
the CLIP4Clip initialisation of the temporal transformer from that text encoder.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from emcl.data.world.pretrain import pretrain_pairs
from emcl.model.checkpoint import CheckpointError, check_state, load_checkpoint
from emcl.model.model import EMCLRetrievalModel
from emcl.training.data import Split
from emcl.training.presets import TrainConfig

PRETRAIN_COMMAND = "python -m emcl train --preset demo-pretrain --out runs/demo-pretrain"


def corpus_split(
    model: EMCLRetrievalModel, seed: int, start: int, stop: int, workers: int | None = None
) -> Split:
    """Pairs ``[start, stop)`` of the corpus as a :class:`Split` of one-frame clips."""
    t0 = time.perf_counter()
    frames, phrases = pretrain_pairs(seed, stop, workers)
    frames, phrases = frames[start:], phrases[start:]
    resized = model.resize_frames(frames).numpy()[:, None]  # [N, 1, S, S, 3]
    rows = np.arange(len(phrases))
    return Split(
        video_ids=[f"pretrain{i}" for i in range(start, stop)],
        frames=resized,
        token_ids=model.tokenize(phrases),
        caption_owner=rows,
        first_caption=rows,
        decode_seconds=time.perf_counter() - t0,
    )


def corpus_splits(model: EMCLRetrievalModel, cfg: TrainConfig) -> tuple[Split, Split]:
    """(train, val) of the pretraining corpus: the first ``cfg.corpus`` pairs, then the next
    ``cfg.val_videos``. The corpus seed is the world's (0), not the run's: every run sees the
    same corpus."""
    if model.config.num_frames != 1:
        raise ValueError("pretraining pairs are single frames: the model needs num_frames=1")
    stop = cfg.corpus + cfg.val_videos
    split = corpus_split(model, 0, 0, stop, workers=1 if stop < 2048 else None)
    train = Split(
        video_ids=split.video_ids[: cfg.corpus],
        frames=split.frames[: cfg.corpus],
        token_ids=split.token_ids[: cfg.corpus],
        caption_owner=split.caption_owner[: cfg.corpus],
        first_caption=split.first_caption[: cfg.corpus],
        decode_seconds=split.decode_seconds,
    )
    rest = np.arange(stop - cfg.corpus)
    val = Split(
        video_ids=split.video_ids[cfg.corpus :],
        frames=split.frames[cfg.corpus :],
        token_ids=split.token_ids[cfg.corpus :],
        caption_owner=rest,
        first_caption=rest,
    )
    return train, val


def init_backbone(model: EMCLRetrievalModel, path: str | os.PathLike) -> None:
    """Load the CLIP weights of the checkpoint at ``path`` into ``model`` (strictly: every CLIP
    key and shape), then re-initialise the temporal transformer from the loaded text encoder."""
    if not os.path.exists(path):
        raise CheckpointError(
            f"no pretrained checkpoint at {path}: make it with `{PRETRAIN_COMMAND}`"
        )
    source = load_checkpoint(path)
    if source.config.backbone != model.config.backbone:
        raise CheckpointError(
            f"{path} is a {source.config.backbone} checkpoint; this model's backbone is "
            f"{model.config.backbone}"
        )
    theirs = {k: v for k, v in source.state_dict().items() if k.startswith("clip.")}
    mine = {k: v for k, v in model.state_dict().items() if k.startswith("clip.")}
    check_state(mine, theirs, str(path))
    with torch.no_grad():
        for key, value in theirs.items():
            mine[key].copy_(value)
    if model.temporal is not None and model.clip.transformer.width == model.embed_dim:
        model.temporal.init_from_text(model.clip)


__all__ = ["PRETRAIN_COMMAND", "corpus_split", "corpus_splits", "init_backbone"]
