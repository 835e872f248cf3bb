"""GPU suite, section ``search``: exact search of a 1M × 512 gallery on the device with the EMCL
re-rank of the top 64 (issue 18, point 3: query p95 ≤ 5 ms).

The timing is bench/table_bench.py's ``time_device_search``: the app's path, the device's
exact fp16 top-M attached to the ``GalleryIndex`` (emcl/retrieval/torch_search.py), exact fp32
cosines of its rows, then ``rank_query``'s EMCL re-rank of the best 64. Beside it: whether the
routing rule (``torch_search.fits``) places such a gallery on the device, and how much of the
fp32 top 64 the fp16 top 64 holds on a clustered gallery drawn the way bench/scale_bench.py
draws it (centres under super-centres; uniform vectors would make every neighbour equally
far), so the fp16 speed is not bought with lost results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.gpu_common import SuiteRun
from bench.table_bench import time_device_search
from emcl.retrieval.torch_search import exact_topk, fits

SHORTLIST = 64


def clustered(n: int, dim: int, n_queries: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Unit-norm gallery ``[n, dim]`` fp16 and queries ``[Q, dim]`` fp32, drawn on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    supers = F.normalize(torch.randn(max(1, n // 5000), dim, generator=g, device=device), dim=-1)
    n_centres = max(1, n // 50)
    parent = torch.randint(0, len(supers), (n_centres,), generator=g, device=device)
    spread = torch.randn(n_centres, dim, generator=g, device=device) / dim**0.5
    centres = F.normalize(supers[parent] + spread, dim=-1)
    gallery = torch.empty(n, dim, dtype=torch.float16, device=device)
    for start in range(0, n, 65_536):  # fp32 working set of one chunk at a time
        rows = min(65_536, n - start)
        pick = torch.randint(0, n_centres, (rows,), generator=g, device=device)
        noise = torch.randn(rows, dim, generator=g, device=device) * (0.35 / dim**0.5)
        gallery[start : start + rows] = F.normalize(centres[pick] + noise, dim=-1).half()
    pick = torch.randint(0, n_centres, (n_queries,), generator=g, device=device)
    noise = torch.randn(n_queries, dim, generator=g, device=device) * (0.6 / dim**0.5)
    return gallery, F.normalize(centres[pick] + noise, dim=-1)


def _overlap(gallery: Tensor, queries: Tensor) -> float:
    """Mean share of the fp32 top-64 found in the fp16 top-64 (ties at 1e-6 counted)."""
    exact, _ = exact_topk(queries.float(), gallery.float(), SHORTLIST)  # [Q, 64]
    _, fast = exact_topk(queries, gallery, SHORTLIST)
    scores = (queries.float() @ gallery.float().T).gather(1, fast)  # fp32 scores of fp16 picks
    return float((scores >= exact[:, -1:] - 1e-6).float().mean())


def search_section(run: SuiteRun) -> dict:
    """Section (b): exact fp16 search + EMCL re-rank, query p50/p95 (module doc)."""
    n, dim, n_queries = run.pick((1_000_000, 512, 100), (4096, 64, 6))
    out = run.output
    out["fits_on_device"] = fits(n, dim, run.device)
    out |= time_device_search(n, dim, device=run.device, queries=n_queries, shortlist=SHORTLIST)
    gallery, queries = clustered(n, dim, 10, run.device)
    out["fp16_top64_overlap_with_fp32"] = round(_overlap(gallery, queries), 4)
    return out


__all__ = ["clustered", "search_section"]
