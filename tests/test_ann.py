"""The ANN shortlist (emcl/retrieval/ann.py) and the GalleryIndex hook that uses it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.core.em import EMParams
from emcl.retrieval.ann import (
    AnnConfig,
    AnnIndexError,
    build_ann,
    gallery_fingerprint,
    load_ann,
    save_ann,
    sidecar,
)
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import rank_query

PARAMS = EMParams(k=4, iters=3, lam=1.0, beta=3.0, init="reference", seed=0)


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 40) -> torch.Tensor:
    """``[n, dim]`` unit vectors around ``clusters`` random centres."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=g), dim=-1)
    picks = torch.randint(0, clusters, (n,), generator=g)
    return F.normalize(centres[picks] + 0.6 * torch.randn(n, dim, generator=g) / dim**0.5, -1)


def exact_order(index: GalleryIndex, query: torch.Tensor) -> list[int]:
    """Original gallery positions by plain fp32 cosine, best first (the reference)."""
    scores = index.embeddings.float() @ F.normalize(query, dim=-1)
    return [int(index.rows[i]) for i in torch.argsort(scores, descending=True, stable=True)]


def test_ann_shortlist_finds_the_exact_neighbours():
    drawn = clustered(4050, 32)  # queries from the same clusters as the gallery
    videos, queries = drawn[:4000], drawn[4000:]
    index = GalleryIndex.build([f"v{i}" for i in range(4000)], videos)
    ann = build_ann(index.embeddings, "fp", AnnConfig(threshold=1, nprobe=8))
    assert 8 <= ann.nlist <= 4000 // 8 and len(ann) == 4000
    recalls = []
    for query in queries:
        found = set(ann.search(query[None], 40)[0].tolist())
        recalls.append(len(found & set(exact_order(index, query)[:10])) / 10)
    assert sum(recalls) / len(recalls) >= 0.95


def test_for_query_maps_back_to_gallery_positions_and_skips_bad_rows():
    videos = clustered(3000, 16)
    videos[7] = float("nan")  # never rankable
    ids = [f"v{i}" for i in range(3000)]
    with pytest.warns(UserWarning, match="never ranked"):
        index = GalleryIndex.build(ids, videos)
    ann = build_ann(index.embeddings, "fp", AnnConfig(threshold=1, codes="Flat", nprobe=10**6))
    with_ann = GalleryIndex(index.video_ids, index.embeddings, index.rows, ann=ann)
    query = videos[100]
    part = with_ann.for_query(query, 8)
    assert len(part) == 8 * ann.config.oversample and part.ann is None
    assert 7 not in part.rows.tolist() and part.video_ids == index.video_ids
    assert part.rows.tolist() == sorted(part.rows.tolist())  # gallery order, as exact search
    assert part.for_query(query, 8) is part  # a second call changes nothing
    assert with_ann.for_query(query, 3000) is with_ann  # asks for everything: exact
    assert index.for_query(query, 8) is index  # no ANN: exact
    ranking = rank_query(query, part, PARAMS, shortlist_size=8, top_k=8)
    assert [h.index for h in ranking.base] == exact_order(index, query)[:8]
    assert all(ids[h.index] == h.video_id for h in ranking.base + ranking.emcl)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(300, 900),
    dim=st.sampled_from([8, 24]),
    seed=st.integers(0, 10**6),
    top_k=st.integers(1, 12),
)
def test_exhaustive_ann_ranks_like_exact_search(n, dim, seed, top_k):
    """With every cell visited and exact codes, the ANN path is exact search: the same hits,
    scores and EMCL re-rank as ranking the whole gallery."""
    index = GalleryIndex.build([f"v{i}" for i in range(n)], clustered(n, dim, seed))
    config = AnnConfig(threshold=1, codes="Flat", nprobe=10**6)
    ann = build_ann(index.embeddings, "fp", config)
    query = clustered(1, dim, seed + 1)[0]
    part = GalleryIndex(index.video_ids, index.embeddings, index.rows, ann=ann).for_query(
        query, top_k
    )
    options = {"shortlist_size": top_k, "top_k": top_k}
    approximate = rank_query(query, part, PARAMS, **options)
    exact = rank_query(query, index, PARAMS, **options)
    for got, want in ((approximate.base, exact.base), (approximate.emcl, exact.emcl)):
        assert [h.index for h in got] == [h.index for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


def test_build_normalises_large_galleries_in_chunks_like_f_normalize():
    videos = torch.randn(70_000, 4) * 3
    videos[5] = 0.0
    with pytest.warns(UserWarning):
        index = GalleryIndex.build([f"v{i}" for i in range(70_000)], videos)
    keep = torch.ones(70_000, dtype=torch.bool)
    keep[5] = False
    reference = F.normalize(videos[keep], dim=-1).half()
    assert index.embeddings.dtype == torch.float16
    assert torch.equal(index.embeddings, reference)


def test_with_ann_builds_once_then_loads_and_rebuilds_a_damaged_file(tmp_path):
    videos = clustered(600, 16)
    index = GalleryIndex.build([f"v{i}" for i in range(600)], videos)
    config = AnnConfig(threshold=500)
    messages: list[str] = []
    small = GalleryIndex.build([f"v{i}" for i in range(100)], videos[:100])
    assert small.with_ann(tmp_path, "model", config, messages.append).ann is None
    assert not list(tmp_path.iterdir())  # below the threshold nothing is built

    first = index.with_ann(tmp_path, "model", config, messages.append)
    assert first.ann is not None and len(messages) == 1 and "no index here" in messages[0]
    path = first.ann.path
    assert path.is_file() and sidecar(path).is_file()
    again = index.with_ann(tmp_path, "model", config, messages.append)
    assert len(messages) == 1 and again.ann.path == path  # loaded, not rebuilt

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    repaired = index.with_ann(tmp_path, "model", config, messages.append)
    assert "checksum mismatch" in messages[-1]
    query = videos[3]
    assert repaired.for_query(query, 5).rows.tolist() == first.for_query(query, 5).rows.tolist()

    other_model = index.with_ann(tmp_path, "another-model", config, messages.append)
    assert other_model.ann.path != path and other_model.ann.fingerprint != first.ann.fingerprint


def test_load_ann_refuses_foreign_stale_and_damaged_files(tmp_path):
    videos = clustered(400, 8)
    ids = [f"v{i}" for i in range(400)]
    fingerprint = gallery_fingerprint("model", ids, videos)
    config = AnnConfig(threshold=1)
    path = tmp_path / "ann.faiss"
    save_ann(build_ann(videos, fingerprint, config), path)
    assert len(load_ann(path, fingerprint, config)) == 400

    changed = videos.clone()
    changed[399, 0] += 1e-3  # one value of one video
    assert gallery_fingerprint("model", ids, changed) != fingerprint
    assert gallery_fingerprint("model", [*ids[:-1], "x"], videos) != fingerprint
    assert gallery_fingerprint("other", ids, videos) != fingerprint
    with pytest.raises(AnnIndexError, match="another model or gallery"):
        load_ann(path, gallery_fingerprint("model", ids, changed), config)
    with pytest.raises(AnnIndexError, match="other settings"):
        load_ann(path, fingerprint, AnnConfig(threshold=1, codes="SQfp16"))

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(AnnIndexError, match="checksum mismatch"):
        load_ann(path, fingerprint, config)

    path.write_bytes(b"not a faiss index")  # a foreign file under a forged description
    meta = json.loads(sidecar(path).read_text())
    import hashlib

    meta |= {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": 17}
    sidecar(path).write_text(json.dumps(meta))
    with pytest.raises(AnnIndexError, match="unreadable by FAISS"):
        load_ann(path, fingerprint, config)
    sidecar(path).unlink()
    with pytest.raises(AnnIndexError, match="no index here"):
        load_ann(path, fingerprint, config)
