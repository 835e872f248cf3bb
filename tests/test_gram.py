"""The Gram-matrix EMCL-Net EM and the whole-table engine against the direct route."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.core.em import EMParams, effective_k
from emcl.core.gram import em_terms, emclnet_scores, geometry
from emcl.core.logits import emclnet_logits, text_conditioned_pool
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.emclnet_table import EmclNetTable

# Settings where the EM is well conditioned (the reference init makes every feature dimension
# start from the same logits, so float summation order can move its scores by ~1e-3).
WELL_CONDITIONED = [
    EMParams(k=8, iters=5, lam=1.0, beta=3.0, init="data", seed=3),
    EMParams(k=8, iters=3, lam=0.1, beta=2.0, init="data", seed=1),
    EMParams(k=40, iters=4, lam=0.05, beta=5.0, init="data", seed=2),  # K > D: columns repeat
    EMParams(k=8, iters=0, lam=1.0, beta=3.0, init="reference"),
    EMParams(k=8, iters=5, lam=1.0, beta=0.0, init="reference"),
]


def direct(text, frames, mask, params, prior=None):
    """The reference route: pool per text, stack [pooled; texts], run the EM, cosine."""
    return emclnet_logits(text, frames, mask, lambda x: params.run(x, prior).embeddings)


def blocks(seed: int, d: int = 16):
    gen = torch.Generator().manual_seed(seed)
    text = 3.0 * torch.randn(3, 5, d, generator=gen)  # sentence features are not unit norm
    frames = torch.randn(3, 4, 6, d, generator=gen)
    mask = torch.rand(3, 4, 6, generator=gen) > 0.3
    return text, frames, mask


@pytest.mark.parametrize("params", WELL_CONDITIONED)
def test_gram_route_equals_the_direct_route(params):
    text, frames, mask = blocks(0)
    torch.testing.assert_close(
        emclnet_scores(text, frames, mask, params),
        direct(text, frames, mask, params),
        atol=2e-5,
        rtol=0,
    )


def test_gram_route_with_a_trained_prior_and_the_reference_init():
    text, frames, mask = blocks(1)
    prior = torch.linspace(-1, 1, 8)[None]
    with_prior = EMParams(k=8, iters=3, lam=1.0, beta=3.0, init="prior")
    got = emclnet_scores(text, frames, mask, with_prior, prior)
    torch.testing.assert_close(
        got, direct(text, frames, mask, with_prior, prior), atol=1e-4, rtol=0
    )
    reference = EMParams(k=8, iters=5, lam=1.0, beta=3.0, init="reference", seed=1)
    got = emclnet_scores(text, frames, mask, reference)
    torch.testing.assert_close(got, direct(text, frames, mask, reference), atol=2e-3, rtol=0)


def test_gram_matrix_and_terms_are_what_they_claim():
    """G = X^T X of the stacked block, and the terms rebuild the outputs' products."""
    text, frames, mask = blocks(2)
    params = WELL_CONDITIONED[0]
    geo = geometry(text, frames, mask)
    pooled = text_conditioned_pool(text, frames, mask)  # [B, Bt, Bv, D]
    stacked = torch.cat([pooled.flatten(1, 2), text], dim=1)  # [B, Bt*Bv + Bt, D]
    torch.testing.assert_close(geo.gram, stacked.mT @ stacked, atol=1e-3, rtol=1e-5)
    result = params.run(stacked)
    rec = result.mu @ result.z.mT  # [B, N, D] per unit beta
    rec_pooled, rec_text = rec[:, :20].reshape(pooled.shape), rec[:, 20:]
    terms = em_terms(geo, params)
    torch.testing.assert_close(terms.pooled_rec_sq, (rec_pooled**2).sum(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        terms.text_rec_sq[..., 0], (rec_text**2).sum(-1), atol=1e-4, rtol=1e-4
    )
    expected_cross = torch.einsum("nad,nabd->nab", text, rec_pooled) + torch.einsum(
        "nad,nabd->nab", rec_text, pooled
    )
    torch.testing.assert_close(terms.cross, expected_cross, atol=1e-4, rtol=1e-4)
    assert torch.equal(terms.effective_k, effective_k(result.z))


@settings(max_examples=25, deadline=None)
@given(
    beta=st.floats(0.0, 20.0),
    k=st.integers(1, 20),
    iters=st.integers(0, 6),
    lam=st.floats(0.01, 10.0),
    seed=st.integers(0, 5),
)
def test_one_em_run_serves_every_beta(beta, k, iters, lam, seed):
    """beta does not enter the EM: the terms of one run give the scores for any beta."""
    text, frames, mask = blocks(seed)
    params = EMParams(k=k, iters=iters, lam=lam, beta=beta, init="data", seed=seed)
    geo = geometry(text, frames, mask)
    terms = em_terms(geo, EMParams(k=k, iters=iters, lam=lam, beta=1.0, init="data", seed=seed))
    got = terms.cosines(geo.pairs, beta)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, direct(text, frames, mask, params), atol=5e-4, rtol=0)


def test_rec_ratio_is_the_reconstruction_over_the_row():
    text, frames, mask = blocks(3)
    params = WELL_CONDITIONED[0]
    geo = geometry(text, frames, mask)
    ratios = em_terms(geo, params).rec_ratios(geo.pairs, beta=2.0)
    pooled = text_conditioned_pool(text, frames, mask)
    stacked = torch.cat([pooled.flatten(1, 2), text], dim=1)
    result = params.run(stacked)
    expected = 2.0 * (result.mu @ result.z.mT).norm(dim=-1) / stacked.norm(dim=-1).clamp(min=1e-6)
    n_pooled = 3 * 20
    torch.testing.assert_close(ratios[:n_pooled], expected[:, :20].flatten(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ratios[n_pooled:], expected[:, 20:].flatten(), atol=1e-4, rtol=1e-4)


def test_table_equals_a_loop_over_blocks_with_ragged_edges():
    """70 texts × 45 videos in 32 × 32 blocks: full, ragged-text, ragged-video and corner."""
    gen = torch.Generator().manual_seed(7)
    text, frames = 2.0 * torch.randn(70, 16, generator=gen), torch.randn(45, 5, 16, generator=gen)
    params = WELL_CONDITIONED[1]
    table = EmclNetTable(text, frames, max_slice_bytes=1)  # one block per call
    looped = torch.empty(70, 45)
    for t0 in range(0, 70, 32):
        for v0 in range(0, 45, 32):
            tb, fb = text[t0 : t0 + 32], frames[v0 : v0 + 32]
            looped[t0 : t0 + 32, v0 : v0 + 32] = direct(tb, fb, None, params)
    torch.testing.assert_close(table.scores(params), looped, atol=5e-5, rtol=0)
    pooled = text_conditioned_pool(text, frames)
    plain = torch.einsum("ad,abd->ab", F.normalize(text, dim=-1), F.normalize(pooled, dim=-1))
    torch.testing.assert_close(table.base_scores(), plain, atol=1e-5, rtol=0)
    assert table.scores(None).equal(table.base_scores())
    lazy = EmclNetTable(text, frames, keep_geometry=False)
    torch.testing.assert_close(lazy.scores(params), table.scores(params), atol=1e-6, rtol=0)
    batched = EmclNetTable(text, frames)
    torch.testing.assert_close(batched.scores(params), looped, atol=5e-5, rtol=0)
    terms = table.terms(params)
    assert table.n_blocks == 3 * 2 and terms.text_cross.shape == (70, 2)  # one EM run per block
    assert 0.0 < terms.rec_ratio(2.0) == pytest.approx(2.0 * terms.rec_ratio(1.0))
    for beta in (0.5, 3.0):
        torch.testing.assert_close(terms.scores(beta), table.scores(replace(params, beta=beta)))


def test_similarity_matrix_takes_the_cheaper_route_with_the_same_scores():
    gen = torch.Generator().manual_seed(8)
    text, frames = torch.randn(40, 16, generator=gen), torch.randn(40, 6, 16, generator=gen)
    params = WELL_CONDITIONED[0]
    routed = similarity_matrix(text, frames=frames, params=params, protocol="trained")
    factorised = similarity_matrix(
        text, frames=frames, params=params, protocol="trained", factorize=False
    )
    torch.testing.assert_close(routed, factorised, atol=5e-5, rtol=0)


def _looped_table(text, frames, params, prior=None):
    """A plain loop over 32 × 32 blocks through the single-block Gram route: scores, the rows'
    reconstruction ratios and each block's terms (what the batched table must equal)."""
    scores = torch.empty(text.shape[0], frames.shape[0], dtype=text.dtype)
    ratios, first_z = [], []
    for v0 in range(0, frames.shape[0], 32):
        for t0 in range(0, text.shape[0], 32):
            geo = geometry(text[t0 : t0 + 32], frames[v0 : v0 + 32])
            terms = em_terms(geo, params, prior)
            scores[t0 : t0 + 32, v0 : v0 + 32] = terms.cosines(geo.pairs, params.beta)
            ratios.append(terms.rec_ratios(geo.pairs, params.beta))
            if v0 == 0 and t0 + 32 <= text.shape[0]:
                first_z.append(terms.z)
    return scores, torch.cat(ratios), torch.stack(first_z)


@pytest.mark.parametrize("budget", [1, 200_000, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_table_equals_a_plain_loop_over_blocks(budget, dtype):
    """Every block's EM in one batched program (or slices of any size) gives the per-block
    loop's scores, reconstruction ratio and effective K, with ragged text and video edges."""
    gen = torch.Generator().manual_seed(11)
    text = (3.0 * torch.randn(100, 16, generator=gen)).to(dtype)
    frames = torch.randn(75, 5, 16, generator=gen).to(dtype)
    params = EMParams(k=8, iters=4, lam=0.5, beta=2.5, init="data", seed=4)
    expected, ratios, first_z = _looped_table(text, frames, params)
    table = EmclNetTable(text, frames, dtype=dtype, max_slice_bytes=budget)
    terms = table.terms(params)
    got = terms.scores(params.beta)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=5e-5 if dtype == torch.float32 else 1e-10,
                               rtol=0)  # fmt: skip
    assert terms.rec_ratio(params.beta) == pytest.approx(float(ratios.median()), rel=1e-4)
    assert terms.effective_k == int(effective_k(first_z).float().median().round())
    lazy = EmclNetTable(text, frames, dtype=dtype, keep_geometry=False, max_slice_bytes=budget)
    torch.testing.assert_close(lazy.scores(params), expected, atol=5e-5, rtol=0)


def test_the_whole_table_is_one_em_call_when_it_fits(monkeypatch):
    """With room for every block, one EM run is one batched call over all blocks (not one
    per chunk); with a small budget it splits into several calls of whole blocks."""
    import emcl.retrieval.emclnet_table as module

    calls = []
    real = module.em_responsibilities

    def counting(gram, *args):
        calls.append(gram.shape[0])
        return real(gram, *args)

    monkeypatch.setattr(module, "em_responsibilities", counting)
    gen = torch.Generator().manual_seed(12)
    text, frames = torch.randn(130, 16, generator=gen), torch.randn(70, 4, 16, generator=gen)
    params = EMParams(k=4, iters=3, init="data")
    EmclNetTable(text, frames, max_slice_bytes=1 << 30).terms(params)
    assert calls == [5 * 3]  # (4 full + 1 short) text blocks × (2 full + 1 short) video blocks
    calls.clear()
    EmclNetTable(text, frames, max_slice_bytes=4 * (16 * 16 + 4 * 16 * 4) * 4).terms(params)
    assert calls == [4, 4, 4, 3]


def test_table_refuses_other_dtypes():
    with pytest.raises(ValueError, match="dtype"):
        EmclNetTable(torch.randn(4, 8), torch.randn(4, 2, 8), dtype=torch.float16)
