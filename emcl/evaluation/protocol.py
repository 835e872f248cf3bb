"""The evaluation protocol: base vs EMCL retrieval rows, the inference-module rows, sweeps.

Rows (docs/method.md §2), all in the protocol the models are trained with (``trained``:
text-conditioned frame pooling, cosine; one EM run per block of captions × videos as the
reference evaluates, emcl.core.protocols):

- ``base``: the base checkpoint (trained without EMCL), no EMCL;
- ``base+emcl``: the same features with EMCL added at inference only (the authors' reference
  initialisation and EMCL-Net's knobs, ``EMCL_NET_DEFAULTS``);
- ``emcl``: the checkpoint trained jointly with EMCL, with its learned prior.

Each row has t2v and v2t R@1/5/10, MdR, MnR, plain and with the inverted softmax (tau=0.01,
docs/method.md §3). Extra rows use the inference-module protocol (``inference``: mean-pooled
videos, EM on ``[videos; texts]``, ``INFERENCE_MODULE_DEFAULTS``; docs/method.md §2.2).
Sweeps (emcl/evaluation/sweep.py) vary beta, K, the iterations and lam. The reports are
emcl/evaluation/report.py; the command is ``python -m emcl evaluate`` (emcl/cli/evaluate.py).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from emcl.core.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.core.protocols import BLOCK, INFERENCE, PROTOCOLS, TRAINED, Protocol
from emcl.data.datasets import read_dataset
from emcl.data.gallery import build_gallery
from emcl.data.world import ensure_demo_world
from emcl.evaluation.sweep import Curve, Measure, Metrics, Sweep, run_sweep
from emcl.model.checkpoint import read_config
from emcl.model.encoder import Encoder
from emcl.paths import (
    DEMO_BASE_CHECKPOINT,
    DEMO_EMCL_CHECKPOINT,
    demo_world_dir,
    features_dir,
)
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.metrics import retrieval_metrics

DSL_TEMPERATURE = 0.01  # t2v_temp = v2t_temp in the reference


@dataclass(frozen=True)
class EvalConfig:
    data: str
    checkpoint: str  # jointly trained with EMCL
    base_checkpoint: str  # trained without EMCL
    split: str = "test"
    inference_em: EMParams = EMCL_NET_DEFAULTS  # base+emcl knobs (as-trained protocol)
    module_em: EMParams = INFERENCE_MODULE_DEFAULTS  # the inference-module protocol's knobs
    betas: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)
    ks: tuple[int, ...] = (2, 8, 32, 64)
    iters: tuple[int, ...] = (1, 3, 9)
    lams: tuple[float, ...] = (1.0, 0.1, 0.01)  # with the symmetry-breaking "data" init
    module_betas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # inference-module protocol


PRESETS = {
    # The app's demo world (built on first use) and the shipped demo checkpoints.
    "demo": EvalConfig(
        data=str(demo_world_dir()),
        checkpoint=str(DEMO_EMCL_CHECKPOINT),
        base_checkpoint=str(DEMO_BASE_CHECKPOINT),
    ),
    "msrvtt": EvalConfig(
        data="data/msrvtt",
        checkpoint="runs/msrvtt-emcl-s0/best",
        base_checkpoint="runs/msrvtt-base-s0/best",
    ),
}


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Features:
    text: Tensor  # [Nt, D] sentence features
    frames: Tensor  # [Nv, T, D] after temporal aggregation
    video: Tensor  # [Nv, D] mean of normalised frames
    text_to_video: list[int]  # [Nt] video row of each caption
    skipped: list[dict[str, str]]
    prior: Tensor | None
    frame_temp: float
    video_ids: tuple[str, ...] = ()  # [Nv] the gallery's ids, row order


def extract(
    checkpoint: str | os.PathLike,
    data: str,
    split: str,
    cache_dir: str | os.PathLike,
    device: str = "auto",
    progress: bool = True,
) -> Features:
    """Encode the split with a checkpoint (video features through the gallery cache)."""
    encoder = Encoder.from_checkpoint(checkpoint, device)
    records = read_dataset(data, split)
    gallery = build_gallery(
        records,
        encoder,
        cache_dir,
        num_frames=encoder.num_frames,
        size=encoder.image_size,
        progress=progress,
    )
    texts: list[str] = []
    owner: list[int] = []
    for row, record in enumerate(gallery.records):
        texts += record.captions
        owner += [row] * len(record.captions)
    sentence = encoder.encode_texts(texts)["sentence"]
    return Features(
        text=sentence,
        frames=gallery.frame_embeddings.float(),
        video=gallery.video_embeddings.float(),
        text_to_video=owner,
        skipped=gallery.report.skipped,
        prior=encoder.prior,
        frame_temp=encoder.config.frame_temp,
        video_ids=tuple(r.video_id for r in gallery.records),
    )


# --------------------------------------------------------------------------------------------
# Scores and metrics
# --------------------------------------------------------------------------------------------
def scores(
    features: Features,
    params: EMParams | None,
    protocol: Protocol = TRAINED,
) -> Tensor:
    """``[Nt, Nv]`` similarity in the reference block protocol (``params=None``: no EMCL)."""
    prior = features.prior if params is not None and params.init == "prior" else None
    return similarity_matrix(
        features.text,
        videos=features.video if protocol == INFERENCE else None,
        frames=features.frames if protocol == TRAINED else None,
        params=params,
        prior=prior,
        protocol=protocol,
        frame_temp=features.frame_temp,
    )


def one_caption_per_video(features: Features) -> bool:
    return len(features.text_to_video) == features.frames.shape[0] and all(
        v == i for i, v in enumerate(features.text_to_video)
    )


def metrics(sim: Tensor, features: Features) -> dict[str, Any]:
    """Plain metrics and, as the reference does, the inverted softmax ones (docs/method.md §3).

    ``sim`` is ``[Nt, Nv]``: t2v ranks each row (a caption) over the videos, v2t each video over
    the captions (grouped per video when a video has several)."""
    owner = None if one_caption_per_video(features) else features.text_to_video
    plain = retrieval_metrics(sim, owner)
    inverted = retrieval_metrics(sim, owner, inverted_softmax_temp=DSL_TEMPERATURE)
    return {"t2v": plain["t2v"], "v2t": plain["v2t"], "inverted_softmax": inverted}


def params_dict(params: EMParams | None) -> dict[str, Any] | None:
    return None if params is None else dataclasses.asdict(params)


def evaluate(
    cfg: EvalConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    sweeps: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """The three rows, the inference-module rows and the sweeps, as one JSON-able dict.

    ``cache_dir``: the gallery feature cache, shared with the app (default: under the cache
    root, emcl.paths).
    """
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir is not None else features_dir()
    ensure_demo_world(cfg.data, progress, cfg.split)  # the app's demo world: built if missing
    base = extract(cfg.base_checkpoint, cfg.data, cfg.split, cache_dir, device, progress)
    joint = extract(cfg.checkpoint, cfg.data, cfg.split, cache_dir, device, progress)
    if joint.prior is None:
        raise ValueError(f"{cfg.checkpoint} has no EMCL layer: pass the jointly trained model")
    joint_config, _ = read_config(cfg.checkpoint)
    joint_em = joint_config.emcl.params()
    t_features = time.perf_counter() - t0

    def row(features: Features, params: EMParams | None, protocol: Protocol = TRAINED) -> dict:
        result = metrics(scores(features, params, protocol), features)
        return result | {"protocol": protocol, "em": params_dict(params)}

    result: dict[str, Any] = {
        "base": row(base, None),
        "base+emcl": row(base, cfg.inference_em),
        "emcl": row(joint, joint_em),
        "inference_module": {
            "base": row(base, None, INFERENCE),
            "base+emcl": row(base, cfg.module_em, INFERENCE),
        },
    }
    if sweeps:
        result["sweeps"] = run_sweeps(cfg, base, joint, joint_em)
    result["meta"] = {
        "data": cfg.data,
        "split": cfg.split,
        "videos": int(base.frames.shape[0]),
        "captions": len(base.text_to_video),
        "skipped": base.skipped,
        "checkpoint": str(cfg.checkpoint),
        "base_checkpoint": str(cfg.base_checkpoint),
        "blocks": {protocol: list(BLOCK[protocol]) for protocol in PROTOCOLS},
        "dsl_temperature": DSL_TEMPERATURE,
        "feature_seconds": round(t_features, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


def run_sweeps(
    cfg: EvalConfig, base: Features, joint: Features, joint_em: EMParams
) -> dict[str, dict[str, Any]]:
    """Metrics along one knob at a time (the others at the row's setting), as
    :class:`~emcl.evaluation.sweep.Sweep` JSON keyed by sweep name."""
    without_em: dict[tuple[int, str], Metrics] = {}  # one reference per model and protocol

    def measure(features: Features, protocol: Protocol = TRAINED) -> Measure:
        def at(params: EMParams | None) -> Metrics:
            if params is not None:
                return metrics(scores(features, params, protocol), features)
            key = (id(features), protocol)
            if key not in without_em:
                without_em[key] = metrics(scores(features, None, protocol), features)
            return without_em[key]

        return at

    em = cfg.inference_em
    plain = {"base+emcl": Curve(em, measure(base), "base")}
    sweeps: dict[str, Sweep] = {
        "beta": run_sweep(
            "beta", cfg.betas, plain | {"emcl": Curve(joint_em, measure(joint), "emcl, no EM")}
        ),
        "k": run_sweep("k", cfg.ks, plain),
        "iters": run_sweep("iters", cfg.iters, plain),
        "lam": run_sweep(
            "lam",
            cfg.lams,
            {"base+emcl (data init)": Curve(replace(em, init="data"), measure(base), "base")},
        ),
        "beta (inference module)": run_sweep(
            "beta",
            cfg.module_betas,
            {
                "base+emcl (inference module)": Curve(
                    cfg.module_em, measure(base, INFERENCE), "base (inference module)"
                )
            },
        ),
    }
    return {name: sweep.to_json() for name, sweep in sweeps.items()}


__all__ = [
    "DSL_TEMPERATURE",
    "PRESETS",
    "EvalConfig",
    "Features",
    "evaluate",
    "extract",
    "metrics",
    "run_sweeps",
    "scores",
]
