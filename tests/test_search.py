"""Ranking engine and block-protocol similarity against plain per-block loops."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from emcl.core.em import EMParams, emcl_transform
from emcl.core.factorized import emclnet_logits_factorized
from emcl.core.logits import emclnet_logits, inference_module_logits, text_conditioned_pool
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import EmSummary, rank_as_trained, rank_query, rank_scores

PARAMS = EMParams(k=8, iters=5, lam=0.1, beta=2.0, init="reference", seed=1)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def gallery(n: int = 50, d: int = 16, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    return [f"video{i}" for i in range(n)], unit(n, d, seed)


# ---------------------------------------------------------------------------------------------
# The pure logits functions against loops
# ---------------------------------------------------------------------------------------------
def test_text_conditioned_pool_equals_a_loop():
    gen = torch.Generator().manual_seed(0)
    text, frames = torch.randn(3, 8, generator=gen), torch.randn(4, 5, 8, generator=gen)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    pooled = text_conditioned_pool(text, frames, mask, temperature=3.0)
    for a in range(3):
        for b in range(4):
            weights = torch.softmax(frames[b] @ text[a] / 3.0, dim=0) * mask[b]
            expected = (weights[:, None] * frames[b]).sum(0)
            torch.testing.assert_close(pooled[a, b], expected, atol=1e-6, rtol=1e-6)


def test_emclnet_logits_stack_rows_text_major():
    gen = torch.Generator().manual_seed(1)
    text, frames = torch.randn(3, 8, generator=gen), torch.randn(4, 5, 8, generator=gen)
    seen = {}

    def spy(x):
        seen["x"] = x.clone()
        return x

    emclnet_logits(text, frames, None, spy)
    pooled = text_conditioned_pool(text, frames)
    assert seen["x"].shape == (3 * 4 + 3, 8)
    torch.testing.assert_close(seen["x"][1 * 4 + 2], pooled[1, 2])  # row a * Bv + b
    torch.testing.assert_close(seen["x"][12:], text)
    without = emclnet_logits(text, frames)
    expected = F.normalize(text, dim=-1)[:, None] * F.normalize(pooled, dim=-1)
    torch.testing.assert_close(without, expected.sum(-1))


def test_inference_module_logits_do_not_renormalise():
    text, video = unit(3, 8, 0), unit(5, 8, 1)

    def double(x):
        return 2 * x

    torch.testing.assert_close(inference_module_logits(text, video, double), 4 * text @ video.T)


# ---------------------------------------------------------------------------------------------
# Full matrices: batched blocks == the authors' per-block loop
# ---------------------------------------------------------------------------------------------
def loop_matrix(text, videos, bt, bv, fn):
    out = torch.empty(text.shape[0], videos.shape[0])
    for t0 in range(0, text.shape[0], bt):
        for v0 in range(0, videos.shape[0], bv):
            out[t0 : t0 + bt, v0 : v0 + bv] = fn(text[t0 : t0 + bt], videos[v0 : v0 + bv])
    return out


@pytest.mark.parametrize(("n_texts", "n_videos"), [(70, 50), (64, 64), (5, 3)])
@pytest.mark.parametrize("init", ["reference", "data"])
def test_inference_protocol_batched_equals_loop(n_texts, n_videos, init):
    params = EMParams(k=6, iters=4, lam=0.1, beta=3.0, init=init, seed=2)
    text, videos = unit(n_texts, 16, 0), unit(n_videos, 16, 1)
    batched = similarity_matrix(
        text, videos=videos, params=params, block_texts=32, block_videos=16, max_rows_per_call=100
    )
    looped = loop_matrix(
        text,
        videos,
        32,
        16,
        lambda t, v: inference_module_logits(t, v, lambda x: params.run(x).embeddings),
    )
    # lam = 0.1 amplifies float32 rounding by up to 1/lam per iteration.
    torch.testing.assert_close(batched, looped, atol=5e-5, rtol=0)


# The reference init is a knife-edge at sharp temperatures (its K entries differ by ~1e-6, so
# summation order decides the split): compare it at lam = 1, and the data init at lam = 0.1.
EXACT_PARAMS = [
    EMParams(k=8, iters=5, lam=1.0, beta=3.0, init="reference", seed=1),
    EMParams(k=8, iters=5, lam=0.1, beta=2.0, init="data", seed=1),
    EMParams(k=8, iters=0, lam=0.1, beta=2.0, init="data", seed=1),
    EMParams(k=8, iters=5, lam=0.1, beta=0.0, init="reference", seed=1),
]


@pytest.mark.parametrize("params", EXACT_PARAMS)
@pytest.mark.parametrize("factorize", [True, False])
def test_emclnet_protocol_batched_equals_loop(params, factorize):
    gen = torch.Generator().manual_seed(3)
    text, frames = torch.randn(40, 16, generator=gen), torch.randn(37, 4, 16, generator=gen)
    mask = torch.rand(37, 4, generator=gen) > 0.2
    batched = similarity_matrix(
        text,
        frames=frames,
        frame_mask=mask,
        params=params,
        protocol="trained",
        block_texts=16,
        block_videos=8,
        factorize=factorize,
    )
    looped = torch.empty(40, 37)
    for t0 in range(0, 40, 16):
        for v0 in range(0, 37, 8):
            looped[t0 : t0 + 16, v0 : v0 + 8] = emclnet_logits(
                text[t0 : t0 + 16],
                frames[v0 : v0 + 8],
                mask[v0 : v0 + 8],
                lambda x: params.run(x).embeddings,
            )
    # lam = 0.1 amplifies float32 rounding by up to 1/lam per iteration.
    torch.testing.assert_close(batched, looped, atol=5e-5, rtol=0)


def test_without_emcl_the_matrix_is_the_cosine():
    text, videos = torch.randn(9, 8), torch.randn(11, 8)
    expected = F.normalize(text, dim=-1) @ F.normalize(videos, dim=-1).T
    torch.testing.assert_close(similarity_matrix(text, videos=videos), expected)
    beta_zero = EMParams(k=4, iters=3, lam=1.0, beta=0.0)
    torch.testing.assert_close(similarity_matrix(text, videos=videos, params=beta_zero), expected)


def test_prior_init_needs_a_prior():
    with pytest.raises(ValueError, match="prior"):
        similarity_matrix(unit(4, 8, 0), videos=unit(4, 8, 1), params=EMParams(k=4, init="prior"))
    prior = torch.ones(1, 4)
    out = similarity_matrix(
        unit(4, 8, 0), videos=unit(4, 8, 1), params=EMParams(k=4, init="prior"), prior=prior
    )
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# One query
# ---------------------------------------------------------------------------------------------
def ids_and_scores(hits):
    return [(hit.video_id, round(hit.score, 5)) for hit in hits]


@pytest.mark.parametrize("context", ["shortlist", "gallery", "block"])
def test_permuting_the_gallery_permutes_nothing(context):
    ids, videos = gallery(60)
    query = unit(1, 16, 9)[0]
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    # Data init draws feature columns, not rows, so it is order-independent too.
    params = EMParams(k=8, iters=5, lam=0.1, beta=2.0, init="data", seed=1)
    kwargs = {"context": context, "shortlist_size": 20, "block_videos": 60, "top_k": 15}
    first = rank_query(query, GalleryIndex.build(ids, videos), params, **kwargs)
    second = rank_query(
        query, GalleryIndex.build([ids[i] for i in perm], videos[perm]), params, **kwargs
    )
    assert ids_and_scores(first.base) == ids_and_scores(second.base)
    if context == "gallery" or context == "block":
        # Reordering rows changes nothing in the EM but float summation order.
        assert [h.video_id for h in first.emcl] == [h.video_id for h in second.emcl]
    else:
        assert ids_and_scores(first.emcl) == ids_and_scores(second.emcl)


def test_nan_and_zero_rows_are_never_ranked():
    ids, videos = gallery(30)
    query = videos[4] + 0.01
    videos = videos.clone()
    videos[4] = float("nan")  # the best match, if it counted
    videos[7] = 0.0
    videos[9, 3] = float("inf")
    with pytest.warns(UserWarning, match="3 gallery video"):
        index = GalleryIndex.build(ids, videos)
    assert len(index) == 27 and set(index.excluded) == {"video4", "video7", "video9"}
    for context in ("shortlist", "gallery", "block"):
        ranking = rank_query(query, index, PARAMS, context=context, top_k=100)
        ranked = {hit.video_id for hit in ranking.base} | {hit.video_id for hit in ranking.emcl}
        assert not ranked & {"video4", "video7", "video9"}
        assert len(ranking.base) == 27
        assert all(math.isfinite(hit.score) for hit in ranking.base + ranking.emcl)


def test_top_k_is_clamped_and_small_galleries_work():
    ids, videos = gallery(3)
    ranking = rank_query(unit(1, 16, 5)[0], GalleryIndex.build(ids, videos), PARAMS, top_k=50)
    assert len(ranking.base) == len(ranking.emcl) == 3
    one = rank_query(unit(1, 16, 5)[0], GalleryIndex.build(ids[:1], videos[:1]), PARAMS)
    assert [h.video_id for h in one.base] == [h.video_id for h in one.emcl] == ["video0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        empty = GalleryIndex.build(["a"], torch.zeros(1, 16))
    with pytest.raises(ValueError, match="no rankable videos"):
        rank_query(unit(1, 16, 5)[0], empty, PARAMS)
    with pytest.raises(ValueError, match="no rankable videos"):
        rank_query(unit(1, 16, 5)[0], GalleryIndex.build([], torch.zeros(0, 16)), PARAMS)


def test_bad_queries_and_arguments_are_refused():
    index = GalleryIndex.build(*gallery(10))
    for query in (torch.zeros(16), torch.full((16,), float("nan")), torch.zeros(2, 16)):
        with pytest.raises(ValueError, match="query"):
            rank_query(query, index, PARAMS)
    with pytest.raises(ValueError, match="context"):
        rank_query(unit(1, 16, 0)[0], index, PARAMS, context="everything")
    with pytest.raises(ValueError, match="top_k"):
        rank_query(unit(1, 16, 0)[0], index, PARAMS, top_k=0)


@pytest.mark.parametrize("context", ["shortlist", "gallery", "block"])
def test_beta_zero_gives_the_base_ranking(context):
    index = GalleryIndex.build(*gallery(80))
    params = EMParams(k=8, iters=5, lam=0.1, beta=0.0)
    ranking = rank_query(unit(1, 16, 3)[0], index, params, context=context, top_k=80)
    assert ids_and_scores(ranking.base) == ids_and_scores(ranking.emcl)
    assert all(hit.rank_change == 0 for hit in ranking.emcl)


def test_contexts_use_the_rows_they_say():
    ids, videos = gallery(100)
    index = GalleryIndex.build(ids, videos)
    query = unit(1, 16, 3)[0]
    shortlist = rank_query(query, index, PARAMS, context="shortlist", shortlist_size=10)
    assert shortlist.em_rows == 11 and shortlist.notices
    assert rank_query(query, index, PARAMS, context="gallery").em_rows == 101
    params = EMParams(k=8, iters=5, lam=0.1, beta=2.0, init="data", seed=1)
    block = rank_query(query, index, params, context="block", block_videos=32, top_k=100)
    assert block.em_rows == 33
    # Each block's EMCL scores equal that block's EM run alone.
    order = torch.argsort(videos @ query, descending=True, stable=True)
    first_block = order[:32]
    stacked = torch.cat([videos[first_block], query[None]])
    out = emcl_transform(
        stacked,
        k=8,
        iters=5,
        lam=0.1,
        beta=2.0,
        init="data",
        generator=torch.Generator().manual_seed(1),
    ).embeddings
    expected = out[:-1] @ out[-1]
    by_id = {hit.video_id: hit.score for hit in block.emcl}
    for position, value in zip(first_block.tolist(), expected.tolist(), strict=True):
        assert by_id[ids[position]] == pytest.approx(value, abs=1e-5)


def test_rank_changes_are_consistent():
    index = GalleryIndex.build(*gallery(200, d=32))
    params = EMParams(k=16, iters=9, lam=0.03, beta=5.0, init="data", seed=0)
    ranking = rank_query(unit(1, 32, 3)[0], index, params, context="gallery", top_k=20)
    for hit in ranking.emcl:
        assert hit.rank_change == ranking.base_rank[hit.index] - ranking.emcl_rank[hit.index]
        assert hit.other_rank == ranking.base_rank[hit.index]
    assert sorted(ranking.emcl_rank.values()) == list(range(1, 201))


def test_emclnet_protocol_ranks_with_frames():
    gen = torch.Generator().manual_seed(4)
    frames = torch.randn(20, 4, 16, generator=gen)
    ids = [f"v{i}" for i in range(20)]
    index = GalleryIndex.build(ids, frames.mean(1), frames=frames)
    query = frames[3, 1] + 0.1 * torch.randn(16, generator=gen)
    ranking = rank_query(query, index, PARAMS, protocol="trained", context="gallery", top_k=5)
    pooled = text_conditioned_pool(F.normalize(query, dim=-1)[None], frames)[0]
    expected = F.normalize(pooled, dim=-1) @ F.normalize(query, dim=-1)
    assert ranking.base[0].score == pytest.approx(float(expected.max()), abs=1e-5)


@pytest.mark.parametrize("params", EXACT_PARAMS)
def test_factorized_emclnet_equals_the_direct_route(params):
    gen = torch.Generator().manual_seed(5)
    text, frames = torch.randn(3, 12, 32, generator=gen), torch.randn(3, 10, 6, 32, generator=gen)
    mask = torch.rand(3, 10, 6, generator=gen) > 0.3
    fast, z = emclnet_logits_factorized(text, frames, mask, params)
    direct = emclnet_logits(text, frames, mask, lambda x: params.run(x).embeddings)
    torch.testing.assert_close(fast, direct, atol=5e-5, rtol=0)
    if params.iters and params.beta:
        pooled = text_conditioned_pool(text, frames, mask).reshape(3, 120, 32)
        torch.testing.assert_close(
            z, params.run(torch.cat([pooled, text], dim=1)).z, atol=1e-4, rtol=1e-3
        )


def test_factorized_emclnet_with_a_trained_prior():
    gen = torch.Generator().manual_seed(6)
    text, frames = torch.randn(12, 32, generator=gen), torch.randn(10, 6, 32, generator=gen)
    prior = torch.linspace(-1, 1, 8)[None]
    params = EMParams(k=8, iters=3, lam=1.0, beta=3.0, init="prior")
    fast, _ = emclnet_logits_factorized(text, frames, None, params, prior)
    direct = emclnet_logits(text, frames, None, lambda x: params.run(x, prior).embeddings)
    torch.testing.assert_close(fast, direct, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# As trained: the model's own query feature, its temperature, blocks of videos
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("context", ["shortlist", "block", "gallery"])
def test_rank_as_trained_equals_a_loop_over_its_blocks(context):
    gen = torch.Generator().manual_seed(4)
    n, t, d, temperature = 75, 4, 16, 0.7  # 75 videos: blocks of 32, 32 and a short one of 11
    frames = torch.randn(n, t, d, generator=gen) + 0.3
    query = 3.0 * torch.randn(d, generator=gen)  # not unit norm: the pooling sees its norm
    index = GalleryIndex.build([f"v{i}" for i in range(n)], frames.mean(1), frames)
    params = EMParams(k=5, iters=4, lam=0.3, beta=3.0, init="data", seed=2)
    got = rank_as_trained(
        query, index, params, context=context, shortlist_size=40, top_k=n, temperature=temperature
    )
    pooled = torch.stack([torch.softmax(f @ query / temperature, 0) @ f for f in frames])
    base = F.normalize(pooled, dim=-1) @ F.normalize(query, dim=0)
    order = torch.argsort(base, descending=True, stable=True).tolist()
    candidates = order[:40] if context == "shortlist" else order
    runs = [candidates] if context == "gallery" else [
        candidates[i : i + 32] for i in range(0, len(candidates), 32)
    ]  # fmt: skip
    want = {}
    for rows in runs:
        out = F.normalize(params.run(torch.cat([pooled[rows], query[None]])).embeddings, dim=-1)
        want.update({i: float(out[j] @ out[-1]) for j, i in enumerate(rows)})
    assert [h.index for h in got.base] == order
    assert [h.score for h in got.base] == pytest.approx(base[order].tolist(), abs=1e-5)
    scored = [h for h in got.emcl if h.index in want]
    assert [h.score for h in scored] == pytest.approx([want[h.index] for h in scored], abs=1e-4)
    assert [h.index for h in scored] == sorted(want, key=lambda i: -want[i])
    assert got.em_rows == max(len(r) for r in runs) + 1 and got.context == context
    plain = rank_query(query, index, params, protocol="trained", context=context, top_k=n)
    assert [h.index for h in plain.base] != order  # unit query, temperature 3: another pooling


def test_rank_scores_ranks_given_rows_with_every_video_a_candidate():
    ids, videos = gallery(12)
    index = GalleryIndex.build(ids, videos)
    base = torch.linspace(0.9, 0.1, 12)
    emcl = base.flip(0) * 0.5
    em = EmSummary("block", 3, 1056, 0.01)
    got = rank_scores(index, base, emcl, em, top_k=5)
    assert [h.index for h in got.base] == [0, 1, 2, 3, 4]
    assert [h.index for h in got.emcl] == [11, 10, 9, 8, 7]
    assert [h.cosine for h in got.emcl] == [h.score for h in got.emcl]
    assert got.emcl[0].rank_change == 12 - 1 and got.notices == []
    assert (got.context, got.effective_k, got.em_rows, got.rec_ratio) == ("block", 3, 1056, 0.01)
    with pytest.raises(ValueError, match="one score per index row"):
        rank_scores(index, base[:5], emcl, em)
