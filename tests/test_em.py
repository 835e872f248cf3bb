"""The EM core against the reference code of docs/method.md §1.3, written out plainly."""

from __future__ import annotations

import io
import math

import pytest
import torch
from helpers import run_in_threads
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from emcl.core.em import (
    EMCL_NET_DEFAULTS,
    INFERENCE_MODULE_DEFAULTS,
    EMCLLayer,
    EMParams,
    effective_k,
    em_subspaces,
    emcl_transform,
    reference_init,
)


# ---------------------------------------------------------------------------------------------
# The reference, verbatim from docs/method.md §1.3 (one block, no batching, no shortcuts), in
# float32 as the authors run it: at sharp temperatures the softmax amplifies rounding by 1/lam, so
# the comparison is against the same precision, not against float64.
# ---------------------------------------------------------------------------------------------
def reference_em(x: torch.Tensor, mu: torch.Tensor, stage_num: int, lamd: float):
    """``Emcl.__call__`` without the prior update: x [N, D], mu [N, K] -> (mu, z)."""
    x = x.float()
    mu = mu.float()
    z = None
    for _ in range(stage_num):
        z = torch.mm(x.permute(1, 0), mu) / lamd  # D x K
        z = torch.softmax(z, dim=1)
        z = z / (1e-6 + z.sum(dim=0))
        mu = torch.mm(x, z)  # N x K
        mu = mu / (1e-6 + torch.norm(mu, dim=0, keepdim=True))
    return mu, z


def reference_emcl(x, prior_row, stage_num, lamd, beta):
    mu, z = reference_em(x, prior_row.repeat(x.shape[0], 1), stage_num, lamd)
    return beta * torch.mm(mu, z.permute(1, 0)) + x.float()


def clip_like(n: int, d: int, seed: int = 0, spread: float = 0.5) -> torch.Tensor:
    """Unit-norm rows sharing a strong common direction (mean cosine about 0.8 at spread 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=gen)
    rows = centre / centre.norm() + spread * torch.randn(n, d, generator=gen) / math.sqrt(d)
    return torch.nn.functional.normalize(rows, dim=-1)


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------
def test_reference_init_is_the_authors_sign_vector():
    prior = reference_init(32, torch.Generator().manual_seed(0))
    assert prior.shape == (1, 32)
    raw = torch.empty(1, 32).normal_(
        0, math.sqrt(2 / 32), generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(prior, raw / (1e-6 + raw.norm(dim=0)), rtol=0, atol=0)
    assert torch.allclose(prior.abs(), torch.ones(1, 32), atol=1e-4)


@pytest.mark.parametrize("data", ["clip", "gaussian"])
@pytest.mark.parametrize("k", [1, 3, 16, 32])
@pytest.mark.parametrize(("lam", "iters"), [(1.0, 9), (0.1, 10), (0.03, 5), (3.0, 1)])
def test_em_matches_reference(data, k, lam, iters):
    # Random initial bases: the reference's own ±1 init is a knife-edge on Gaussian data (its K
    # entries differ by ~1e-6, so fp32 vs fp64 rounding decides the split); covered below on
    # CLIP-like data, where it is stable.
    x = clip_like(96, 64, seed=k) if data == "clip" else gaussian(96, 64, seed=k)
    initial = torch.randn(96, k, generator=torch.Generator().manual_seed(7))
    mu, z = em_subspaces(x, initial, iters, lam)
    ref_mu, ref_z = reference_em(x, initial, iters, lam)
    torch.testing.assert_close(mu, ref_mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(z, ref_z, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [4, 16, 32])
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_transform_with_reference_prior_matches_reference_output(k, lam):
    x = clip_like(120, 48, seed=k)
    prior = reference_init(k, torch.Generator().manual_seed(0))
    out = emcl_transform(x, k=k, iters=9, lam=lam, beta=3.0, init=prior)
    expected = reference_emcl(x, prior, 9, lam, 3.0)
    torch.testing.assert_close(out.embeddings, expected, atol=1e-5, rtol=0)


def test_reference_init_string_uses_the_seeded_prior():
    x = gaussian(50, 32)
    by_name = emcl_transform(
        x,
        k=8,
        iters=4,
        lam=1.0,
        beta=2.0,
        init="reference",
        generator=torch.Generator().manual_seed(5),
    )
    by_tensor = emcl_transform(
        x,
        k=8,
        iters=4,
        lam=1.0,
        beta=2.0,
        init=reference_init(8, torch.Generator().manual_seed(5)),
    )
    torch.testing.assert_close(by_name.embeddings, by_tensor.embeddings, rtol=0, atol=0)


@pytest.mark.parametrize("init", ["reference", "data"])
def test_batch_of_blocks_equals_each_block_alone(init):
    blocks = torch.stack([clip_like(40, 32, seed=s) for s in range(5)])  # [5, 40, 32]
    batched = emcl_transform(
        blocks,
        k=6,
        iters=7,
        lam=0.1,
        beta=2.0,
        init=init,
        generator=torch.Generator().manual_seed(3),
    )
    for i in range(5):
        alone = emcl_transform(
            blocks[i],
            k=6,
            iters=7,
            lam=0.1,
            beta=2.0,
            init=init,
            generator=torch.Generator().manual_seed(3),
        )
        torch.testing.assert_close(batched.embeddings[i], alone.embeddings, atol=1e-6, rtol=0)
        torch.testing.assert_close(batched.z[i], alone.z, atol=1e-6, rtol=0)
        assert int(batched.effective_k[i]) == int(alone.effective_k)


def test_two_leading_batch_dimensions():
    x = gaussian(2 * 3 * 20, 16).reshape(2, 3, 20, 16)
    out = emcl_transform(x, k=4, iters=3, lam=1.0, beta=1.0)
    assert out.embeddings.shape == x.shape
    assert out.mu.shape == (2, 3, 20, 4)
    assert out.z.shape == (2, 3, 16, 4)
    assert out.effective_k.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# Edges
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_beta_zero_returns_input_exactly(dtype):
    x = gaussian(30, 16).to(dtype)
    out = emcl_transform(x, k=4, iters=5, lam=1.0, beta=0.0)
    assert out.embeddings.dtype == dtype and out.embeddings.shape == x.shape
    assert torch.equal(out.embeddings, x)
    assert out.embeddings.data_ptr() != x.data_ptr()


def test_iters_zero_returns_input_unchanged():
    x = gaussian(30, 16)
    out = emcl_transform(x, k=4, iters=0, lam=1.0, beta=3.0)
    assert torch.equal(out.embeddings, x)
    assert torch.count_nonzero(out.z) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_fp32(dtype):
    x = clip_like(64, 32)
    prior = reference_init(8, torch.Generator().manual_seed(0))
    low = emcl_transform(x.to(dtype), k=8, iters=9, lam=0.05, beta=3.0, init=prior)
    full = emcl_transform(x.to(dtype).float(), k=8, iters=9, lam=0.05, beta=3.0, init=prior)
    assert low.embeddings.dtype == dtype
    assert low.z.dtype == torch.float32
    torch.testing.assert_close(low.z, full.z, rtol=0, atol=0)
    torch.testing.assert_close(low.embeddings, full.embeddings.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"iters": -1}, "iters"),
        ({"iters": 1.0}, "iters"),
        ({"lam": 0.0}, "lam"),
        ({"lam": -1.0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"lam": float("inf")}, "lam"),
        ({"beta": -0.5}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": 1e9}, "beta"),
    ],
)
def test_out_of_range_arguments_name_the_argument(kwargs, name):
    args = {"k": 4, "iters": 3, "lam": 1.0, "beta": 1.0} | kwargs
    with pytest.raises(ValueError, match=rf"^{name} "):
        emcl_transform(gaussian(10, 8), **args)
    with pytest.raises(ValueError, match=rf"^{name} "):
        EMParams(**args)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_layer_rejects_bad_momentum(momentum):
    with pytest.raises(ValueError, match=r"^momentum "):
        EMCLLayer(k=4, momentum=momentum)


def test_prior_init_needs_matching_k():
    with pytest.raises(ValueError, match="8 bases but k=4"):
        emcl_transform(gaussian(10, 8), k=4, iters=2, lam=1, beta=1, init=torch.ones(8))
    with pytest.raises(ValueError, match="trained"):
        EMParams(k=4, init="prior").run(gaussian(10, 8))


def test_small_temperature_stays_finite_on_large_features():
    x = 50.0 * gaussian(200, 64)
    out = emcl_transform(x, k=16, iters=20, lam=1e-4, beta=10.0, init="data")
    assert torch.isfinite(out.embeddings).all()
    assert torch.isfinite(out.z).all() and torch.isfinite(out.mu).all()


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 256),
    iters=st.integers(0, 50),
    lam=st.floats(1e-3, 1e3),
    beta=st.floats(0.0, 10.0),
    n=st.integers(1, 300),
    d=st.integers(1, 48),
    init=st.sampled_from(["reference", "data"]),
    scale=st.floats(1e-3, 1e2),
    seed=st.integers(0, 2**16),
)
def test_property_outputs_are_finite(k, iters, lam, beta, n, d, init, scale, seed):
    x = scale * gaussian(n, d, seed)
    out = emcl_transform(
        x,
        k=k,
        iters=iters,
        lam=lam,
        beta=beta,
        init=init,
        generator=torch.Generator().manual_seed(seed),
    )
    assert out.embeddings.shape == x.shape and out.embeddings.dtype == x.dtype
    assert torch.isfinite(out.embeddings).all()
    assert torch.isfinite(out.mu).all() and torch.isfinite(out.z).all()
    assert 0 <= int(out.effective_k) <= min(k, d)
    if beta == 0.0 or iters == 0:
        assert torch.equal(out.embeddings, x)


# ---------------------------------------------------------------------------------------------
# Effective K (docs/method.md §1.5, §1.5b)
# ---------------------------------------------------------------------------------------------
def test_effective_k_is_the_numerical_rank():
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(128, 3, generator=gen) @ torch.rand(3, 16, generator=gen)
    assert int(effective_k(z)) == 3
    assert int(effective_k(torch.zeros(10, 4))) == 0
    assert effective_k(torch.rand(2, 5, 64, 8, generator=gen)).tolist() == [[8] * 5] * 2


@pytest.mark.parametrize("k", [4, 8, 16, 32, 64])
def test_reference_init_collapses_to_two_subspaces(k):
    x = clip_like(256, 128, seed=k)
    prior = reference_init(k, torch.Generator().manual_seed(0))
    out = emcl_transform(x, k=k, iters=9, lam=1.0, beta=3.0, init=prior)
    assert 1 <= int(out.effective_k) <= 2
    # Bases that start with the same sign stay identical (docs/method.md §1.5).
    signs = prior.flatten() > 0
    for group in (signs, ~signs):
        if group.sum() > 1:
            same = out.mu[:, group]
            torch.testing.assert_close(same, same[:, :1].expand_as(same), atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [8, 16, 32])
def test_data_init_breaks_the_symmetry_at_a_sharp_temperature(k):
    x = clip_like(256, 128, seed=k)
    out = emcl_transform(
        x,
        k=k,
        iters=9,
        lam=0.01,
        beta=3.0,
        init="data",
        generator=torch.Generator().manual_seed(0),
    )
    assert int(out.effective_k) >= k // 2


def test_gaussian_data_uses_every_subspace():
    out = emcl_transform(
        gaussian(256, 128),
        k=16,
        iters=9,
        lam=1.0,
        beta=1.0,
        init="data",
        generator=torch.Generator().manual_seed(0),
    )
    assert int(out.effective_k) == 16


# ---------------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------------
def test_layer_forward_matches_the_reference():
    layer = EMCLLayer(k=16, iters=9, lam=1.0, beta=3.0, seed=0).eval()
    x = clip_like(80, 32)
    expected = reference_emcl(x, layer.prior, 9, 1.0, 3.0)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)


def test_prior_moves_in_train_mode_only():
    layer = EMCLLayer(k=8, iters=3, lam=1.0, beta=1.0, momentum=0.9)
    x = clip_like(64, 32)
    start = layer.prior.clone()
    layer.eval()
    layer(x)
    assert torch.equal(layer.prior, start)
    layer.train()
    out = layer.transform(x)
    expected = 0.9 * start + 0.1 * out.mu.mean(dim=0, keepdim=True)
    torch.testing.assert_close(layer.prior, expected, rtol=0, atol=1e-7)
    assert not torch.equal(layer.prior, start)


def test_gradient_is_the_identity():
    layer = EMCLLayer(k=4, iters=3, lam=1.0, beta=3.0).train()
    x = clip_like(20, 8).requires_grad_(True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_prior_is_saved_and_restored():
    layer = EMCLLayer(k=8, iters=3).train()
    layer(clip_like(50, 16))
    assert "prior" in layer.state_dict()
    blob = save(layer.state_dict())
    fresh = EMCLLayer(k=8, iters=3, seed=123)
    fresh.load_state_dict(load(blob))
    assert torch.equal(fresh.prior, layer.prior)
    x = clip_like(30, 16, seed=9)
    assert torch.equal(fresh.eval()(x), layer.eval()(x))
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)  # plain state_dict: no pickled objects beyond tensors
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=True)["prior"], layer.prior)


def test_layer_is_device_agnostic_and_follows_to():
    layer = EMCLLayer(k=4).to(torch.float64)
    assert layer.prior.dtype == torch.float64
    out = layer.eval()(clip_like(10, 8))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_concurrent_eval_calls_leave_the_prior_bit_identical():
    layer = EMCLLayer(k=16, iters=9).eval()
    before = layer.prior.clone()
    inputs = [clip_like(60, 32, seed=s) for s in range(8)]
    expected = [layer(x) for x in inputs]

    def worker(i: int) -> None:
        for _ in range(25):
            assert torch.equal(layer(inputs[i]), expected[i])

    assert not run_in_threads(8, worker)
    assert torch.equal(layer.prior, before)


def test_overrides_do_not_change_the_layer():
    layer = EMCLLayer(k=8, iters=9, lam=1.0, beta=3.0).eval()
    x = clip_like(40, 16)
    out = layer.transform(x, k=4, iters=2, lam=0.1, beta=0.5, init="data")
    assert out.mu.shape[-1] == 4
    assert (layer.k, layer.iters, layer.lam, layer.beta) == (8, 9, 1.0, 3.0)
    with pytest.raises(ValueError, match="trained K"):
        layer.transform(x, k=4, init="prior")


def test_paper_default_settings():
    assert (EMCL_NET_DEFAULTS.k, EMCL_NET_DEFAULTS.iters, EMCL_NET_DEFAULTS.lam) == (32, 9, 1.0)
    assert EMCL_NET_DEFAULTS.beta == 3.0
    assert (INFERENCE_MODULE_DEFAULTS.k, INFERENCE_MODULE_DEFAULTS.iters) == (7, 10)
    assert (INFERENCE_MODULE_DEFAULTS.lam, INFERENCE_MODULE_DEFAULTS.beta) == (0.1, 4.0)
