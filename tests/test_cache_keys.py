"""Every field of every cache key, changed alone, gives a fresh result (a stale hit would be
caught).

The explorer's caches are checked with two explorers: a *warm* one that computes a base
setting first and then each variation (a key missing the varied field would answer the
variation with the base setting's value), and a *cold* one that computes only the variations
(any two of which differ in two fields, so a single missing field cannot collide there). Each
variation must give the cold explorer's answer and differ from the base setting's.
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import clip_frames

from emcl.data.datasets import VideoRecord
from emcl.data.frame_cache import cache_frames
from emcl.data.gallery import build_gallery, cache_folder
from emcl.explorer import projection
from emcl.explorer.knobs import Knobs
from emcl.explorer.projection import project
from emcl.retrieval.ann import AnnConfig, gallery_fingerprint
from emcl.retrieval.index import GalleryIndex
from emcl.video.writing import write_video

BASE = Knobs(
    mode="inference", beta=3.0, k=6, iters=4, lam=0.3, init="data", seed=5,
    context="block", shortlist=20, top_k=30,
)  # fmt: skip
# One field changed at a time (the EM knobs, the context, the mode).
VARIATIONS = {
    "beta": {"beta": 7.0},
    "k": {"k": 9},
    "iters": {"iters": 2},
    "lam": {"lam": 0.05},
    "init": {"init": "reference", "lam": 1.0},  # λ = 1: the reference init's stable regime
    "seed": {"seed": 6},
    "context": {"context": "gallery"},
}
TRAINED_VARIATIONS = {k: v for k, v in VARIATIONS.items() if k != "context"}


def fresh(explorer, n_videos: int | None = None):
    """A new explorer (empty caches) on the first ``n_videos`` of ``explorer``'s gallery."""
    from emcl.explorer.service import Explorer

    snap = explorer.snapshot
    ids = [r.video_id for r in snap.records][:n_videos]

    def part(gallery):
        rows = [gallery.video_ids.index(v) for v in ids]
        return replace(
            gallery,
            video_ids=list(ids),
            records=[gallery.records[i] for i in rows],
            frame_embeddings=gallery.frame_embeddings[rows],
            video_embeddings=gallery.video_embeddings[rows],
        )

    return Explorer(
        snap.base.encoder, part(snap.base.gallery), snap.emcl.encoder, part(snap.emcl.gallery),
        ground_truth=explorer.ground_truth,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pair(explorer):
    """(warm, cold) explorers on the whole fixture gallery."""
    return fresh(explorer), fresh(explorer)


@pytest.fixture(scope="module")
def small_pair(explorer):
    """(warm, cold) explorers on its first 24 videos (the grounding and the map redo their
    work for every setting: a small gallery keeps that quick)."""
    return fresh(explorer, 24), fresh(explorer, 24)


def rows(result) -> list:
    return [(label, m) for label, m in result.rows] + [(result.effective_k, result.rec_ratio)]


def check_variations(warm, cold, compute, variations: dict[str, dict], **options) -> None:
    """``variations``: name -> knob changes; a name in ``options`` instead changes that
    keyword of ``compute(explorer, knobs, **options)``."""
    before = compute(warm, BASE, **options)
    for name, change in variations.items():
        knobs = replace(BASE, **{k: v for k, v in change.items() if k not in options})
        extra = options | {k: v for k, v in change.items() if k in options}
        got, want = compute(warm, knobs, **extra), compute(cold, knobs, **extra)
        assert got == want, f"{name}: a stale cached value"
        assert got != before, f"{name}: the variation does not change the result"


def test_inference_metrics_follow_every_field(pair):
    check_variations(*pair, lambda ex, k: rows(ex.metrics(k, "inference")), VARIATIONS)


def test_trained_metrics_follow_every_field(pair):
    """The as-trained engine keeps one EM run per setting without β (β-free terms); a β
    change must still change the table."""
    check_variations(*pair, lambda ex, k: rows(ex.metrics(k, "trained")), TRAINED_VARIATIONS)


def test_each_model_and_protocol_has_its_own_table(pair):
    warm, _ = pair
    for protocol in ("inference", "trained"):
        result = dict(warm.metrics(BASE, protocol).rows)
        assert result["Base + EMCL at inference"] != result["EMCL checkpoint + EM (joint)"]
        assert result["Base"] != result["EMCL checkpoint, no EM"]
    assert warm.metrics(BASE, "inference").rows != warm.metrics(BASE, "trained").rows
    inference, joint = warm.metrics(BASE, "trained"), warm.metrics(replace(BASE, mode="joint"))
    assert (inference.effective_k, inference.rec_ratio) != (joint.effective_k, joint.rec_ratio)


def test_search_follows_every_field_and_the_model(pair):
    text = "two small red circles move"

    def search(explorer, knobs):
        data = explorer.rank(text, knobs).to_json()
        data.pop("ms")
        return data

    variations = VARIATIONS | {
        "mode": {"mode": "joint"},  # the EMCL model's own query embedding and gallery
        "shortlist": {"context": "shortlist", "shortlist": 12},
        "isoftmax": {"isoftmax": True},
        "isoftmax_temp": {"isoftmax": True, "isoftmax_temp": 0.2},
    }
    check_variations(*pair, search, variations)


def test_grounding_follows_every_field(small_pair):
    def average(explorer, knobs, words):
        result = explorer.grounding_average(knobs, words=words)
        return (result.words, result.auto, result.auto_interval, result.full)

    # β only scales what the EM adds: the links, hence the grounding, do not depend on it.
    variations = {k: v for k, v in VARIATIONS.items() if k not in ("beta", "context")}
    variations |= {"words": {"words": "alone"}, "mode": {"mode": "joint"}}
    check_variations(*small_pair, average, variations, words="tokens")


def test_embedding_map_follows_every_field(small_pair):
    def coords(explorer, knobs, max_points):
        result = explorer.embedding_map(knobs, method="pca", max_points=max_points)
        return (result.coords_after.tolist(), result.gap_after, result.item_ids)

    variations = {k: v for k, v in VARIATIONS.items() if k != "context"}
    variations |= {"mode": {"mode": "joint"}, "max_points": {"max_points": 30}}
    check_variations(*small_pair, coords, variations, max_points=2000)


def test_shown_frames_follow_the_video_and_the_size(pair):
    warm, cold = pair
    ids = [r.video_id for r in warm.snapshot.records]
    first = warm.frames_rgb(ids[0], size=40)
    other, smaller = warm.frames_rgb(ids[1], size=40), warm.frames_rgb(ids[0], size=32)
    assert other.shape == first.shape and not np.array_equal(other, first)
    assert smaller.shape[1:3] == (32, 32)
    assert np.array_equal(other, cold.frames_rgb(ids[1], size=40))


def test_a_new_snapshot_is_never_answered_from_the_old_one(small_pair, tmp_path):
    """Uploads make a new snapshot: every cached table, map and ranking must follow it."""
    from emcl.explorer.service import Explorer

    small, _ = small_pair
    snap = small.snapshot
    views = {name: replace(v.gallery, cache_dir=tmp_path / name) for name, v in
             (("base", snap.base), ("emcl", snap.emcl))}  # fmt: skip
    warm = Explorer(
        snap.base.encoder, views["base"], snap.emcl.encoder, views["emcl"],
        uploads_dir=tmp_path / "uploads",
    )  # fmt: skip
    compute = {
        "inference": lambda ex: rows(ex.metrics(BASE, "inference")),
        "trained": lambda ex: rows(ex.metrics(BASE, "trained")),
        "map": lambda ex: ex.embedding_map(BASE, method="pca").item_ids,
        "search": lambda ex: [h.video_id for h in ex.rank("a red box slides", BASE).emcl],
    }
    before = {name: fn(warm) for name, fn in compute.items()}
    clip = tmp_path / "upload.mp4"
    frames = [np.full((64, 64, 3), 40 + 9 * i, np.uint8) for i in range(16)]
    for i, f in enumerate(frames):
        f[8 + 2 * i : 30 + 2 * i, 10:40] = (230, 20, 20)
    write_video(clip, frames, 8)
    added, _ = warm.add_uploads([clip], caption="a red box slides down")
    assert len(added) == 1
    new = warm.snapshot
    cold = Explorer(new.base.encoder, new.base.gallery, new.emcl.encoder, new.emcl.gallery)
    assert len(cold.snapshot.records) == len(snap.records) + 1
    for name, fn in compute.items():
        got = fn(warm)
        assert got == fn(cold), name
        assert got != before[name], name


# ---------------------------------------------------------------------------------------------
# The embedding map's disk cache (emcl/explorer/projection.py)
# ---------------------------------------------------------------------------------------------
class FakeUMAP:
    """A stand-in for umap.UMAP whose output depends on every setting (UMAP itself needs a
    minute of numba compilation); the disk cache is what is under test."""

    def __init__(self, *, n_neighbors, min_dist, metric, random_state, n_jobs):
        self.offset = 1000 * n_neighbors + 100 * min_dist + random_state

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return x[:, :2] * 3 + self.offset


def test_projection_cache_key_has_every_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    base = {"method": "umap", "seed": 1, "n_neighbors": 5, "min_dist": 0.1}
    coords, method = project(x, cache_dir=tmp_path, **base)
    assert method == "umap" and np.allclose(coords, x[:, :2] * 3 + 5000 + 10 + 1)
    (stored,) = tmp_path.glob("*.npy")
    sentinel = np.full((20, 2), -7.0, np.float32)
    np.save(stored, sentinel)  # a stale answer the cache would now give
    assert np.array_equal(project(x, cache_dir=tmp_path, **base)[0], sentinel)
    changed = {
        "method": ({**base, "method": "pca"}, x),
        "seed": ({**base, "seed": 2}, x),
        "n_neighbors": ({**base, "n_neighbors": 6}, x),
        "min_dist": ({**base, "min_dist": 0.2}, x),
        "data": (base, x + np.float32(1e-3)),
        "shape": (base, x.reshape(30, 4)),  # the same bytes
    }
    for name, (settings, data) in changed.items():
        got, _ = project(data, cache_dir=tmp_path, **settings)
        want, _ = project(data, cache_dir=None, **settings)
        assert not np.array_equal(got, sentinel), name
        np.testing.assert_array_equal(got, want, err_msg=name)
    monkeypatch.setattr(projection, "CACHE_VERSION", projection.CACHE_VERSION + 1)
    assert not np.array_equal(project(x, cache_dir=tmp_path, **base)[0], sentinel)


# ---------------------------------------------------------------------------------------------
# The gallery feature cache (emcl/data/gallery*) and the ANN index
# ---------------------------------------------------------------------------------------------
class ColourEncoder:
    """A deterministic stand-in for the model: each frame's mean colour through a fixed map."""

    image_size = 32

    def __init__(self, fingerprint: str = "colour-v1"):
        self.fingerprint = fingerprint
        self.proj = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
        self.encoded = 0

    def encode_videos(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        self.encoded += len(frames)
        x = torch.from_numpy(frames).float().mean(dim=(2, 3)) / 255  # [B, T, 3]
        f = x @ self.proj + torch.arange(frames.shape[1])[:, None] / 10  # [B, T, 8]
        return {"frames": f, "video": f.mean(1)}


@pytest.fixture
def clips(tmp_path) -> list[VideoRecord]:
    records = []
    for i in range(3):
        path = tmp_path / f"c{i}.mp4"
        write_video(path, [f + 40 * i for f in clip_frames(16, (48, 64))], 8)
        records.append(VideoRecord(f"c{i}", path, [f"clip {i}"], "test"))
    return records


def build(records, encoder, cache: Path, **settings):
    options = {"num_frames": 4, "size": 32, "backend": "auto", "batch_size": 4} | settings
    return build_gallery(records, encoder, cache, progress=False, **options)


def test_gallery_cache_key_has_every_setting(clips, tmp_path):
    cache = tmp_path / "features"
    encoder = ColourEncoder()
    build(clips, encoder, cache)
    build(clips, encoder, cache)
    assert encoder.encoded == 3  # the second build reads the cache
    variations = {
        "fingerprint": (ColourEncoder("colour-v2"), {}),
        "num_frames": (ColourEncoder(), {"num_frames": 6}),
        "size": (ColourEncoder(), {"size": 24}),
        "backend": (ColourEncoder(), {"backend": "pyav"}),
        "windows": (ColourEncoder(), {"windows": None}),
    }
    folders = {cache_folder(cache, encoder, num_frames=4, size=32, backend="auto")}
    for name, (other, change) in variations.items():
        gallery = build(clips, other, cache, **change)
        assert other.encoded == 3, f"{name}: features reused from another setting"
        options = {"num_frames": 4, "size": 32, "backend": "auto"} | change
        folder = cache_folder(cache, other, **options)
        assert gallery.cache_dir == folder and folder not in folders, name
        folders.add(folder)
    assert build(clips, ColourEncoder(), cache, num_frames=6).frame_embeddings.shape[1] == 6


def test_a_changed_video_is_reextracted(clips, tmp_path):
    cache = tmp_path / "features"
    first = build(clips, ColourEncoder(), cache)
    target = clips[1].path
    write_video(target, [f + 150 for f in clip_frames(16, (48, 64))], 8)
    encoder = ColourEncoder()
    second = build(clips, encoder, cache)
    assert encoder.encoded == 1
    assert not torch.equal(second.video_embeddings[1], first.video_embeddings[1])
    assert torch.equal(second.video_embeddings[0], first.video_embeddings[0])


def test_ann_fingerprint_and_index_follow_every_field(tmp_path):
    ids = [f"v{i}" for i in range(40)]
    emb = F.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    base = gallery_fingerprint("model-a", ids, emb)
    changed = {
        "model": gallery_fingerprint("model-b", ids, emb),
        "ids": gallery_fingerprint("model-a", [*ids[:-1], "other"], emb),
        "order": gallery_fingerprint("model-a", ids[::-1], emb),
        "embeddings": gallery_fingerprint("model-a", ids, emb + 1e-3),
        "dtype": gallery_fingerprint("model-a", ids, emb.half()),
    }
    assert len({base, *changed.values()}) == 1 + len(changed)
    index = GalleryIndex.build(ids, emb)
    config = AnnConfig(threshold=10, nlist=2, nprobe=2)
    first = index.with_ann(tmp_path, "model-a", config, log=lambda m: None)
    other = index.with_ann(tmp_path, "model-a", replace(config, nlist=4), log=lambda m: None)
    assert (first.ann.index.nlist, other.ann.index.nlist) == (2, 4)
    moved = GalleryIndex.build(ids, torch.roll(emb, 1, dims=0))
    again = moved.with_ann(tmp_path, "model-a", config, log=lambda m: None)
    query = emb[3]
    found = again.for_query(query, 2)
    assert len(list(tmp_path.glob("ann-*.faiss"))) == 2
    assert (found.embeddings @ query).max() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Training's decoded-frame cache (emcl/data/frame_cache.py)
# ---------------------------------------------------------------------------------------------
def test_frame_cache_key_has_every_setting(clips, tmp_path):
    ids, paths = [r.video_id for r in clips], [r.path for r in clips]

    def frames(**settings):
        options = {"num_frames": 4, "size": 32} | settings
        return cache_frames(ids, paths, cache_dir=tmp_path / "frames", workers=1,
                            progress=False, **options)  # fmt: skip

    first = frames()
    assert frames().seconds == 0.0  # read back from the cache
    assert frames(num_frames=5).frames.shape[1] == 5
    assert frames(size=24).frames.shape[2:4] == (24, 24)
    write_video(paths[2], [f + 120 for f in clip_frames(16, (48, 64))], 8)
    changed = frames()
    assert changed.seconds > 0 and not np.array_equal(changed.frames[2], first.frames[2])
