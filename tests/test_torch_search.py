"""Exact top-M search on a device (emcl/retrieval/torch_search.py) and the routing rule that
puts it, FAISS or nothing in front of a gallery (GalleryIndex.with_ann / for_query)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from emcl.core.em import EMParams
from emcl.retrieval.ann import AnnConfig
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import rank_query
from emcl.retrieval.torch_search import DeviceSearch, exact_topk, fits, gallery_bytes

PARAMS = EMParams(k=4, iters=3, lam=1.0, beta=3.0, init="data", seed=0)


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=g), dim=-1)
    picks = torch.randint(0, clusters, (n,), generator=g)
    return F.normalize(centres[picks] + 0.5 * torch.randn(n, dim, generator=g) / dim**0.5, dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fp16_top_m_is_the_fp32_top_m_up_to_fp16_ties(seed):
    """Every row the exact fp32 search puts in the top M and the fp16 search leaves out
    scores within fp16 rounding of the M-th best (and the other way round)."""
    drawn = clustered(5020, 64, seed)
    gallery, queries = drawn[:5000], drawn[5000:]
    m = 50
    exact_scores, exact_rows = exact_topk(queries, gallery, m)
    half_scores, half_rows = exact_topk(queries, gallery.half(), m)
    assert half_rows.shape == (20, m) and half_scores.dtype == torch.float16
    full = queries @ gallery.T  # [Q, N] fp32
    tolerance = 2e-3  # fp16 carries 11 bits: scores near 1 round by up to ~5e-4 each
    for q in range(len(queries)):
        kth = float(exact_scores[q, -1])
        for row in set(exact_rows[q].tolist()) ^ set(half_rows[q].tolist()):
            assert abs(float(full[q, row]) - kth) <= tolerance
        assert (
            torch.equal(exact_rows[q, 0], half_rows[q, 0])
            or abs(float(full[q, exact_rows[q, 0]] - full[q, half_rows[q, 0]])) <= tolerance
        )


def test_exact_topk_batches_queries_and_clamps_m(monkeypatch):
    import emcl.retrieval.torch_search as module

    monkeypatch.setattr(module, "SCORES_BYTES", 100 * 4)  # 1 query per batch for 100 rows
    gallery, queries = clustered(100, 8), clustered(7, 8, seed=5)
    scores, rows = exact_topk(queries, gallery, 500)
    assert rows.shape == (7, 100)  # m clamped to the gallery
    torch.testing.assert_close(scores, (queries @ gallery.T).sort(dim=-1, descending=True).values)
    empty_scores, empty_rows = exact_topk(queries[:0], gallery, 5)
    assert empty_scores.shape == empty_rows.shape == (0, 5)


def test_routing_rule_needs_cuda_and_room():
    n, dim = 1_000_000, 512
    need = gallery_bytes(n, dim)
    assert need >= n * dim * 2  # fp16 vectors, plus one batch of scores
    assert not fits(n, dim, torch.device("cpu"), free_bytes=10**15)  # FAISS stays the CPU path
    assert fits(n, dim, torch.device("cuda"), free_bytes=2 * need)
    assert not fits(n, dim, torch.device("cuda"), free_bytes=2 * need - 1)
    assert gallery_bytes(n, dim, torch.float32) > need
    with pytest.raises(ValueError, match="dtype"):
        DeviceSearch.place(clustered(10, 4), "cpu", dtype=torch.bfloat16)


def test_small_galleries_and_cpu_keep_their_paths(tmp_path):
    index = GalleryIndex.build([f"v{i}" for i in range(50)], clustered(50, 8))
    small = index.with_ann(tmp_path, "fp", AnnConfig(threshold=100), device="cpu")
    assert small.ann is None and small.device_search is None  # below the threshold: exact
    big = index.with_ann(tmp_path, "fp", AnnConfig(threshold=10, codes="Flat"), device="cpu",
                         log=lambda m: None)  # fmt: skip
    assert big.ann is not None and big.device_search is None  # no CUDA: FAISS


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_for_query_through_the_device_search_ranks_like_exact_search(dtype):
    """The device's top-M (placed on the CPU here) as the shortlist hook: the same base and
    EMCL columns as ranking the whole gallery, rows naming gallery positions."""
    videos = clustered(3000, 32, seed=3)
    videos[11] = float("nan")
    ids = [f"v{i}" for i in range(3000)]
    with pytest.warns(UserWarning, match="never ranked"):
        index = GalleryIndex.build(ids, videos)
    routed = dataclasses.replace(
        index, device_search=DeviceSearch.place(index.embeddings, "cpu", dtype)
    )
    query = clustered(1, 32, seed=9)[0]
    part = routed.for_query(query, 16)
    assert len(part) == 16 * 4 and part.device_search is None and part.ann is None
    assert 11 not in part.rows.tolist() and part.rows.tolist() == sorted(part.rows.tolist())
    assert part.for_query(query, 16) is part
    assert routed.for_query(query, 3000) is routed  # asks for everything: the whole index
    options = {"shortlist_size": 16, "top_k": 10}
    shortlisted = rank_query(query, part, PARAMS, **options)
    exact = rank_query(query, index, PARAMS, **options)
    for got, want in ((shortlisted.base, exact.base), (shortlisted.emcl, exact.emcl)):
        assert [h.index for h in got] == [h.index for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
