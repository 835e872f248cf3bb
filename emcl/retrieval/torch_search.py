"""Exact top-M search on an accelerator: the whole gallery in device memory, one matrix product.

On a GPU a gallery that fits in memory needs no approximate index: a 1M × 512 fp16 gallery is
1 GB, and scoring it against one query reads that gigabyte once (a fraction of a millisecond
on a current GPU) before a top-M. :class:`DeviceSearch` holds the unit-norm embeddings there
and returns the best rows; ``GalleryIndex.for_query`` turns them into a shortlist whose exact
fp32 cosines (on the CPU) order it, and the EMCL re-rank runs on it as on any shortlist, so fp16
only decides which rows are looked at (its ties are covered by the oversampling). FAISS stays
the CPU path (emcl/retrieval/ann.py); :func:`fits` is the rule between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SEARCH_DTYPES = (torch.float16, torch.float32)  # fp32: parity runs against the CPU
MEMORY_SHARE = 0.5  # of the device's free memory the gallery (and one query batch) may take
SCORES_BYTES = 256 << 20  # one batch of queries' score rows, at most


def gallery_bytes(n: int, dim: int, dtype: torch.dtype = torch.float16) -> int:
    """Device memory a gallery of ``n`` × ``dim`` embeddings needs, with one query batch."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return n * dim * itemsize + min(SCORES_BYTES, 64 * n * itemsize)


def fits(
    n: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float16, *,
    free_bytes: int | None = None,
) -> bool:  # fmt: skip
    """The routing rule: a CUDA ``device`` whose free memory (``free_bytes``, else measured)
    holds the gallery in ``dtype`` within :data:`MEMORY_SHARE`. Anything else: not here."""
    if torch.device(device).type != "cuda":
        return False
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    return gallery_bytes(n, dim, dtype) <= MEMORY_SHARE * free_bytes


def exact_topk(queries: Tensor, gallery: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Scores and rows ``[Q, m']`` (``m' = min(m, N)``, best first) of ``queries`` ``[Q, D]``
    against ``gallery`` ``[N, D]`` by inner product, in the gallery's dtype and on its device.
    Queries run in batches whose score rows stay under :data:`SCORES_BYTES`."""
    m = min(m, gallery.shape[0])
    queries = queries.to(device=gallery.device, dtype=gallery.dtype)
    per_batch = max(1, SCORES_BYTES // max(1, gallery.shape[0] * gallery.element_size()))
    scores, rows = [], []
    for part in queries.split(per_batch):
        top = torch.topk(part @ gallery.T, m, dim=-1)  # [q, m]
        scores.append(top.values)
        rows.append(top.indices)
    if not scores:
        empty = gallery.new_empty(0, m)
        return empty, empty.long()
    return torch.cat(scores), torch.cat(rows)


@dataclass(frozen=True)
class DeviceSearch:
    """A gallery's unit-norm embeddings ``[N, D]`` on a device, for exact top-M search."""

    embeddings: Tensor
    oversample: int = 4  # rows returned per row asked for (re-scored exactly by the caller)

    @classmethod
    def place(
        cls,
        embeddings: Tensor,
        device: torch.device | str,
        dtype: torch.dtype = torch.float16,
        oversample: int = 4,
    ) -> DeviceSearch:
        """``embeddings`` ``[N, D]`` (unit norm, any float dtype, any device) copied to
        ``device`` in ``dtype`` (fp16; fp32 for parity runs)."""
        if dtype not in SEARCH_DTYPES:
            raise ValueError(f"dtype must be one of {SEARCH_DTYPES}, got {dtype}")
        return cls(embeddings.to(device=device, dtype=dtype).contiguous(), oversample)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def search(self, queries: Tensor, n: int) -> Tensor:
        """``[Q, n']`` gallery rows, best first (``n' = min(n, N)``), on the CPU."""
        _, rows = exact_topk(queries.reshape(-1, self.embeddings.shape[-1]), self.embeddings, n)
        return rows.cpu()


__all__ = ["SEARCH_DTYPES", "DeviceSearch", "exact_topk", "fits", "gallery_bytes"]
