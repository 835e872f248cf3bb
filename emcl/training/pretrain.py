"""CLIP-like pretraining data and the backbone hand-over to the video models.

The corpora are world v2's pretraining streams (emcl/data/world/pretrain.py), drawn from their
own RNG streams, so no frame of the world's clips is in them. A one-frame model pretrains on
frames paired with phrases (:func:`pretrain_pairs`); a video model on whole clips with world-v2
captions, in motion twins (:func:`pretrain_clip_chunks`). Items ``[0, corpus)`` train, the next
``val_videos`` validate. A frame is a one-frame "clip", so the training loop, the loss and the
checkpoint format are the video models' own.

:func:`init_backbone` starts a video model from a pretrained checkpoint: its CLIP weights, and
its temporal transformer when the source has the same one (a video-pretrained model), else the
CLIP4Clip initialisation of the temporal transformer from the loaded text encoder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from emcl.data.world.pretrain import pretrain_clip_chunks, pretrain_pairs
from emcl.model.checkpoint import CheckpointError, check_state, load_checkpoint
from emcl.model.model import EMCLRetrievalModel
from emcl.training.data import Split
from emcl.training.presets import TrainConfig

# The two pretraining stages, each a command; the fine-tunes start from the second's output.
FRAME_PRETRAIN_COMMAND = "python -m emcl train --preset demo-pretrain --out runs/demo-pretrain"
PRETRAIN_COMMAND = (
    "python -m emcl train --preset demo-pretrain-video --out runs/demo-pretrain-video"
)


def make_command(path: str | os.PathLike) -> str:
    """What makes the missing backbone at ``path``: the frame stage for its folder (the video
    stage's starting point), else both stages."""
    if "demo-pretrain" in Path(path).parts and "demo-pretrain-video" not in Path(path).parts:
        return FRAME_PRETRAIN_COMMAND
    return f"{FRAME_PRETRAIN_COMMAND}` then `{PRETRAIN_COMMAND}"


def corpus_split(
    model: EMCLRetrievalModel, seed: int, start: int, stop: int, workers: int | None = None
) -> Split:
    """Pairs ``[start, stop)`` of the corpus as a :class:`Split` of one-frame clips."""
    t0 = time.perf_counter()
    frames, phrases = pretrain_pairs(seed, stop, workers)
    frames, phrases = frames[start:], phrases[start:]
    resized = model.resize_frames(frames).numpy()[:, None]  # [N, 1, S, S, 3]
    return _one_caption_each(model, [f"pretrain{i}" for i in range(start, stop)], resized,
                             phrases, time.perf_counter() - t0)  # fmt: skip


def clip_corpus_split(
    model: EMCLRetrievalModel, seed: int, start: int, stop: int, workers: int | None = None
) -> Split:
    """Clips ``[start, stop)`` of the clip corpus at the model's frame count and resolution
    (resized chunk by chunk, so the world-size frames never all sit in memory)."""
    t0 = time.perf_counter()
    size, num_frames = model.image_size, model.config.num_frames
    frames = np.empty((stop - start, num_frames, size, size, 3), np.uint8)
    captions: list[str] = []
    for first, chunk, texts in pretrain_clip_chunks(seed, start, stop, num_frames, workers):
        frames[first - start : first - start + len(chunk)] = model.resize_frames(chunk).numpy()
        captions += texts
    return _one_caption_each(model, [f"pretrainclip{i}" for i in range(start, stop)], frames,
                             captions, time.perf_counter() - t0)  # fmt: skip


def _one_caption_each(
    model: EMCLRetrievalModel, ids: list[str], frames: np.ndarray, captions: list[str],
    seconds: float,
) -> Split:  # fmt: skip
    """A corpus :class:`Split`: item ``i`` is ``frames[i]`` with the one caption ``captions[i]``."""
    rows = np.arange(len(captions))
    return Split(video_ids=ids, frames=frames, token_ids=model.tokenize(captions),
                 caption_owner=rows, first_caption=rows, decode_seconds=seconds)  # fmt: skip


def corpus_splits(model: EMCLRetrievalModel, cfg: TrainConfig) -> tuple[Split, Split]:
    """(train, val) of the pretraining corpus (frames for a one-frame model, clips otherwise):
    the first ``cfg.corpus`` items, then the next ``cfg.val_videos``. The corpus seed is the
    world's (0), not the run's: every run sees the same corpus."""
    stop = cfg.corpus + cfg.val_videos
    workers = 1 if stop < 2048 else None
    if model.config.num_frames > 1:
        if cfg.corpus % 2 or cfg.val_videos % 2:
            raise ValueError("the clip corpus comes in twins: corpus and val_videos must be even")
        return (
            clip_corpus_split(model, 0, 0, cfg.corpus, workers),
            clip_corpus_split(model, 0, cfg.corpus, stop, workers),
        )
    split = corpus_split(model, 0, 0, stop, workers=workers)
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
            f"no pretrained checkpoint at {path}: make it with `{make_command(path)}`"
        )
    source = load_checkpoint(path)
    if source.config.backbone != model.config.backbone:
        raise CheckpointError(
            f"{path} is a {source.config.backbone} checkpoint; this model's backbone is "
            f"{model.config.backbone}"
        )
    prefixes = ("clip.", "temporal.") if same_temporal(source, model) else ("clip.",)
    theirs = {k: v for k, v in source.state_dict().items() if k.startswith(prefixes)}
    mine = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    check_state(mine, theirs, str(path))
    with torch.no_grad():
        for key, value in theirs.items():
            mine[key].copy_(value)
    if "temporal." in prefixes:
        return
    if model.temporal is not None and model.clip.transformer.width == model.embed_dim:
        model.temporal.init_from_text(model.clip)


def same_temporal(source: EMCLRetrievalModel, model: EMCLRetrievalModel) -> bool:
    """Whether ``source`` has ``model``'s temporal transformer (kind, depth, frame count)."""
    mine, theirs = model.config, source.config
    return (
        model.temporal is not None
        and source.temporal is not None
        and (mine.temporal, mine.temporal_layers, mine.num_frames)
        == (theirs.temporal, theirs.temporal_layers, theirs.num_frames)
    )


__all__ = [
    "FRAME_PRETRAIN_COMMAND",
    "PRETRAIN_COMMAND",
    "clip_corpus_split",
    "corpus_split",
    "corpus_splits",
    "init_backbone",
    "make_command",
    "same_temporal",
]
