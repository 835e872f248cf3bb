"""2-D maps (PCA / UMAP with a disk cache) and the modality gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emcl.explorer.projection import MIN_UMAP_POINTS, modality_gap, pca_2d, project


def points(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_pca_orders_axes_by_variance_and_is_deterministic():
    x = points(40)
    x[:, 0] *= 10  # the dominant direction
    coords = pca_2d(x)
    assert coords.shape == (40, 2)
    assert coords[:, 0].var() > coords[:, 1].var()
    assert np.allclose(np.abs(np.corrcoef(coords[:, 0], x[:, 0])[0, 1]), 1, atol=1e-2)
    assert np.array_equal(coords, pca_2d(x.copy()))


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_pca_handles_tiny_sets(n):
    coords = pca_2d(points(n) if n else np.zeros((0, 16), np.float32))
    assert coords.shape == (n, 2) and np.isfinite(coords).all()


def test_auto_falls_back_to_pca_below_the_umap_minimum(tmp_path):
    coords, method = project(points(MIN_UMAP_POINTS - 1), cache_dir=tmp_path)
    assert method == "pca" and coords.shape == (MIN_UMAP_POINTS - 1, 2)
    with pytest.raises(ValueError, match="at least"):
        project(points(4), method="umap")


def test_refuses_nan_and_bad_shapes():
    x = points(20)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        project(x)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        project(points(5)[0])
    with pytest.raises(ValueError, match="method"):
        project(points(5), method="tsne")


def test_results_are_cached_per_input_and_setting(tmp_path):
    x = points(10)
    first, _ = project(x, method="pca", cache_dir=tmp_path)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], first + 100.0)  # the cache is what a second call returns
    again, _ = project(x, method="pca", cache_dir=tmp_path)
    assert np.allclose(again, first + 100.0)
    project(x, method="pca", seed=1, cache_dir=tmp_path)
    project(x * 2, method="pca", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3
    files[0].write_bytes(b"garbage")  # a damaged entry is recomputed
    repaired, _ = project(x, method="pca", cache_dir=tmp_path)
    assert np.allclose(repaired, first)


def test_modality_gap():
    v = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    t = torch.tensor([[0.0, 3.0]])
    assert modality_gap(v, t) == pytest.approx(2**0.5)
    assert modality_gap(v, v * 5) == pytest.approx(0.0)
    assert np.isnan(modality_gap(v, torch.zeros(0, 2)))


@pytest.mark.slow
def test_umap_map_is_finite_and_seeded(tmp_path):
    x = points(60, seed=3)
    a, method = project(x, seed=7)
    b, _ = project(x, seed=7)
    assert method == "umap" and a.shape == (60, 2) and np.isfinite(a).all()
    assert np.allclose(a, b)
