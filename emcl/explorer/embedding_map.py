"""The Embedding map tab's service: 2-D maps of video and caption embeddings before and after
EMCL, and the modality gap (projection and caching in :mod:`emcl.explorer.projection`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.projection import modality_gap, project
from emcl.explorer.results import MapResult
from emcl.explorer.snapshot import Snapshot

if TYPE_CHECKING:
    from emcl.explorer.service import Explorer, Progress

MAX_MAP_POINTS = 4000


def embedding_map(
    explorer: Explorer,
    knobs: Knobs,
    progress: Progress,
    max_points: int = MAX_MAP_POINTS,
    method: str = "auto",
) -> MapResult:
    """Maps of the active model's videos and captions before and after EMCL (one EM run over
    all of them: the ``gallery`` context), and the modality gap before and after. ``method``:
    auto (UMAP, PCA below 15 points), umap or pca; results are cached per input."""
    snap = explorer.snapshot
    view = snap.view(knobs.mode)
    key = (snap.version, view.name, knobs.em_key(), max_points, method)
    return explorer.caches.maps.get_or_compute(
        key, lambda: _embedding_map(explorer, snap, knobs, progress, max_points, method)
    )


def _embedding_map(
    explorer: Explorer,
    snap: Snapshot,
    knobs: Knobs,
    progress: Progress,
    max_points: int,
    method: str,
) -> MapResult:
    view = snap.view(knobs.mode)
    params, prior = knobs.params(), explorer.prior(knobs)
    ids = [r.video_id for r in snap.records]  # index rows are gallery positions
    n_videos = min(len(view.index), max_points // 2)
    captions = [i for i, o in enumerate(snap.caption_owner.tolist()) if o < n_videos]
    captions = captions[: max_points - n_videos]
    stacked = torch.cat([view.index.embeddings[:n_videos].float(), view.texts[captions]])  # [N, D]
    with torch.inference_mode():
        after = params.run(stacked, prior).embeddings
    progress(0.1, "projecting (before EMCL)")
    cache = explorer.map_cache_dir
    before_xy, used = project(stacked.numpy(), method=method, seed=knobs.seed, cache_dir=cache)
    progress(0.55, "projecting (after EMCL)")
    after_xy, _ = project(after.numpy(), method=method, seed=knobs.seed, cache_dir=cache)
    progress(1.0, "done")
    owners = [snap.caption_video[i] for i in captions]
    return MapResult(
        coords_before=before_xy,
        coords_after=after_xy,
        modality=["video"] * n_videos + ["text"] * len(captions),
        item_ids=[f"video:{v}" for v in ids[:n_videos]] + [f"text:{i}" for i in captions],
        labels=[f"video {v}" for v in ids[:n_videos]]
        + [f"“{snap.captions[i]}” ({owners[j]})" for j, i in enumerate(captions)],
        gap_before=modality_gap(stacked[:n_videos], stacked[n_videos:]),
        gap_after=modality_gap(after[:n_videos], after[n_videos:]),
        method=used,
        note=f"{n_videos} videos + {len(captions)} captions; EM over all of them at once",
    )


def map_item(explorer: Explorer, item_id: object) -> tuple[str, str | None, str]:
    """``(video_id, caption or None, kind)`` for a map point id (``video:`` / ``text:``)."""
    snap = explorer.snapshot
    if isinstance(item_id, str) and item_id.startswith("text:"):
        number = item_id.removeprefix("text:")
        if number.isdigit() and int(number) < len(snap.captions):
            i = int(number)
            return snap.caption_video[i], snap.captions[i], "text"
    if isinstance(item_id, str) and item_id.startswith("video:"):
        video_id = item_id.removeprefix("video:")
        explorer.video_path(video_id)
        return video_id, None, "video"
    raise KnobError(f"unknown map item {str(item_id)[:80]!r}")
