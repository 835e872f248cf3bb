"""The as-trained table and the exact device search, timed on one device (issue 18, point 3).

    python -m bench.table_bench [--device cpu|cuda|auto] [--smoke] [--json PATH]

On synthetic features of the demo's shape (1,000 captions × 1,000 videos × 12 frames, D = 128,
sentence norms about 15 as the demo model's; one caption per video):

- ``table``: the :class:`~emcl.retrieval.emclnet_table.EmclNetTable` build, then a K, iterations,
  λ, init or seed change (a new EM run per 32 × 32 block and the scores: ``em_change``) and a
  β change (scores from the kept terms: ``beta_change``), in milliseconds;
- ``parity`` (a non-CPU device only): the CPU fp32 table against the device's, in R@1 points;
- ``search``: the exact fp16 top-M on the device (emcl/retrieval/torch_search.py) with the EMCL
  re-rank of the shortlist, per query, at ``--search-videos`` videos of D = 512.

The functions are what bench/gpu_suite.py calls; the JSON goes to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import EMParams
from emcl.fileio import atomic_write_json
from emcl.retrieval.emclnet_table import EmclNetTable
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.metrics import retrieval_metrics
from emcl.retrieval.ranking import rank_query
from emcl.retrieval.torch_search import DeviceSearch
from emcl.runtime import flush_subnormals

RESULTS = Path(__file__).parent / "results"
DEMO_PARAMS = EMParams(k=32, iters=9, lam=1.0, beta=3.0, init="data", seed=0)


def synthetic_inputs(
    n: int = 1000, num_frames: int = 12, dim: int = 128, *, seed: int = 0, noise: float = 1.2
) -> tuple[Tensor, Tensor]:
    """Captions ``[n, D]`` (norm 15) and frames ``[n, T, D]``: caption i describes video i,
    with ``noise`` (relative to the clip's direction) leaving near-ties to rank."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n, dim, generator=g), dim=-1)  # [n, D]
    frames = centres[:, None] + 0.6 * torch.randn(n, num_frames, dim, generator=g) / dim**0.5
    text = centres + noise * torch.randn(n, dim, generator=g) / dim**0.5
    return 15.0 * F.normalize(text, dim=-1), frames


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ms(runs: list[float]) -> dict[str, float]:
    ordered = sorted(runs)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p95_ms": round(1000 * p95, 3),
        "min_ms": round(1000 * ordered[0], 3),
        "n": len(ordered),
    }


def _timed(call: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - start


def time_table(
    text: Tensor,
    frames: Tensor,
    *,
    params: EMParams = DEMO_PARAMS,
    prior: Tensor | None = None,
    temperature: float = 3.0,
    repeat: int = 5,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Build, EM-change and β-change times of the table on ``text``'s device (module doc).

    Each EM change uses a new seed (never a cached run); each β change reuses one run."""
    device = text.device
    frames = frames.to(device)
    prior = None if prior is None else prior.to(device)
    holder: list[EmclNetTable] = []
    build = _timed(lambda: holder.append(EmclNetTable(text, frames, temperature=temperature,
                                                      dtype=dtype)), device)  # fmt: skip
    table = holder[0]
    table.terms(params, prior).scores(params.beta)  # warm-up: allocator, kernels
    em_runs = []
    for i in range(repeat):
        point = dataclasses.replace(params, seed=params.seed + 1 + i)
        em_runs.append(_timed(lambda p=point: table.terms(p, prior).scores(p.beta), device))
    terms = table.terms(params, prior)
    beta_runs = [_timed(lambda b=b: terms.scores(b), device) for b in (1.0, 2.0, 2.5, 4.0, 5.0)]
    return {
        "device": str(device),
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "shape": [text.shape[0], *frames.shape],
        "params": dataclasses.asdict(params),
        "build_s": round(build, 4),
        "em_change": _ms(em_runs),
        "beta_change": _ms(beta_runs[1:] if len(beta_runs) > 1 else beta_runs),
    }


def table_parity(
    text: Tensor,
    frames: Tensor,
    *,
    params: EMParams = DEMO_PARAMS,
    prior: Tensor | None = None,
    temperature: float = 3.0,
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.float32,
) -> dict:
    """The CPU fp32 table against the table on ``device`` in ``dtype``: R@1 differences in
    points (t2v and v2t, without and with the EM) and the largest score difference."""
    device = torch.device(device)
    cpu = EmclNetTable(text.cpu(), frames.cpu(), temperature=temperature)
    there = EmclNetTable(text.to(device), frames.to(device), temperature=temperature, dtype=dtype)
    on_device_prior = None if prior is None else prior.to(device)
    pairs = {
        "no_em": (cpu.base_scores(), there.base_scores().float().cpu()),
        "em": (cpu.scores(params, prior), there.scores(params, on_device_prior).float().cpu()),
    }
    out: dict[str, object] = {"device": str(device), "dtype": str(dtype)}
    worst = 0.0
    for name, (reference, other) in pairs.items():
        a, b = retrieval_metrics(reference), retrieval_metrics(other)
        diff = max(abs(a[d]["R1"] - b[d]["R1"]) for d in ("t2v", "v2t"))
        worst = max(worst, diff)
        out[name] = {
            "cpu_r1": {d: a[d]["R1"] for d in a},
            "device_r1": {d: b[d]["R1"] for d in b},
            "r1_diff_points": round(diff, 4),
            "max_abs_score_diff": float((reference - other).abs().max()),
        }
    out["r1_max_diff_points"] = round(worst, 4)
    out["within_0.1_point"] = worst <= 0.1
    return out


def time_device_search(
    n: int = 1_000_000,
    dim: int = 512,
    *,
    device: torch.device | str = "cuda",
    queries: int = 50,
    shortlist: int = 64,
    params: EMParams = DEMO_PARAMS,
    dtype: torch.dtype = torch.float16,
) -> dict:
    """Per-query latency of the exact top-M on ``device`` plus the EMCL re-rank of the
    shortlist (``GalleryIndex.for_query``, then ``rank_query``), on ``n`` clustered videos."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(max(1, n // 100), dim, generator=g), dim=-1)
    picks = torch.randint(0, len(centres), (n,), generator=g)
    videos = (centres[picks] + 0.5 * torch.randn(n, dim, generator=g) / dim**0.5).half()
    index = GalleryIndex.build([f"v{i}" for i in range(n)], videos)
    start = time.perf_counter()
    search = DeviceSearch.place(index.embeddings, device, dtype)
    _sync(device)
    placed = time.perf_counter() - start
    routed = dataclasses.replace(index, device_search=search)
    picked = centres[torch.randint(0, len(centres), (queries + 1,), generator=g)]
    asked = F.normalize(picked + 0.5 * torch.randn(picked.shape, generator=g) / dim**0.5, dim=-1)

    def one(query: Tensor) -> None:
        part = routed.for_query(query, shortlist)
        rank_query(query, part, params, shortlist_size=shortlist, top_k=10)

    one(asked[-1])  # warm-up
    runs = [_timed(lambda q=q: one(q), device) for q in asked[:-1]]
    top_only = [_timed(lambda q=q: search.search(q[None], 4 * shortlist), device) for q in asked]
    return {
        "device": str(device),
        "dtype": str(dtype),
        "videos": n,
        "dim": dim,
        "place_s": round(placed, 3),
        "query_with_rerank": _ms(runs),
        "top_m_only": _ms(top_only[1:]),
    }


def main(argv: list[str] | None = None) -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--smoke", action="store_true", help="toy sizes (seconds, any device)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--search-videos", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="default: bench/results/table_<device>.json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    name = args.device if args.device != "auto" else "cuda"
    device = torch.device(name if torch.cuda.is_available() else "cpu")
    n = 64 if args.smoke else 1000
    text, frames = synthetic_inputs(n)
    figures: dict[str, object] = {"table": time_table(text.to(device), frames, repeat=args.repeat)}
    if device.type != "cpu":
        figures["parity"] = table_parity(text, frames, device=device)
    if device.type != "cpu" or args.smoke:  # on a CPU the large-gallery path is FAISS
        search_n = 4096 if args.smoke else args.search_videos
        dim, queries = (64, 5) if args.smoke else (512, 50)
        figures["search"] = time_device_search(search_n, dim, device=device, queries=queries)
    table = figures["table"]
    print(
        f"as-trained table {n} × {n} on {device} ({table['threads']} threads): build "
        f"{table['build_s']} s; EM change p50 {table['em_change']['p50_ms']} ms; β change p50 "
        f"{table['beta_change']['p50_ms']} ms"
    )
    if "search" in figures:
        search = figures["search"]
        p95 = search["query_with_rerank"]["p95_ms"]
        print(f"exact search + EMCL re-rank at {search['videos']} videos: p95 {p95} ms")
    path = args.json or RESULTS / f"table_{device.type}{'_smoke' if args.smoke else ''}.json"
    atomic_write_json(path, figures, indent=2)


if __name__ == "__main__":
    main()
