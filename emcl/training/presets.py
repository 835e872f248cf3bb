"""Training configurations as data: :class:`TrainConfig` and the named :data:`PRESETS`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.paths import REPO_ROOT, cache_root, demo_world_dir

PAIRS = ("all", "video", "twins")  # how an epoch draws its pairs (TrainConfig.pairs)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    data: str
    batch_size: int  # global batch (all ranks together)
    epochs: int
    lr_backbone: float  # CLIP parameters (incl. the logit scale)
    lr_new: float  # parameters outside CLIP (temporal transformer)
    warmup: float = 0.1  # share of the steps with a linear warm-up, then cosine decay
    weight_decay: float = 0.2  # on matrices only (not biases, LayerNorm, scalars)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    pairs: str = "all"  # "all": every (video, caption) pair per epoch; "video": each video once;
    # "twins": each video once, motion twins side by side (emcl/training/data.py, epoch_plan)
    val_every: int = 0  # steps between validations (0: once per epoch)
    val_videos: int = 1000  # validate on at most this many val clips (first caption each)
    seed: int = 0
    max_steps: int | None = None
    log_every: int = 10
    preset: str = "custom"
    init_from: str | None = None  # pretrained checkpoint: its CLIP weights start the model
    select: str = "val"  # "val": the best validation's checkpoint; "last": the final step's
    corpus: int = 0  # > 0: pretrain on this many world-v2 corpus items, not ``data``: (frame,
    # phrase) pairs for a one-frame model, (clip, caption) twins for a video model

    def __post_init__(self) -> None:
        if self.select not in ("val", "last"):
            raise ValueError(f"select must be 'val' or 'last', got {self.select!r}")
        if self.pairs not in PAIRS:
            raise ValueError(f"pairs must be one of {PAIRS}, got {self.pairs!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The demo's video model (v1 demo checkpoints and the world-v2 study alike): a small open_clip
# config, 12 frames, a 2-layer temporal transformer and the EMCL layer (dropped for the base).
DEMO_VIDEO_MODEL = ModelConfig(
    backbone=DEMO_BACKBONE,
    pretrained=None,
    num_frames=12,
    max_words=32,
    temporal="seqTransf",
    temporal_layers=2,
    emcl=EMCLConfig(),
)

PRESETS: dict[str, TrainConfig] = {
    # A small open_clip config trained from scratch on world v1 (no downloads): the recipe of
    # the first demo checkpoints, kept to reproduce them; about 20 minutes for both on 2 CPU
    # cores. The world is built on first use.
    "demo": TrainConfig(
        model=DEMO_VIDEO_MODEL,
        data=str(demo_world_dir(version=1)),
        batch_size=32,
        epochs=14,
        lr_backbone=1e-3,
        lr_new=1e-3,
        weight_decay=0.1,
        pairs="video",
        val_every=112,
        val_videos=200,
    ),
    # CLIP-like pretraining of the demo backbone on single frames of world-v2 clips paired with
    # phrases naming what the frame shows (emcl/training/pretrain.py; a corpus drawn from its
    # own RNG stream, so no frame of the world's clips is in it). From scratch: one lr.
    "demo-pretrain": TrainConfig(
        model=ModelConfig(
            backbone=DEMO_BACKBONE,
            pretrained=None,
            num_frames=1,
            max_words=32,
            temporal="meanP",
            emcl=None,
        ),
        data=str(cache_root() / "demo-pretrain"),  # unused: the corpus is rendered in memory
        batch_size=256,
        epochs=6,
        lr_backbone=1e-3,
        lr_new=1e-3,
        weight_decay=0.1,
        pairs="video",
        val_every=0,
        val_videos=1000,
        select="last",
        corpus=50_000,
    ),
    # Video pretraining of the demo video model (the base, no EMCL layer) from the frame
    # backbone above: world-v2 clips with motion and order in their captions, rendered in
    # memory from their own RNG stream (emcl/data/world/pretrain.py), each clip once per epoch
    # in shuffled batches. Keeping each clip's motion twin in its batch (pairs="twins", hard
    # negatives) measured 13 points worse on the test split (docs/benchmarks.md §12).
    # 42 minutes on 2 CPU cores.
    "demo-pretrain-video": TrainConfig(
        model=dataclasses.replace(DEMO_VIDEO_MODEL, emcl=None),
        data=str(cache_root() / "demo-pretrain-video"),  # unused: the corpus is rendered in memory
        batch_size=64,
        epochs=4,
        lr_backbone=2e-4,
        lr_new=1e-3,
        weight_decay=0.1,
        pairs="video",
        val_every=0,
        val_videos=1000,
        select="last",
        corpus=48_000,
        init_from=str(REPO_ROOT / "runs" / "demo-pretrain" / "best"),
    ),
    # Fine-tuning on world v2 from the video-pretrained backbone, with the paper's two
    # learning-rate groups (temporal module high, CLIP low); a fixed step count (the last step
    # is the model).
    # The study (python -m emcl study) runs it per seed with and without EMCL.
    "demo-v2": TrainConfig(
        model=DEMO_VIDEO_MODEL,
        data=str(demo_world_dir(version=2)),
        batch_size=32,
        epochs=12,
        lr_backbone=1e-4,
        lr_new=1e-3,
        weight_decay=0.1,
        pairs="video",
        val_every=0,
        val_videos=300,
        select="last",
        init_from=str(REPO_ROOT / "runs" / "demo-pretrain-video" / "best"),
    ),
    # The reference EMCL-Net recipe on MSR-VTT 9k (docs/method.md §2.3): CLIP ViT-B/32 with
    # OpenAI weights, 12 frames, 32 words, batch 128, 5 epochs, lr 1e-4 (new) and 1e-7 (CLIP).
    "msrvtt": TrainConfig(
        model=ModelConfig(
            backbone="ViT-B-32",
            pretrained="openai",
            num_frames=12,
            max_words=32,
            temporal="seqTransf",
            temporal_layers=4,
            emcl=EMCLConfig(),
        ),
        data="data/msrvtt",
        batch_size=128,
        epochs=5,
        lr_backbone=1e-7,
        lr_new=1e-4,
        pairs="all",
        val_every=0,
        val_videos=1000,
    ),
}

__all__ = ["PRESETS", "TrainConfig"]
