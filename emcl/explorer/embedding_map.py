"""The Embedding map tab's service: 2-D maps of video and caption embeddings before and after
EMCL, and the modality gap (projection and caching in :mod:`emcl.explorer.projection`)."""

from __future__ import annotations

import numpy as np
import torch

from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.projection import modality_gap, project
from emcl.explorer.results import MapResult, Progress, no_progress
from emcl.explorer.snapshot import Snapshot

# Points per map (videos + captions). UMAP's fit grows faster than linearly: on 2 busy cores
# a map (two fits) of 1,000 points took 14 s, of 2,000 61 s and of 3,000 74 s (python -m
# bench.map_bench; bench/results/map_umap_times.json). Above this many points a seeded
# uniform sample is mapped, so a map stays around a minute; repeats come from the disk cache.
MAX_MAP_POINTS = 2000


def sample_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """All of ``range(n)`` when ``n <= limit``, else ``limit`` of them drawn uniformly
    without replacement with ``seed``; sorted either way."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def embedding_map(
    ctx: ServiceContext,
    knobs: Knobs,
    progress: Progress = no_progress,
    *,
    max_points: int = MAX_MAP_POINTS,
    method: str = "auto",
) -> MapResult:
    """Maps of the active model's videos and captions before and after EMCL (one EM run over
    all of them: the ``gallery`` context), and the modality gap before and after. Above
    ``max_points`` a seeded sample of the videos (half the points) and of their captions is
    mapped, and the note says so. ``method``: auto (UMAP, PCA below 15 points), umap or pca;
    results are cached per input."""
    snap = ctx.snapshot
    view = snap.view(knobs.mode)
    key = (snap.version, view.name, knobs.em_key(), max_points, method)
    return ctx.caches.maps.get_or_compute(
        key, lambda: _embedding_map(ctx, snap, knobs, progress, max_points, method)
    )


def _embedding_map(
    ctx: ServiceContext,
    snap: Snapshot,
    knobs: Knobs,
    progress: Progress,
    max_points: int,
    method: str,
) -> MapResult:
    view = snap.view(knobs.mode)
    params, prior = knobs.params(), ctx.prior(knobs)
    ids = [r.video_id for r in snap.records]  # index rows are gallery positions
    total_videos, total_captions = len(view.index), len(snap.captions)
    videos = sample_rows(total_videos, max_points // 2, knobs.seed).tolist()
    n_videos = len(videos)
    chosen = set(videos)
    owned = [i for i, o in enumerate(snap.caption_owner.tolist()) if o in chosen]
    keep = sample_rows(len(owned), max_points - n_videos, knobs.seed + 1)
    captions = [owned[i] for i in keep.tolist()]
    vectors = view.index.embeddings[torch.tensor(videos, dtype=torch.long)].float()  # [Nv, D]
    stacked = torch.cat([vectors, view.texts[captions]])  # [N, D]
    with torch.inference_mode():
        after = params.run(stacked, prior).embeddings
    progress(0.1, "projecting (before EMCL)")
    cache = ctx.map_cache_dir
    before_xy, used = project(stacked.numpy(), method=method, seed=knobs.seed, cache_dir=cache)
    progress(0.55, "projecting (after EMCL)")
    after_xy, _ = project(after.numpy(), method=method, seed=knobs.seed, cache_dir=cache)
    progress(1.0, "done")
    owners = [snap.caption_video[i] for i in captions]
    return MapResult(
        coords_before=before_xy,
        coords_after=after_xy,
        modality=["video"] * n_videos + ["text"] * len(captions),
        item_ids=[f"video:{ids[v]}" for v in videos] + [f"text:{i}" for i in captions],
        labels=[f"video {ids[v]}" for v in videos]
        + [f"“{snap.captions[i]}” ({owners[j]})" for j, i in enumerate(captions)],
        gap_before=modality_gap(stacked[:n_videos], stacked[n_videos:]),
        gap_after=modality_gap(after[:n_videos], after[n_videos:]),
        method=used,
        note=_note(n_videos, total_videos, len(captions), total_captions, max_points, knobs.seed),
    )


def _note(n_videos: int, videos: int, n_captions: int, captions: int, limit: int, seed: int) -> str:
    """What the map shows; says plainly when it is a sample and why."""
    shown = f"{n_videos} videos + {n_captions} captions; EM over all of them at once"
    if n_videos == videos and n_captions == captions:
        return shown
    return (
        f"SAMPLE: {n_videos:,} of {videos:,} videos and {n_captions:,} of {captions:,} "
        f"captions (seed {seed}); UMAP over more than {limit:,} points would take over a "
        f"minute. {shown}"
    )


def map_item(ctx: ServiceContext, item_id: object) -> tuple[str, str | None, str]:
    """``(video_id, caption or None, kind)`` for a map point id (``video:`` / ``text:``)."""
    snap = ctx.snapshot
    if isinstance(item_id, str) and item_id.startswith("text:"):
        number = item_id.removeprefix("text:")
        if number.isdigit() and int(number) < len(snap.captions):
            i = int(number)
            return snap.caption_video[i], snap.captions[i], "text"
    if isinstance(item_id, str) and item_id.startswith("video:"):
        video_id = item_id.removeprefix("video:")
        snap.record(video_id)  # refuses anything but a known id
        return video_id, None, "video"
    raise KnobError(f"unknown map item {str(item_id)[:80]!r}")
