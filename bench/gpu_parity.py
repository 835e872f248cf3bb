"""GPU suite, section ``parity``: the as-trained table on the device against the CPU (issue 18,
point 3: "CPU and GPU as-trained tables equal to 0.1 point").

Sources of difference, measured apart:

- ``table``: the same features (the EMCL demo checkpoint's captions over a synthetic gallery,
  bench/gpu_common.py) scored by the table engine on the CPU in fp32 and on the device in fp32
  and, where it is another, in the engine's default dtype (bench/table_bench.py's
  ``table_parity``);
- ``inference``: the inference module's block matrix and one search's EMCL top 10 (a stable
  ``data`` init: the reference init's split depends on float rounding at sharp temperatures);
- ``extraction``: the same decoded clips (smooth random pixels, 12 frames) through the EMCL
  demo model's encoder on the CPU in fp32, and on the device in fp32 and at its default
  precision (the gallery's: bf16 autocast on a GPU); all three scored by the CPU table against
  captions placed near the CPU features, so only the features differ.

R@1 differences are in points (percent of the captions), at the checkpoint's own EM settings.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.gpu_common import SuiteRun, synthetic_frames, synthetic_gallery
from bench.table_bench import table_parity
from emcl.core.em import EMParams
from emcl.core.protocols import INFERENCE
from emcl.model.encoder import Encoder
from emcl.model.model import mean_video
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.emclnet_table import EmclNetTable
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.metrics import retrieval_metrics
from emcl.retrieval.ranking import rank_query

CPU = torch.device("cpu")
METRICS = ("R1", "R5", "R10", "MdR", "MnR")
TEXT_NOISE = 0.6  # relative to the clip's direction: t2v R@1 about 40 at 1,000 clips


def _metrics(text: Tensor, frames: Tensor, temp: float, params, prior, **options) -> dict:
    """t2v/v2t metrics of the as-trained table without and with the EM, on ``text``'s device
    (``options``: the table's, e.g. its dtype)."""
    table = EmclNetTable(text, frames, temperature=temp, **options)
    with torch.inference_mode():
        plain, em = table.base_scores(), table.scores(params, prior)
    return {
        "dtype": str(table.text.dtype),
        "no_em": retrieval_metrics(plain.float().cpu()),
        "em": retrieval_metrics(em.float().cpu()),
    }


def _differences(reference: dict, other: dict) -> dict[str, float]:
    """Largest absolute difference per metric over both rows and directions."""
    pairs = [(reference[r][d], other[r][d]) for r in ("no_em", "em") for d in ("t2v", "v2t")]
    return {m: round(max(abs(a[m] - b[m]) for a, b in pairs), 4) for m in METRICS}


def _table_parity(run: SuiteRun, n: int) -> dict:
    """bench/table_bench.py's ``table_parity`` on the demo EMCL checkpoint's captions over a
    synthetic gallery, in fp32 and, if it differs, in the table's default dtype."""
    _, cpu_emcl = run.encoders(CPU)
    gallery = synthetic_gallery(cpu_emcl, n, 12)
    frames = gallery.frames.float()
    options = {
        "params": cpu_emcl.config.emcl.params(),
        "prior": cpu_emcl.prior,
        "temperature": cpu_emcl.config.frame_temp,
        "device": run.device,
    }
    default = inspect.signature(EmclNetTable).parameters["dtype"].default
    out: dict[str, object] = {"videos": n, "default_dtype": str(default)}
    out["fp32"] = table_parity(gallery.sentences, frames, dtype=torch.float32, **options)
    if default != torch.float32:
        out["default"] = table_parity(gallery.sentences, frames, dtype=default, **options)
    out["inference"] = _inference_parity(gallery.sentences, mean_video(frames), run.device)
    return out


def _inference_parity(text: Tensor, videos: Tensor, device: torch.device) -> dict:
    params = EMParams(k=16, iters=9, lam=0.1, beta=3.0, init="data", seed=0)
    there = similarity_matrix(text, videos=videos, params=params, protocol=INFERENCE)
    here = similarity_matrix(
        text.to(device), videos=videos.to(device), params=params, protocol=INFERENCE
    )
    index = GalleryIndex.build([f"v{i}" for i in range(len(videos))], videos)
    moved = dataclasses.replace(index, embeddings=index.embeddings.to(device))
    top = [
        [h.video_id for h in rank_query(q, i, params, context="gallery").emcl]
        for q, i in ((text[0], index), (text[0].to(device), moved))
    ]
    return {
        "block_matrix_max_abs_diff": float((here.cpu() - there).abs().max()),
        "search_top10_equal": top[0] == top[1],
    }


def smooth_clips(n: int, num_frames: int, size: int, seed: int = 0) -> Tensor:
    """uint8 ``[n, T, size, size, 3]`` clips: coarse random colour fields, drifting in time."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)  # [n, 3, 6, 6]
    drift = torch.rand(n, 3, 6, 6, generator=g) - 0.5
    steps = torch.linspace(0, 1, num_frames)[None, :, None, None, None]  # [1, T, 1, 1, 1]
    fields = (coarse[:, None] + 0.5 * steps * drift[:, None]).clamp(0, 1).flatten(0, 1)
    big = F.interpolate(fields, size=(size, size), mode="bilinear", align_corners=False)
    pixels = (big * 255).round().to(torch.uint8).reshape(n, num_frames, 3, size, size)
    return pixels.permute(0, 1, 3, 4, 2).contiguous()


def _features(encoder, clips: Tensor) -> Tensor:
    """Frame features ``[n, T, D]`` fp32 of uint8 ``clips`` as the gallery extracts them."""
    return encoder.encode_videos(clips, batch_size=128)["frames"]


def _extraction_parity(run: SuiteRun, n: int) -> dict:
    _, cpu_emcl = run.encoders(CPU)
    _, dev_emcl = run.encoders(run.device)  # precision "auto": the gallery's default
    clips = smooth_clips(n, 12, 128)
    features = {
        "cpu_fp32": _features(cpu_emcl, clips),
        "device_fp32": _features(Encoder(dev_emcl.model, run.device, "fp32"), clips),
        "device_default": _features(dev_emcl, clips),
    }
    reference = features["cpu_fp32"]
    # Captions near each clip's CPU features (norm of a demo sentence, about 15), with noise
    # enough for near-ties, so the table has rankings a feature change can flip.
    texts = synthetic_frames(mean_video(reference), 1, TEXT_NOISE, seed=3)[:, 0].float() * 15.0
    params, temp, prior = cpu_emcl.config.emcl.params(), cpu_emcl.config.frame_temp, cpu_emcl.prior
    metrics = {k: _metrics(texts, v, temp, params, prior) for k, v in features.items()}
    out: dict[str, object] = {"clips": n, "default_precision": dev_emcl.precision, **metrics}
    for name in ("device_fp32", "device_default"):
        change = (features[name] - reference).norm(dim=-1) / reference.norm(dim=-1)
        out[f"{name}_feature_rel_diff"] = {
            "max": float(change.max()),
            "median": float(change.median()),
        }
        out[f"{name}_vs_cpu"] = _differences(metrics["cpu_fp32"], metrics[name])
    return out


def parity_section(run: SuiteRun) -> dict:
    """Section (c): table and extraction parity with the CPU (module doc)."""
    n = run.pick(1000, 64)
    out = run.output
    table = out["table"] = _table_parity(run, n)
    extraction = out["extraction"] = _extraction_parity(run, n)
    fp32 = [table["fp32"]["r1_max_diff_points"], extraction["device_fp32_vs_cpu"]["R1"]]
    out["fp32_r1_max_difference"] = max(fp32)
    out["fp32_within_0.1_point"] = max(fp32) <= 0.1
    default = table.get("default", table["fp32"])["r1_max_diff_points"]
    out["default_r1_max_difference"] = max(default, extraction["device_default_vs_cpu"]["R1"])
    return out


__all__ = ["parity_section", "smooth_clips"]
