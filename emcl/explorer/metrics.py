"""The Metrics tab's service: t2v/v2t metrics over the caption bank, sweeps of one knob, and
the caption × video similarity matrices both share.

Two protocols (docs/method.md §2):

- ``trained`` (the default): the protocol the checkpoints were trained and are evaluated with,
  EMCL-Net's text-conditioned frame pooling and one EM run per block of 32 captions × 32
  videos. It goes through :class:`~emcl.retrieval.emclnet_table.EmclNetTable`, the same
  engine as ``python -m emcl evaluate``; the table's knob-free geometry is kept per snapshot
  and model, and one EM run per (K, iterations, λ, init, seed) serves every β.
- ``inference``: the released inference module (mean-pooled, unit-norm videos; 64 × 64
  blocks, or one run over the gallery in the ``gallery`` context).
"""

from __future__ import annotations

import threading
import time

import torch
from torch import Tensor

from emcl.core.em import rec_ratios
from emcl.core.protocols import BLOCK, INFERENCE, PROTOCOLS, TRAINED
from emcl.evaluation.sweep import Curve, run_sweep
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import SWEEPS, KnobError, Knobs, choice
from emcl.explorer.latest import LatestWins
from emcl.explorer.results import MetricsResult, Progress, SweepResult, no_progress
from emcl.explorer.snapshot import ModelView, Snapshot
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.emclnet_table import EmclNetTable, TableTerms
from emcl.retrieval.metrics import retrieval_metrics
from emcl.runtime import usable_cores

METRICS_BLOCK = BLOCK[INFERENCE]  # (texts, videos) per EM run, inference protocol
# The trained protocol keeps Nt × Nv × T pooling weights and a D × D matrix per block; above
# this many floats the page offers the inference protocol instead.
MAX_TABLE_FLOATS = 96_000_000
SWEEP_VALUES: dict[str, tuple[float, ...]] = {
    "beta": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0),
    "k": (1, 2, 4, 7, 8, 16, 32, 64),
    "iters": (0, 1, 2, 3, 5, 7, 9, 12, 16, 20),
    "lam": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
}
ROWS = {  # the table's row names, page and API alike
    "base": "Base",
    "base+emcl": "Base + EMCL at inference",
    "emcl": "EMCL checkpoint, no EM",
    "emcl+em": "EMCL checkpoint + EM (joint)",
}
Metrics = dict[str, dict[str, float]]  # {"t2v": {"R1": ...}, "v2t": {...}}
_table_lock = threading.Lock()  # one geometry build at a time (seconds; never twice)


# --------------------------------------------------------------------------------------------
# The trained protocol's engine, cached
# --------------------------------------------------------------------------------------------
def table_floats(view: ModelView) -> int:
    """Floats the trained-protocol table of ``view`` keeps (pooling weights + Gram matrices)."""
    n_texts, n_videos = view.base_sim.shape
    num_frames, dim = view.frames.shape[1], view.frames.shape[2]
    blocks = -(-n_texts // BLOCK[TRAINED][0]) * -(-n_videos // BLOCK[TRAINED][1])
    return n_texts * n_videos * (num_frames + 2) + blocks * dim * (dim + 1)


def table(ctx: ServiceContext, snap: Snapshot, view: ModelView) -> EmclNetTable:
    """The trained-protocol engine for ``view`` (built on first use; seconds)."""
    key = (snap.version, view.name)
    hit = ctx.caches.tables.get(key)
    if hit is not None:
        return hit
    if table_floats(view) > MAX_TABLE_FLOATS:
        n_texts, n_videos = view.base_sim.shape
        raise KnobError(
            f"the as-trained metrics of {n_texts} captions × {n_videos} videos need "
            f"{table_floats(view) * 4 / 1e9:.1f} GB; use the inference-module protocol"
        )
    device = view.encoder.device  # the model's device: a GPU runs every EM run of the table
    with _table_lock:
        return ctx.caches.tables.get_or_compute(
            key,
            lambda: EmclNetTable(
                view.sentences.to(device),
                view.frames.to(device),
                temperature=view.encoder.config.frame_temp,
            ),
        )


def table_terms(ctx: ServiceContext, snap: Snapshot, view: ModelView, knobs: Knobs) -> TableTerms:
    """One EM run per block at ``knobs`` (β does not enter the EM: it is not in the key)."""
    engine = table(ctx, snap, view)
    key = (snap.version, view.name, knobs.em_run_key())
    return ctx.caches.terms.get_or_compute(
        key, lambda: engine.terms(knobs.params(), ctx.prior(knobs))
    )


# --------------------------------------------------------------------------------------------
# Similarity matrices
# --------------------------------------------------------------------------------------------
def similarity(
    ctx: ServiceContext,
    snap: Snapshot,
    view: ModelView,
    knobs: Knobs | None,
    protocol: str = TRAINED,
) -> Tensor:
    """Captions × videos ``[Nt, M]`` with EM at ``knobs`` (``None``: without EM)."""
    if protocol == TRAINED:  # on the table's device; the matrices served live on the CPU
        engine = table(ctx, snap, view)
        if knobs is None or knobs.iters == 0 or knobs.beta == 0.0:
            return engine.base_scores().cpu()
        return table_terms(ctx, snap, view, knobs).scores(knobs.beta).cpu()
    if knobs is None:
        return view.base_sim
    key = (snap.version, view.name, protocol, knobs.em_key(), knobs.context == "gallery")
    return ctx.caches.similarity.get_or_compute(
        key, lambda: _inference_similarity(ctx, view, knobs)
    )


def _inference_similarity(ctx: ServiceContext, view: ModelView, knobs: Knobs) -> Tensor:
    n_texts, n_videos = view.base_sim.shape
    whole = knobs.context == "gallery"
    blocks = (max(1, n_texts), max(1, n_videos)) if whole else METRICS_BLOCK
    with torch.inference_mode():
        return similarity_matrix(
            view.texts,
            videos=view.index.embeddings,
            params=knobs.params(),
            prior=ctx.prior(knobs),
            protocol=INFERENCE,
            block_texts=blocks[0],
            block_videos=blocks[1],
        )


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------
def _scored(snap: Snapshot, sim: Tensor, knobs: Knobs) -> Metrics:
    temp = knobs.isoftmax_temp if knobs.isoftmax else None
    return retrieval_metrics(sim, snap.caption_owner, inverted_softmax_temp=temp)


def row_key(
    snap: Snapshot, view: ModelView, point: Knobs | None, knobs: Knobs, protocol: str
) -> tuple:
    """Everything one scored row depends on: the snapshot, the model, the protocol, the
    inverted softmax and, for a row with EM (``point``), the EM knobs; a row without EM
    depends on no EM knob, so K, T, λ, init, seed and β changes all hit it."""
    softmax = knobs.isoftmax_temp if knobs.isoftmax else None
    key = (snap.version, view.name, view.encoder.fingerprint, protocol, softmax)
    if point is None:
        return (*key, None)
    whole = protocol == INFERENCE and point.context == "gallery"  # the trained table ignores it
    return (*key, point.em_key(), whole)


def row(
    ctx: ServiceContext,
    snap: Snapshot,
    view: ModelView,
    point: Knobs | None,
    knobs: Knobs,
    protocol: str,
) -> Metrics:
    """One row of the table: ``view``'s metrics with EM at ``point`` (``None``: without EM),
    scored with ``knobs``' inverted softmax; cached (a row costs 60–90 ms of ranking on
    1K × 1K even when its scores are cached)."""
    return ctx.caches.rows.get_or_compute(
        row_key(snap, view, point, knobs, protocol),
        lambda: _scored(snap, similarity(ctx, snap, view, point, protocol), knobs),
    )


def _need_captions(snap: Snapshot) -> None:
    if len(snap.captions) == 0:
        raise KnobError(
            "metrics need captions: this gallery has none (give a captions file with --data)"
        )


def metrics(
    ctx: ServiceContext,
    knobs: Knobs,
    protocol: str = TRAINED,
    progress: Progress = no_progress,
) -> MetricsResult:
    """t2v and v2t metrics of: base; base + EMCL at inference (these knobs); and, with an
    EMCL checkpoint, that model without EM and with EM (joint), in ``protocol``
    (``trained`` or ``inference``, see the module doc). A call that arrives while another
    runs for the same protocol is answered by the next run, with the newest knobs
    (``result.knobs`` says which; docs/reliability.md §4)."""
    channel = ctx.latest.setdefault(protocol, LatestWins())
    return channel.call(lambda: _metrics(ctx, knobs, protocol, progress))


def _metrics(ctx: ServiceContext, knobs: Knobs, protocol: str, progress: Progress) -> MetricsResult:
    start = time.perf_counter()
    protocol = choice("protocol", protocol, PROTOCOLS)
    snap = ctx.snapshot
    _need_captions(snap)
    views = [("base", snap.base, "base+emcl")]
    if snap.emcl is not None:
        views.append(("emcl", snap.emcl, "emcl+em"))

    def view_rows(plain: str, view: ModelView, with_em: str) -> list[tuple[str, Metrics]]:
        points = ((plain, None), (with_em, knobs))
        return [(ROWS[n], row(ctx, snap, view, point, knobs, protocol)) for n, point in points]

    with torch.inference_mode():
        if len(views) > 1 and side_by_side():
            # Each model's EM runs are one core's work here: the second model's rows run on a
            # core of their own while this thread scores the first (docs/benchmarks.md §3).
            progress(0.0, "both models, side by side")
            second = ctx.metrics_beside.submit(lambda: view_rows(*views[1]))
            rows = view_rows(*views[0]) + second.result()
        else:
            rows = []
            for i, view in enumerate(views):
                progress(i / len(views), f"{view[1].name} model")
                rows += view_rows(*view)
        effective_k, rec_ratio = em_size(ctx, snap, knobs, protocol)
    progress(1.0, "done")
    return MetricsResult(
        knobs=knobs,
        rows=rows,
        n_texts=len(snap.captions),
        n_videos=len(snap.view(knobs.mode).index),
        effective_k=effective_k,
        rec_ratio=rec_ratio,
        protocol=protocol,
        description=describe(protocol, knobs),
        ms=(time.perf_counter() - start) * 1000.0,
    )


def side_by_side() -> bool:
    """Whether the two models' rows should run at once: when the calling worker has a single
    torch thread and the process may use more than one core (the 2-core case; with more cores
    each model's EM already spreads over all of them but one)."""
    return torch.get_num_threads() == 1 and usable_cores() > 1


def describe(protocol: str, knobs: Knobs) -> str:
    """Which rows share one EM run, in words."""
    if protocol == TRAINED:
        texts, videos = BLOCK[TRAINED]
        return (
            "as trained (EMCL-Net: text-conditioned pooling, "
            f"one EM run per block of {texts} captions × {videos} videos)"
        )
    if knobs.context == "gallery":
        return "inference-module protocol, one EM run over all captions and videos"
    texts, videos = METRICS_BLOCK
    return f"inference-module protocol, one EM run per block of {texts} × {videos}"


def em_size(ctx: ServiceContext, snap: Snapshot, knobs: Knobs, protocol: str) -> tuple[int, float]:
    """(effective K, median over the EM's rows of ``|β μ z^T| / |x|``) for the active model
    (``knobs.mode``): over every block in the trained protocol, over the first metrics block
    in the inference protocol (0 and 0.0 when the EM is off)."""
    view = snap.view(knobs.mode)
    if knobs.iters == 0 or len(view.index) == 0 or len(snap.captions) == 0:
        return 0, 0.0
    if protocol == TRAINED:
        terms = table_terms(ctx, snap, view, knobs)
        return terms.effective_k, terms.rec_ratio(knobs.beta)
    key = ("em_size", snap.version, view.name, view.encoder.fingerprint, knobs.em_key())
    return ctx.caches.rows.get_or_compute(key, lambda: _inference_em_size(ctx, view, knobs))


def _inference_em_size(ctx: ServiceContext, view: ModelView, knobs: Knobs) -> tuple[int, float]:
    n_texts, n_videos = METRICS_BLOCK
    videos = view.index.embeddings[:n_videos].float()
    rows = torch.cat([videos, view.texts[:n_texts]])
    with torch.inference_mode():
        result = knobs.params().run(rows, ctx.prior(knobs))
        ratios = rec_ratios(rows, result.reconstruction, knobs.beta)
        return int(result.effective_k), float(ratios.median())


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------
def sweep(
    ctx: ServiceContext,
    knobs: Knobs,
    name: str,
    progress: Progress = no_progress,
    protocol: str = TRAINED,
) -> SweepResult:
    """Metrics over the preset values of one knob (``beta``, ``k``, ``iters``, ``lam``),
    the other knobs as given, for base + EMCL at inference and the joint model
    (emcl/evaluation/sweep.py, the engine ``python -m emcl evaluate`` sweeps with)."""
    name = choice("sweep", name, SWEEPS)
    protocol = choice("protocol", protocol, PROTOCOLS)
    snap = ctx.snapshot
    _need_captions(snap)
    if name == "k" and knobs.init == "prior":
        raise KnobError(
            "the trained prior exists for one K only: pick init 'reference' or 'data' to sweep K"
        )

    def curve(view: ModelView, reference: str) -> Curve:
        def measure(point: Knobs | None) -> Metrics:  # the table's rows are the sweep's
            return row(ctx, snap, view, point, knobs, protocol)

        return Curve(knobs, measure, ROWS[reference])

    curves = {ROWS["base+emcl"]: curve(snap.base, "base")}
    if snap.emcl is not None:
        curves[ROWS["emcl+em"]] = curve(snap.emcl, "emcl")
    with torch.inference_mode():
        beside = ctx.sweeps_beside.submit if side_by_side() else None  # the 2nd model's curve
        swept = run_sweep(name, SWEEP_VALUES[name], curves, progress, beside)
    progress(1.0, "done")
    whole = protocol == INFERENCE and knobs.context == "gallery"
    context = "gallery EM context" if whole else "{} × {} blocks".format(*BLOCK[protocol])
    notes = [describe(protocol, knobs).split(" (")[0], context]
    return SweepResult(name, swept.values, swept.series, swept.reference, notes)


def warm_up(ctx: ServiceContext) -> None:
    """Build the trained-protocol tables now (seconds) rather than on the first request."""
    snap = ctx.snapshot
    for view in (snap.base, snap.emcl):
        if view is not None and len(snap.captions):
            try:
                table(ctx, snap, view)
            except KnobError:
                return  # too large: the page says so when asked
