"""An approximate nearest-neighbour (ANN) shortlist over a gallery's video embeddings (FAISS).

Exact search scores every video for every query: linear in the gallery (about 70 ms at 100K
videos on 2 cores, 0.7 s at 1M). Above :data:`ANN_THRESHOLD` videos the shortlist comes from an
inverted-file index instead (FAISS ``IVF<nlist>,SQ8``: the vectors are k-means clustered into
``nlist`` cells and stored as 8-bit codes, D bytes per video); a query visits the ``nprobe``
cells nearest to it. The index returns ``oversample`` × the rows asked for, and the caller
re-scores them exactly with the gallery's own embeddings (``GalleryIndex.for_query``), so the
8-bit codes only decide which rows are looked at, never a score.

On disk an index is two files: ``<name>.faiss`` (FAISS's own format) and ``<name>.json``
beside it, with the SHA-256 and size of the ``.faiss`` file, the *gallery fingerprint* (model
fingerprint, video ids and embedding bytes) and the settings. :func:`load_ann` refuses a file
whose checksum, fingerprint or settings differ (:class:`AnnIndexError` says which);
:func:`ensure_ann` then builds a new one, so an index built for another model or gallery is
never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from torch import Tensor

from emcl.fileio import atomic_output, atomic_write_json, file_sha256

ANN_THRESHOLD = 50_000  # videos; below it exact search is as fast (bench/scale_bench.py)
ANN_FORMAT = 1
_CHUNK = 65_536  # rows converted to fp32 at a time (bounds the build's extra memory)


class AnnIndexError(ValueError):
    """An index file that cannot be used; the message says why."""


@dataclass(frozen=True)
class AnnConfig:
    """Building and searching the ANN index (its defaults meet the 1M targets: benchmarks.md §6)."""

    threshold: int = ANN_THRESHOLD  # galleries smaller than this use exact search
    codes: str = "SQ8"  # FAISS encoding per vector: SQ8 (D bytes), SQfp16 (2D), PQ<m> (m bytes)
    nlist: int | None = None  # IVF cells; None: 4·√N
    nprobe: int = 32  # cells visited per query
    oversample: int = 4  # rows returned per row asked for (re-scored exactly by the caller)
    train_per_cell: int = 40  # k-means training points per cell (FAISS warns below 39)
    train_iters: int = 10
    seed: int = 0

    def cells(self, n: int) -> int:
        """IVF cells for ``n`` vectors: ``nlist`` or 4·√n, at least 1 and at most n / 8."""
        cells = self.nlist if self.nlist is not None else int(4 * math.sqrt(n))
        return max(1, min(cells, n // 8))

    def build_settings(self) -> dict[str, Any]:
        """What the stored index depends on (``nprobe`` and ``oversample`` are search-time)."""
        keep = ("codes", "nlist", "train_per_cell", "train_iters", "seed")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass(frozen=True)
class AnnIndex:
    """A FAISS IVF index over rows ``0..N-1`` of one gallery's embeddings."""

    index: faiss.Index  # an IVF index (``faiss.extract_index_ivf`` reaches its lists)
    fingerprint: str  # the gallery fingerprint it was built from
    config: AnnConfig
    path: Path | None = None  # the file it was loaded from or saved to

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def oversample(self) -> int:
        """Rows returned per row asked for (re-scored exactly by the caller)."""
        return self.config.oversample

    @property
    def nlist(self) -> int:
        return int(faiss.extract_index_ivf(self.index).nlist)

    def search(self, queries: Tensor, n: int) -> Tensor:
        """``[Q, n']`` row positions, best first (``n' ≤ n``; -1 where a query found fewer)."""
        # per-call parameters: concurrent searches never share a mutable nprobe
        params = faiss.SearchParametersIVF(nprobe=min(self.config.nprobe, self.nlist))
        x = np.ascontiguousarray(queries.detach().float().cpu().numpy().reshape(-1, self.index.d))
        _, rows = self.index.search(x, min(n, len(self)), params=params)
        return torch.from_numpy(rows)


def gallery_fingerprint(model_fingerprint: str, ids: Sequence[str], embeddings: Tensor) -> str:
    """SHA-256 (hex, 32 chars) of the model fingerprint, the ids and the embedding bytes."""
    digest = hashlib.sha256(f"{model_fingerprint}|{len(ids)}|{embeddings.dtype}|".encode())
    digest.update(str(tuple(embeddings.shape)).encode())
    digest.update("\n".join(ids).encode())
    flat = embeddings.detach().cpu().contiguous().reshape(-1)
    for start in range(0, len(flat), _CHUNK * 512):
        digest.update(flat[start : start + _CHUNK * 512].view(torch.uint8).numpy().data)
    return digest.hexdigest()[:32]


def build_ann(embeddings: Tensor, fingerprint: str, config: AnnConfig = AnnConfig()) -> AnnIndex:
    """An IVF index over ``embeddings`` ``[N, D]`` (unit norm, any float dtype); inner product."""
    n, dim = embeddings.shape
    if n == 0:
        raise ValueError("cannot build an ANN index over an empty gallery")
    cells = config.cells(n)
    index = faiss.index_factory(dim, f"IVF{cells},{config.codes}", faiss.METRIC_INNER_PRODUCT)
    generator = torch.Generator().manual_seed(config.seed)
    sample = torch.randperm(n, generator=generator)[: min(n, cells * config.train_per_cell)]
    sample = sample.sort().values
    index.cp.niter = config.train_iters
    index.cp.seed = config.seed
    index.cp.max_points_per_centroid = max(config.train_per_cell, 39)
    index.cp.min_points_per_centroid = 1  # tiny galleries: no warning spam
    index.train(_fp32(embeddings[sample]))
    for start in range(0, n, _CHUNK):
        index.add(_fp32(embeddings[start : start + _CHUNK]))
    return AnnIndex(index, fingerprint, config)


def _fp32(rows: Tensor) -> np.ndarray:
    return np.ascontiguousarray(rows.detach().cpu().float().numpy())


def sidecar(path: Path) -> Path:
    """The JSON that describes the index file ``path``."""
    return path.with_suffix(".json")


def save_ann(ann: AnnIndex, path: str | os.PathLike) -> None:
    """Write the index to ``path`` and its description (checksum, fingerprint) beside it.

    The ``.faiss`` file is written first: a crash in between leaves a checksum that does not
    match, which :func:`load_ann` reports (nothing half-written is ever used)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        faiss.write_index(ann.index, str(tmp))
    meta = {
        "format": ANN_FORMAT,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "fingerprint": ann.fingerprint,
        "count": len(ann),
        "dim": int(ann.index.d),
        "nlist": ann.nlist,
        "build": ann.config.build_settings(),
        "faiss": faiss.__version__,
    }
    atomic_write_json(sidecar(path), meta, indent=1, sort_keys=True)


def load_ann(
    path: str | os.PathLike, fingerprint: str, config: AnnConfig = AnnConfig()
) -> AnnIndex:
    """The index at ``path`` if its checksum, gallery ``fingerprint`` and build settings match;
    :class:`AnnIndexError` (saying what differs) otherwise."""
    path = Path(path)
    try:
        meta = json.loads(sidecar(path).read_text())
    except FileNotFoundError:
        raise AnnIndexError(f"{path.name}: no index here") from None
    except (OSError, ValueError) as e:
        raise AnnIndexError(f"{sidecar(path).name}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != ANN_FORMAT:
        raise AnnIndexError(f"{sidecar(path).name}: not an index description of this version")
    if meta.get("fingerprint") != fingerprint:
        raise AnnIndexError(f"{path.name}: built for another model or gallery")
    if meta.get("build") != config.build_settings():
        raise AnnIndexError(f"{path.name}: built with other settings {meta.get('build')}")
    if not path.is_file():
        raise AnnIndexError(f"{path.name}: the index file is missing")
    if path.stat().st_size != meta.get("bytes") or file_sha256(path) != meta.get("sha256"):
        raise AnnIndexError(f"{path.name}: checksum mismatch (truncated or replaced)")
    try:
        index = faiss.read_index(str(path))
        faiss.extract_index_ivf(index)  # raises unless it is an IVF index
    except RuntimeError as e:  # FAISS raises RuntimeError for any unreadable file
        raise AnnIndexError(f"{path.name}: unreadable by FAISS ({e})") from None
    if index.ntotal != meta.get("count") or index.d != meta.get("dim"):
        raise AnnIndexError(f"{path.name}: holds {index.ntotal} × {index.d}, expected other")
    return AnnIndex(index, fingerprint, config, path)


def ensure_ann(
    path: str | os.PathLike,
    embeddings: Tensor,
    fingerprint: str,
    config: AnnConfig = AnnConfig(),
    log: Callable[[str], None] = print,
) -> AnnIndex:
    """The index at ``path`` if it matches ``fingerprint``; otherwise one built over
    ``embeddings`` ``[N, D]`` and saved there (the reason is logged)."""
    try:
        ann = load_ann(path, fingerprint, config)
    except AnnIndexError as why:
        log(f"building the ANN index over {len(embeddings)} videos ({why}) …")
        ann = build_ann(embeddings, fingerprint, config)
        save_ann(ann, path)
        return dataclasses.replace(ann, path=Path(path))
    if len(ann) != len(embeddings):
        raise AnnIndexError(f"{Path(path).name}: {len(ann)} rows for {len(embeddings)} videos")
    return ann


__all__ = [
    "ANN_THRESHOLD",
    "AnnConfig",
    "AnnIndex",
    "AnnIndexError",
    "build_ann",
    "ensure_ann",
    "gallery_fingerprint",
    "load_ann",
    "save_ann",
    "sidecar",
]
