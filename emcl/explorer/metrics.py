"""The Metrics tab's service: t2v/v2t metrics over the caption bank, sweeps of one knob, and
the caption × video similarity matrices both share (cached per snapshot and EM knobs)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from emcl.explorer.knobs import METRIC_PROTOCOLS, SWEEPS, KnobError, Knobs, choice
from emcl.explorer.results import MetricsResult, SweepResult
from emcl.explorer.snapshot import ModelView, Snapshot
from emcl.retrieval.blocks import DEFAULT_BLOCK, similarity_matrix
from emcl.retrieval.metrics import retrieval_metrics

if TYPE_CHECKING:
    from emcl.explorer.service import Explorer, Progress

METRICS_BLOCK = DEFAULT_BLOCK["inference"]  # (texts, videos) per EM run, inference protocol
SWEEP_VALUES: dict[str, tuple[float, ...]] = {
    "beta": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0),
    "k": (1, 2, 4, 7, 8, 16, 32, 64),
    "iters": (0, 1, 2, 3, 5, 7, 9, 12, 16, 20),
    "lam": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
}
Metrics = dict[str, dict[str, float]]  # {"t2v": {"R1": ...}, "v2t": {...}}


def similarity(
    explorer: Explorer,
    snap: Snapshot,
    view: ModelView,
    knobs: Knobs | None,
    protocol: str = "inference",
) -> Tensor:
    """Captions × videos ``[Nt, M]`` with EM at ``knobs`` (``None``: without EM), cached per
    snapshot, model, protocol and EM knobs. ``inference``: blocks of ``METRICS_BLOCK`` (one
    run for the ``gallery`` context); ``emclnet``: the reference's 32 × 32 blocks with
    text-conditioned frame pooling (docs/method.md §2.1, §2.2)."""
    if knobs is None and protocol == "inference":
        return view.base_sim
    em = None if knobs is None else (knobs.em_key(), knobs.context == "gallery")
    key = (snap.version, view.name, protocol, em)
    return explorer.caches.similarity.get_or_compute(
        key, lambda: _similarity(explorer, view, knobs, protocol)
    )


def _similarity(explorer: Explorer, view: ModelView, knobs: Knobs | None, protocol: str) -> Tensor:
    params = prior = None
    if knobs is not None:
        params, prior = knobs.params(), explorer.prior(knobs)
    n_texts, n_videos = view.base_sim.shape
    if protocol == "emclnet":
        inputs = {"frames": view.frames.float(), "frame_temp": view.encoder.config.frame_temp}
        blocks: tuple[int | None, int | None] = (None, None)  # the reference's 32 × 32
    else:
        inputs = {"videos": view.index.embeddings}
        whole = knobs is not None and knobs.context == "gallery"
        blocks = (max(1, n_texts), max(1, n_videos)) if whole else METRICS_BLOCK
    with torch.inference_mode():
        return similarity_matrix(
            view.texts,
            params=params,
            prior=prior,
            protocol=protocol,  # type: ignore[arg-type]
            block_texts=blocks[0],
            block_videos=blocks[1],
            **inputs,
        )


def _scored(snap: Snapshot, sim: Tensor, knobs: Knobs) -> Metrics:
    temp = knobs.isoftmax_temp if knobs.isoftmax else None
    return retrieval_metrics(sim, snap.caption_owner, inverted_softmax_temp=temp)


def _need_captions(snap: Snapshot) -> None:
    if len(snap.captions) == 0:
        raise KnobError(
            "metrics need captions: this gallery has none (give a captions file with --data)"
        )


def metrics(
    explorer: Explorer,
    knobs: Knobs,
    protocol: str,
    progress: Progress,
) -> MetricsResult:
    """t2v and v2t metrics of: base; base + EMCL at inference (these knobs); and, with an
    EMCL checkpoint, that model without EM and with EM (joint). ``protocol``: the live
    ``inference`` module protocol, or ``emclnet``, the protocol the demo models are trained
    and evaluated with (text-conditioned frame pooling; seconds, not milliseconds)."""
    start = time.perf_counter()
    protocol = choice("protocol", protocol, METRIC_PROTOCOLS)
    snap = explorer.snapshot
    _need_captions(snap)
    views = [("Base", snap.base, "Base + EMCL at inference")]
    if snap.emcl is not None:
        views.append(("EMCL checkpoint, no EM", snap.emcl, "EMCL checkpoint + EM (joint)"))
    rows = []
    for i, (plain, view, with_em) in enumerate(views):
        progress(i / len(views), f"{view.name} model")
        for label, point in ((plain, None), (with_em, knobs)):
            sim = similarity(explorer, snap, view, point, protocol)
            rows.append((label, _scored(snap, sim, knobs)))
    progress(1.0, "done")
    return MetricsResult(
        rows=rows,
        n_texts=len(snap.captions),
        n_videos=len(snap.view(knobs.mode).index),
        effective_k=block_effective_k(explorer, snap, knobs),
        protocol=_describe(protocol, knobs),
        ms=(time.perf_counter() - start) * 1000.0,
    )


def _describe(protocol: str, knobs: Knobs) -> str:
    if protocol == "emclnet":
        return "EMCL-Net protocol, one EM run per block of 32 captions × 32 videos"
    if knobs.context == "gallery":
        return "inference-module protocol, one EM run over all captions and videos"
    texts, videos = METRICS_BLOCK
    return f"inference-module protocol, one EM run per block of {texts} × {videos}"


def block_effective_k(explorer: Explorer, snap: Snapshot, knobs: Knobs) -> int:
    """Effective K of the first metrics block of the active model (no query needed)."""
    view = snap.view(knobs.mode)
    if knobs.iters == 0 or len(view.index) == 0:
        return 0
    n_texts, n_videos = METRICS_BLOCK
    videos = view.index.embeddings[:n_videos].float()
    texts = view.texts[:n_texts] if len(view.texts) else videos
    with torch.inference_mode():
        result = knobs.params().run(torch.cat([videos, texts]), explorer.prior(knobs))
        return int(result.effective_k)


def sweep(explorer: Explorer, knobs: Knobs, name: str, progress: Progress) -> SweepResult:
    """Metrics over the preset values of one knob (``beta``, ``k``, ``iters``, ``lam``),
    the other knobs as given, for base + EMCL at inference and the joint model."""
    name = choice("sweep", name, SWEEPS)
    snap = explorer.snapshot
    _need_captions(snap)
    if name == "k" and knobs.init == "prior":
        raise KnobError(
            "the trained prior exists for one K only: pick init 'reference' or 'data' to sweep K"
        )
    values = list(SWEEP_VALUES[name])
    models = [("Base + EMCL at inference", snap.base)]
    if snap.emcl is not None:
        models.append(("EMCL + EM (joint)", snap.emcl))
    series: dict[str, list[Metrics]] = {label: [] for label, _ in models}
    for i, value in enumerate(values):
        progress(i / len(values), f"{name} = {value:g}")
        point = replace(knobs, **{name: int(value) if name in ("k", "iters") else value})
        for label, view in models:
            series[label].append(_scored(snap, similarity(explorer, snap, view, point), knobs))
    progress(1.0, "done")
    reference = {"Base": _scored(snap, snap.base.base_sim, knobs)}
    if snap.emcl is not None:
        reference["EMCL checkpoint, no EM"] = _scored(snap, snap.emcl.base_sim, knobs)
    notes = [f"{knobs.context if knobs.context == 'gallery' else 'block'} EM context"]
    return SweepResult(name, [float(v) for v in values], series, reference, notes)
