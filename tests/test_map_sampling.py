"""The embedding map above its point budget: a seeded uniform sample of the videos and of
their captions, mapped exactly as a small gallery would be, and a note that says so."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.explorer.embedding_map import sample_rows
from emcl.explorer.knobs import Knobs
from emcl.explorer.projection import pca_2d

INFERENCE = Knobs(mode="inference", beta=4.0, k=7, iters=10, lam=0.1, init="reference", seed=42)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 500), limit=st.integers(1, 400), seed=st.integers(0, 2**31 - 1))
def test_sample_rows_is_all_rows_or_a_sorted_subset(n, limit, seed):
    rows = sample_rows(n, limit, seed)
    if n <= limit:
        assert rows.tolist() == list(range(n))
    else:
        assert len(rows) == limit == len(set(rows.tolist()))
        assert rows.tolist() == sorted(rows.tolist()) and rows.min() >= 0 and rows.max() < n
        assert np.array_equal(rows, sample_rows(n, limit, seed))  # seeded


def test_sample_rows_is_uniform():
    counts = np.zeros(100)
    for seed in range(400):
        counts[sample_rows(100, 10, seed)] += 1
    # Each row is drawn with probability 0.1: 40 expected of 400 draws (sd ~6).
    assert counts.min() > 15 and counts.max() < 70


def test_a_gallery_over_the_budget_is_sampled_and_says_so(explorer):
    snap = explorer.snapshot
    budget = 40
    m = explorer.embedding_map(INFERENCE, max_points=budget, method="pca")
    videos = [i.removeprefix("video:") for i in m.item_ids if i.startswith("video:")]
    captions = [int(i.removeprefix("text:")) for i in m.item_ids if i.startswith("text:")]
    assert len(videos) == budget // 2 < len(snap.records)
    assert len(videos) + len(captions) <= budget
    assert m.note.startswith(f"SAMPLE: {budget // 2} of {len(snap.records)} videos")
    rows = [snap.position[v] for v in videos]
    assert rows == sorted(rows) and rows != list(range(len(rows)))  # spread, not the first N
    assert {snap.caption_video[c] for c in captions} <= set(videos)
    # The sampled points are mapped exactly as a small gallery's: PCA of the same rows.
    view = snap.view(INFERENCE.mode)
    stacked = torch.cat([view.index.embeddings[rows].float(), view.texts[captions]])
    assert np.allclose(m.coords_before, pca_2d(stacked.numpy()), atol=1e-4)
    other = explorer.embedding_map(replace(INFERENCE, seed=7), max_points=budget, method="pca")
    assert other.item_ids != m.item_ids  # another seed, another sample


def test_a_gallery_within_the_budget_is_mapped_whole(explorer):
    snap = explorer.snapshot
    m = explorer.embedding_map(INFERENCE, method="pca")
    assert m.modality.count("video") == len(snap.records)
    assert not m.note.startswith("SAMPLE")
