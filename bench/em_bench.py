"""EM kernel benchmark: run by hand (`python -m bench.em_bench`), prints what it measured.

Every EM figure is also given as GFLOP/s and as a share of this machine's fp32 matmul throughput,
measured first in the same run. The EM's cost is its matrix products: per run of N rows, D
dimensions, K bases and T iterations, ``T * 4 * N * D * K`` FLOP (``x^T mu`` and ``x z``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from emcl.core.em import EMParams
from emcl.core.logits import emclnet_logits, inference_module_logits
from emcl.core.protocols import TRAINED
from emcl.fileio import atomic_write_json
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.metrics import retrieval_metrics
from emcl.retrieval.ranking import rank_query
from emcl.runtime import flush_subnormals


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = timed(lambda: a @ b, repeat=5)
    return 2 * size**3 / seconds / 1e9


def em_flop(rows: int, dim: int, k: int, iters: int, blocks: int) -> float:
    return blocks * iters * 4 * rows * dim * k


def blocks_loop(
    text: torch.Tensor, videos: torch.Tensor, bt: int, bv: int, logits_fn: Callable
) -> torch.Tensor:
    """The authors' evaluation: a Python loop over text blocks × video blocks."""
    out = torch.empty(text.shape[0], videos.shape[0])
    for t0 in range(0, text.shape[0], bt):
        for v0 in range(0, videos.shape[0], bv):
            out[t0 : t0 + bt, v0 : v0 + bv] = logits_fn(text[t0 : t0 + bt], videos[v0 : v0 + bv])
    return out


def block_protocols(
    text: torch.Tensor, videos: torch.Tensor, frames: torch.Tensor, params: EMParams, peak: float
) -> dict[str, object]:
    """Per-block loop vs batched (vs factorised) for both protocols, 1K × 1K by default."""

    def emcl(x: torch.Tensor) -> torch.Tensor:
        return params.run(x).embeddings

    def inference_block(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return inference_module_logits(t, v, emcl)

    def emclnet_block(t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return emclnet_logits(t, f, None, emcl, 3.0)

    n, dim, n_frames = text.shape[0], text.shape[1], frames.shape[1]
    k, iters = params.k, params.iters
    inference_flop = em_flop(128, dim, k, iters, math.ceil(n / 64) ** 2)
    emclnet_flop = em_flop(32 * 32 + 32, dim, k, iters, math.ceil(n / 32) ** 2)
    factorised_flop = em_flop(32 * n_frames + 32, dim, k, iters, math.ceil(n / 32) ** 2)
    runs = [
        (
            "inference 64x64: loop",
            lambda: blocks_loop(text, videos, 64, 64, inference_block),
            inference_flop,
            None,
        ),
        (
            "inference 64x64: batched",
            lambda: similarity_matrix(text, videos=videos, params=params),
            inference_flop,
            None,
        ),
        (
            "EMCL-Net 32x32: loop",
            lambda: blocks_loop(text, frames, 32, 32, emclnet_block),
            emclnet_flop,
            None,
        ),
        (
            "EMCL-Net 32x32: batched",
            lambda: similarity_matrix(
                text, frames=frames, params=params, protocol=TRAINED, factorize=False
            ),
            emclnet_flop,
            None,
        ),
        (
            "EMCL-Net 32x32: factorised",
            lambda: similarity_matrix(text, frames=frames, params=params, protocol=TRAINED),
            emclnet_flop,
            factorised_flop,
        ),
    ]
    print("\nprotocol, 1K x 1K, K=32 T=9        seconds   vs loop   EM GFLOP/s (share of matmul)")
    figures: dict[str, object] = {}
    loop_seconds = {}
    for name, fn, flop, actual_flop in runs:
        seconds = timed(fn, repeat=1 if "EMCL-Net" in name else 3)
        family = name.split(":")[0]
        loop_seconds.setdefault(family, seconds)
        ratio = loop_seconds[family] / seconds
        rate = (actual_flop or flop) / seconds / 1e9
        note = f"  (reference-equivalent {flop / seconds / 1e9:.0f})" if actual_flop else ""
        print(
            f"{name:34s} {seconds:7.2f}   {ratio:6.2f}x  {rate:6.1f} ({100 * rate / peak:4.1f}%)"
            f"  [{(actual_flop or flop) / 1e9:.0f} GFLOP]{note}"
        )
        figures[name] = {
            "seconds": round(seconds, 3),
            "speedup_vs_loop": round(ratio, 2),
            "em_gflop": round((actual_flop or flop) / 1e9, 1),
            "em_gflops": round(rate, 1),
            "share_of_matmul": round(rate / peak, 3),
        }
    return figures


def query_latency(dim: int, params: EMParams) -> dict[str, object]:
    """p50 / p95 of one query with the shortlist re-rank, over random unit galleries."""
    print("\nquery latency, shortlist 64, K=32 T=9 (p50 / p95 ms over 50 queries)")
    figures: dict[str, object] = {}
    for size in (1_000, 10_000, 100_000):
        gallery = torch.nn.functional.normalize(torch.randn(size, dim), dim=-1)
        index = GalleryIndex.build([f"v{i}" for i in range(size)], gallery)
        queries = torch.randn(50, dim)
        rank_query(queries[0], index, params)
        latencies = []
        for query in queries:
            start = time.perf_counter()
            rank_query(query, index, params, context="shortlist", shortlist_size=64, top_k=10)
            latencies.append((time.perf_counter() - start) * 1000)
        latencies.sort()
        p50, p95 = latencies[len(latencies) // 2], latencies[int(0.95 * len(latencies)) - 1]
        figures[f"query_{size}"] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2)}
        print(f"  {size:>7,d} videos: {p50:7.2f} / {p95:7.2f}")
    return figures


def main() -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="texts = videos")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    figures: dict[str, object] = {"threads": torch.get_num_threads()}

    peak = matmul_gflops()
    figures["matmul_gflops"] = round(peak, 1)
    print(f"fp32 matmul (2048^3): {peak:.1f} GFLOP/s on {torch.get_num_threads()} threads")

    params = EMParams(k=32, iters=9, lam=1.0, beta=3.0, init="reference", seed=0)
    text = torch.nn.functional.normalize(torch.randn(args.n, args.dim), dim=-1)
    videos = torch.nn.functional.normalize(text + 0.7 * torch.randn(args.n, args.dim), dim=-1)
    frames = videos[:, None] + 0.3 * torch.randn(args.n, args.frames, args.dim)
    figures.update(block_protocols(text, videos, frames, params, peak))

    live = EMParams(k=7, iters=10, lam=0.1, beta=4.0, init="reference", seed=42)
    live_s = timed(
        lambda: retrieval_metrics(similarity_matrix(text, videos=videos, params=live)), repeat=3
    )
    figures["live_metrics_s"] = round(live_s, 3)
    print(f"\nlive metrics (inference protocol, K=7 T=10, 1K x 1K + metrics): {live_s:.3f} s")

    figures.update(query_latency(args.dim, params))
    if args.json:
        atomic_write_json(args.json, figures, indent=2)


if __name__ == "__main__":
    main()
