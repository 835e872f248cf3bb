"""Evaluate base vs EMCL retrieval: ``python -m emcl.evaluate --preset demo --json out.json``.

Rows (PAPER.md §2), all with the EMCL-Net protocol the models are trained with (text-conditioned
frame pooling, cosine; EM per 32 texts x 32 videos block, as the reference evaluates):

- ``base``: the base checkpoint (trained without EMCL), no EMCL;
- ``base+emcl``: the same features with EMCL added at inference only (the authors' reference
  initialisation and EMCL-Net knobs: K=32, 9 iterations, lam=1, beta=3);
- ``emcl``: the checkpoint trained jointly with EMCL, with its learned prior.

Each row has t2v and v2t R@1/5/10, MdR, MnR, plain and with the inverted softmax (tau=0.01,
PAPER.md §3). Extra rows use the inference-module protocol (mean-pooled videos, EM on
``[videos; texts]``, 64 x 64 blocks, K=7, 10 iterations, lam=0.1, beta=4; PAPER.md §2.2).
Sweeps vary beta, K, the iterations and lam. Writes the JSON, a markdown table
(``<json stem>.md``) and a plotly figure (``<json stem>.html``) next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from emcl.checkpoint import read_config
from emcl.data import read_dataset
from emcl.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.encoder import Encoder
from emcl.gallery import build_gallery
from emcl.metrics import retrieval_metrics
from emcl.search import similarity_matrix
from emcl.train import DEMO_WORLD, ensure_demo_world

DSL_TEMPERATURE = 0.01  # t2v_temp = v2t_temp in the reference
FEATURE_CACHE = Path(".cache/features")  # the app's gallery cache: features are shared


@dataclass(frozen=True)
class EvalConfig:
    data: str
    checkpoint: str  # jointly trained with EMCL
    base_checkpoint: str  # trained without EMCL
    split: str = "test"
    inference_em: EMParams = EMCL_NET_DEFAULTS  # base+emcl knobs (EMCL-Net protocol)
    module_em: EMParams = INFERENCE_MODULE_DEFAULTS  # the inference-module protocol's knobs
    betas: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)
    ks: tuple[int, ...] = (2, 8, 32, 64)
    iters: tuple[int, ...] = (1, 3, 9)
    lams: tuple[float, ...] = (1.0, 0.1, 0.01)  # with the symmetry-breaking "data" init
    module_betas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # inference-module protocol


PRESETS = {
    "demo": EvalConfig(
        data=str(DEMO_WORLD),
        checkpoint="checkpoints/demo-emcl",
        base_checkpoint="checkpoints/demo-base",
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


def extract(
    checkpoint: str | os.PathLike,
    data: str,
    split: str,
    cache_dir: Path,
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
    )


# --------------------------------------------------------------------------------------------
# Scores and metrics
# --------------------------------------------------------------------------------------------
def scores(
    features: Features,
    params: EMParams | None,
    protocol: str = "emclnet",
) -> Tensor:
    """``[Nt, Nv]`` similarity in the reference block protocol (``params=None``: no EMCL)."""
    prior = features.prior if params is not None and params.init == "prior" else None
    return similarity_matrix(
        features.text,
        videos=features.video if protocol == "inference" else None,
        frames=features.frames if protocol == "emclnet" else None,
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
    """Plain metrics and, as the reference does, the inverted softmax ones (PAPER.md §3)."""
    owner = None if one_caption_per_video(features) else features.text_to_video
    plain = retrieval_metrics(sim, owner)
    inverted = retrieval_metrics(sim, owner, inverted_softmax_temp=DSL_TEMPERATURE)
    return {"t2v": plain["t2v"], "v2t": plain["v2t"], "inverted_softmax": inverted}


def params_dict(params: EMParams | None) -> dict[str, Any] | None:
    return None if params is None else dataclasses.asdict(params)


def evaluate(
    cfg: EvalConfig,
    *,
    cache_dir: Path = FEATURE_CACHE,
    sweeps: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """The three rows, the inference-module rows and the sweeps, as one JSON-able dict."""
    t0 = time.perf_counter()
    ensure_demo_world(cfg.data)
    base = extract(cfg.base_checkpoint, cfg.data, cfg.split, cache_dir, device, progress)
    joint = extract(cfg.checkpoint, cfg.data, cfg.split, cache_dir, device, progress)
    if joint.prior is None:
        raise ValueError(f"{cfg.checkpoint} has no EMCL layer: pass the jointly trained model")
    joint_config, _ = read_config(cfg.checkpoint)
    joint_em = joint_config.emcl.params()
    t_features = time.perf_counter() - t0

    def row(features: Features, params: EMParams | None, protocol: str = "emclnet") -> dict:
        result = metrics(scores(features, params, protocol), features)
        return result | {"protocol": protocol, "em": params_dict(params)}

    result: dict[str, Any] = {
        "base": row(base, None),
        "base+emcl": row(base, cfg.inference_em),
        "emcl": row(joint, joint_em),
        "inference_module": {
            "base": row(base, None, "inference"),
            "base+emcl": row(base, cfg.module_em, "inference"),
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
        "blocks": {"emclnet": [32, 32], "inference": [64, 64]},
        "dsl_temperature": DSL_TEMPERATURE,
        "feature_seconds": round(t_features, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


def run_sweeps(
    cfg: EvalConfig, base: Features, joint: Features, joint_em: EMParams
) -> dict[str, list[dict]]:
    """R@1 along one knob at a time (the others at the row's setting)."""

    def point(features: Features, params: EMParams, knob: str, value: float, protocol: str) -> dict:
        result = metrics(scores(features, params, protocol), features)
        return {
            knob: value,
            "t2v_R1": result["t2v"]["R1"],
            "v2t_R1": result["v2t"]["R1"],
            "t2v_R1_inverted_softmax": result["inverted_softmax"]["t2v"]["R1"],
            "v2t_R1_inverted_softmax": result["inverted_softmax"]["v2t"]["R1"],
        }

    def sweep(
        features: Features, params: EMParams, knob: str, values, protocol="emclnet", **fixed
    ) -> list[dict]:
        return [
            point(features, dataclasses.replace(params, **{knob: v}, **fixed), knob, v, protocol)
            for v in values
        ]

    em = cfg.inference_em
    return {
        "beta/base+emcl": sweep(base, em, "beta", cfg.betas),
        "beta/emcl": sweep(joint, joint_em, "beta", cfg.betas),
        "k/base+emcl": sweep(base, em, "k", cfg.ks),
        "iters/base+emcl": sweep(base, em, "iters", cfg.iters),
        "lam/base+emcl(data init)": sweep(base, em, "lam", cfg.lams, init="data"),
        "beta/base+emcl(inference module)": sweep(
            base, cfg.module_em, "beta", cfg.module_betas, "inference"
        ),
    }


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    """The rows as a markdown table, then the sweeps (t2v / v2t R@1)."""
    head = (
        "| row | protocol | "
        + " | ".join(f"{d} R@1 | R@5 | R@10 | MdR | MnR" for d in ("t2v", "v2t"))
        + " |"
    )
    lines = [head, "|" + "---|" * 12]

    def cells(m: dict) -> str:
        return f"{m['R1']:.1f} | {m['R5']:.1f} | {m['R10']:.1f} | {m['MdR']:g} | {m['MnR']:.1f}"

    rows = [(name, result[name]) for name in ("base", "base+emcl", "emcl")]
    rows += [(f"{name} (inference module)", r) for name, r in result["inference_module"].items()]
    for name, r in rows:
        lines.append(f"| {name} | {r['protocol']} | {cells(r['t2v'])} | {cells(r['v2t'])} |")
    lines += ["", "With the inverted softmax (tau = 0.01):", "", head, "|" + "---|" * 12]
    for name, r in rows:
        inv = r["inverted_softmax"]
        lines.append(f"| {name} | {r['protocol']} | {cells(inv['t2v'])} | {cells(inv['v2t'])} |")
    for name, points in result.get("sweeps", {}).items():
        knob = next(iter(points[0]))
        lines += ["", f"Sweep {name} (R@1; plain / inverted softmax):", ""]
        lines.append(f"| {knob} | t2v | v2t | t2v (IS) | v2t (IS) |")
        lines.append("|---|---|---|---|---|")
        for p in points:
            lines.append(
                f"| {p[knob]:g} | {p['t2v_R1']:.1f} | {p['v2t_R1']:.1f} | "
                f"{p['t2v_R1_inverted_softmax']:.1f} | {p['v2t_R1_inverted_softmax']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def figure_html(result: dict[str, Any], path: Path) -> bool:
    """One plotly panel per swept knob (R@1 vs value, base as a dashed line)."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return False
    sweeps = result.get("sweeps", {})
    knobs = ["beta", "k", "iters", "lam"]
    fig = make_subplots(rows=1, cols=len(knobs), subplot_titles=knobs)
    for col, knob in enumerate(knobs, start=1):
        for name, points in sweeps.items():
            if not name.startswith(f"{knob}/"):
                continue
            for metric, dash in (("t2v_R1", "solid"), ("v2t_R1", "dot")):
                fig.add_trace(
                    go.Scatter(
                        x=[p[knob] for p in points],
                        y=[p[metric] for p in points],
                        mode="lines+markers",
                        line={"dash": dash},
                        name=f"{name.split('/', 1)[1]} {metric[:3]}",
                        legendgroup=name,
                    ),
                    row=1,
                    col=col,
                )
        fig.add_hline(y=result["base"]["t2v"]["R1"], line_dash="dash", row=1, col=col)
        fig.update_xaxes(type="log" if knob in ("k", "lam") else "linear", row=1, col=col)
    fig.update_yaxes(title_text="R@1 (%)", row=1, col=1)
    fig.update_layout(title="EMCL sweeps (dashed: base t2v R@1)", height=420, width=1400)
    fig.write_html(path, include_plotlyjs=True)
    return True


def write_outputs(result: dict[str, Any], json_path: Path) -> list[Path]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    written = [json_path, json_path.with_suffix(".md")]
    written[1].write_text(markdown(result))
    if "sweeps" in result and figure_html(result, json_path.with_suffix(".html")):
        written.append(json_path.with_suffix(".html"))
    return written


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emcl.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--checkpoint", help="checkpoint trained jointly with EMCL")
    parser.add_argument("--base-checkpoint", help="checkpoint trained without EMCL")
    parser.add_argument("--data", help="dataset folder (MSR-VTT layout)")
    parser.add_argument("--split", help="split to evaluate (default: test)")
    parser.add_argument("--cache", help="gallery feature cache (default .cache/features)")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    overrides = {
        "checkpoint": args.checkpoint,
        "base_checkpoint": args.base_checkpoint,
        "data": args.data,
        "split": args.split,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cache = Path(args.cache) if args.cache else FEATURE_CACHE
    result = evaluate(
        cfg, cache_dir=cache, sweeps=not args.no_sweeps, device=args.device,
        progress=not args.quiet,
    )  # fmt: skip
    written = write_outputs(result, Path(args.json))
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
