"""2-D maps of embeddings (UMAP, PCA for tiny sets) with an on-disk cache, and the modality gap.

UMAP is slow to import and to fit (seconds for a few thousand points on 2 cores, plus numba's
first compilation), so :func:`project` caches every result on disk under a key made of the
input bytes and every setting: a restart or a repeated knob setting costs nothing. Galleries
with fewer than ``MIN_UMAP_POINTS`` points use PCA instead (UMAP's neighbour graph and spectral
initialisation break down there: docs/reliability.md §5).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.fileio import atomic_output

MIN_UMAP_POINTS = 15
CACHE_VERSION = 1


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Rows ``[N, D]`` projected on their top-2 principal axes ``[N, 2]`` (zeros pad N < 2)."""
    out = np.zeros((x.shape[0], 2), dtype=np.float32)
    if x.shape[0] < 2:
        return out
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T  # [N, <=2]
    # Fix each axis' sign so that the projection is deterministic.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), range(coords.shape[1])])
    out[:, : coords.shape[1]] = coords * np.where(signs == 0, 1, signs)
    return out


def _key(x: np.ndarray, method: str, seed: int, n_neighbors: int, min_dist: float) -> str:
    digest = hashlib.sha256(
        f"v{CACHE_VERSION}|{method}|{seed}|{n_neighbors}|{min_dist}|{x.shape}|{x.dtype}".encode()
    )
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()[:24]


def project(
    x: np.ndarray,
    *,
    method: str = "auto",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, str]:
    """``[N, D]`` -> ``([N, 2] float32, method used)``; ``method`` is auto, umap or pca.

    UMAP uses the cosine metric and a fixed ``seed`` (deterministic, single-threaded). Rows
    must be finite. Results are cached in ``cache_dir`` when given.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"need [N, D] rows, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf; they cannot be mapped")
    if method not in ("auto", "umap", "pca"):
        raise ValueError(f"method must be auto, umap or pca, got {method!r}")
    if method == "auto":
        method = "umap" if x.shape[0] >= MIN_UMAP_POINTS else "pca"
    if method == "umap" and x.shape[0] < MIN_UMAP_POINTS:
        raise ValueError(f"UMAP needs at least {MIN_UMAP_POINTS} points, got {x.shape[0]}")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_key(x, method, seed, n_neighbors, min_dist)}.npy"
        if path.is_file():
            try:
                cached = np.load(path)
                if cached.shape == (x.shape[0], 2):
                    return cached, method
            except (OSError, ValueError):
                pass  # a damaged cache file is recomputed and replaced
    if method == "pca":
        coords = pca_2d(x)
    else:
        import umap  # slow import: only when a map is asked for

        reducer = umap.UMAP(
            n_neighbors=min(n_neighbors, x.shape[0] - 1),
            min_dist=min_dist,
            metric="cosine",
            random_state=seed,
            n_jobs=1,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba / n_jobs notices
            coords = reducer.fit_transform(x).astype(np.float32)
    if path is not None:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, coords)
    return coords, method


def modality_gap(videos: Tensor, texts: Tensor) -> float:
    """Distance between the centroids of the L2-normalised video ``[Nv, D]`` and text
    ``[Nt, D]`` embeddings (Liang et al.'s modality gap); NaN if either set is empty."""
    if len(videos) == 0 or len(texts) == 0:
        return float("nan")
    v = F.normalize(videos.float(), dim=-1).mean(dim=0)
    t = F.normalize(texts.float(), dim=-1).mean(dim=0)
    return float(torch.linalg.vector_norm(v - t))


__all__ = ["MIN_UMAP_POINTS", "modality_gap", "pca_2d", "project"]
