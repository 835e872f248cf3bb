"""Gallery-scale benchmark, ``python -m bench.scale_bench --n N --json PATH``: prints its figures.

Synthetic clustered unit vectors, D = 512: ``N / 50`` cluster centres grouped under ``N / 5000``
super-centres, each video a centre plus noise, so a query's 64 nearest videos span several
neighbouring clusters (uniform random vectors would make recall meaningless: every neighbour is
equally far). Queries are drawn the same way with more noise. Measured:

- build: ``GalleryIndex.build`` plus what ``with_ann`` does, by stage (gallery fingerprint,
  k-means + encoding, the file written with its checksum), and a later start-up's ``with_ann``
  on the saved file (fingerprint and checksum verified);
- memory: resident set size while serving (gallery embeddings + ANN index + ids, measured after
  the ANN queries and before the exact-path comparison) and the run's peak;
- query: p50 / p95 of ``for_query`` + ``rank_query`` with the EMCL re-rank of the top 64
  (K=32, T=9, one EM run over 65 rows), the path the app and the CLI take, timed with 1 and
  with 2 threads (one query per core is how a server with concurrent requests runs; on a
  busy machine two threads per query contend);
- recall@64: the 64 best videos after the ANN shortlist's exact re-scoring against exact search
  over the whole gallery (the EMCL re-rank sees exactly these 64), ties within 1e-6 counted;
- the exact path (every video scored) on a few queries, for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import EMParams
from emcl.fileio import atomic_write_json
from emcl.retrieval.ann import AnnConfig, build_ann, gallery_fingerprint, save_ann
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import rank_query
from emcl.runtime import flush_subnormals

DIM = 512
SHORTLIST = 64
PARAMS = EMParams(k=32, iters=9, lam=1.0, beta=3.0, init="reference", seed=0)
_CHUNK = 65_536


def clustered(n: int, n_queries: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` gallery vectors ``[n, D]`` (fp16) and ``n_queries`` queries ``[Q, D]``, unit norm."""
    g = torch.Generator().manual_seed(seed)
    n_centres = max(1, n // 50)
    supers = F.normalize(torch.randn(max(1, n // 5000), DIM, generator=g), dim=-1)
    parent = torch.randint(0, len(supers), (n_centres,), generator=g)
    centres = F.normalize(supers[parent] + torch.randn(n_centres, DIM, generator=g) / DIM**0.5, -1)

    def draw(count: int, noise: float, dtype: torch.dtype) -> Tensor:
        out = torch.empty(count, DIM, dtype=dtype)
        for start in range(0, count, _CHUNK):
            m = min(_CHUNK, count - start)
            c = centres[torch.randint(0, n_centres, (m,), generator=g)]
            x = c + noise * torch.randn(m, DIM, generator=g) / DIM**0.5
            out[start : start + m] = F.normalize(x, dim=-1).to(dtype)
        return out

    return draw(n, 1.0, torch.float16), draw(n_queries, 1.2, torch.float32)


def exact_top(embeddings: Tensor, queries: Tensor, k: int) -> Tensor:
    """``[Q]`` the exact ``k``-th best cosine per query, scored in fp32 by chunks."""
    best = torch.full((len(queries), 0), -2.0)
    for start in range(0, len(embeddings), _CHUNK):
        s = queries @ embeddings[start : start + _CHUNK].float().T  # [Q, chunk]
        best = torch.cat([best, s], 1).topk(k, dim=1).values
    return best[:, -1]


def recall(index: GalleryIndex, query: Tensor, found: set[int], kth: float) -> float:
    """Share of the exact top 64 among ``found`` (original rows). Rows whose cosine ties the
    exact 64th within 1e-6 count as exact: fp16-stored vectors give cosines equal up to fp32
    rounding, and which of two such rows is "the" 64th is arbitrary."""
    rows = torch.tensor(sorted(found), dtype=torch.long)  # every row kept: rows == positions
    scores = index.embeddings[rows].float() @ query
    return min(SHORTLIST, int((scores >= kth - 1e-6).sum())) / SHORTLIST


def rss_mb() -> float:
    """Current resident set size (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def query_path(index: GalleryIndex, query: Tensor) -> tuple[float, set[int]]:
    """Milliseconds of one search (shortlist hook + base ranking + EMCL re-rank of 64) and the
    original rows of the 64 best base candidates (what the EMCL re-rank saw)."""
    start = time.perf_counter()
    part = index.for_query(query, SHORTLIST)
    ranking = rank_query(query, part, PARAMS, shortlist_size=SHORTLIST, top_k=10)
    ms = (time.perf_counter() - start) * 1000
    return ms, {row for row, rank in ranking.base_rank.items() if rank <= SHORTLIST}


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def measure(index: GalleryIndex, queries: Tensor, kth: Tensor, query_threads: list[int]) -> dict:
    """Recall@64 (``kth``: each query's exact 64th cosine) and latencies per thread count."""
    recalls = [
        recall(index, query, query_path(index, query)[1], float(score))
        for query, score in zip(queries, kth, strict=True)
    ]
    found: dict = {
        "recall_at_64": round(statistics.mean(recalls), 4),
        "recall_at_64_min": round(min(recalls), 4),
        "query": {},
    }
    print(f"    recall@64 {found['recall_at_64']} (worst query {found['recall_at_64_min']})")
    for threads in query_threads:
        set_threads(threads)
        times = [query_path(index, query)[0] for query in queries]
        found["query"][str(threads)] = figures = latency(times)
        print(
            f"    query with EMCL re-rank of {SHORTLIST}, {threads} thread(s): "
            f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms"
        )
    return found


def latency(times_ms: list[float]) -> dict[str, float]:
    return {
        "queries": len(times_ms),
        "p50_ms": round(statistics.median(times_ms), 2),
        "p95_ms": round(percentile(times_ms, 0.95), 2),
    }


def build(figures: dict, videos: Tensor, config: AnnConfig, folder: Path) -> GalleryIndex:
    """``GalleryIndex.build`` + ``with_ann`` (timed by stage), then the start-up of a later run:
    ``with_ann`` on the saved file (fingerprint, checksum, read)."""
    start = time.perf_counter()
    index = GalleryIndex.build([f"v{i}" for i in range(len(videos))], videos)
    figures["gallery_index_s"] = round(time.perf_counter() - start, 2)
    if len(index) < config.threshold:
        print(f"  below the ANN threshold ({config.threshold:,}): exact search")
        figures["build_s"] = figures["gallery_index_s"]
        return index
    ids = [index.video_ids[i] for i in index.rows.tolist()]
    stage = time.perf_counter()
    fingerprint = gallery_fingerprint("synthetic", ids, index.embeddings)
    figures["fingerprint_s"] = round(time.perf_counter() - stage, 2)
    stage = time.perf_counter()
    ann = build_ann(index.embeddings, fingerprint, config)
    figures["ann_train_add_s"] = round(time.perf_counter() - stage, 2)
    stage = time.perf_counter()
    path = folder / f"ann-{fingerprint[:16]}.faiss"  # where with_ann looks for it
    save_ann(ann, path)
    figures["save_s"] = round(time.perf_counter() - stage, 2)
    figures["build_s"] = round(time.perf_counter() - start, 2)
    figures["index_file_mb"] = round(path.stat().st_size / 2**20, 1)
    stage = time.perf_counter()
    index = index.with_ann(folder, "synthetic", config, log=lambda m: print(f"  {m}"))
    figures["reload_s"] = round(time.perf_counter() - stage, 2)
    assert index.ann is not None and index.ann.path == path  # loaded, not rebuilt
    names = ("gallery_index_s", "fingerprint_s", "ann_train_add_s", "save_s")
    stages = ", ".join(f"{k} {figures[k]}" for k in names)
    print(f"  built in {figures['build_s']} s ({stages}); reload {figures['reload_s']} s")
    return index


def run(
    n: int,
    n_queries: int,
    exact_queries: int,
    config: AnnConfig,
    seed: int,
    query_threads: list[int],
    nprobes: list[int],
) -> dict:
    figures: dict = {
        "n": n,
        "dim": DIM,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "machine": platform.processor() or platform.machine(),
        "faiss": faiss.__version__,
        "config": {**config.build_settings(), "nprobe": config.nprobe,
                   "oversample": config.oversample, "cells": config.cells(n)},
        "em": {"k": PARAMS.k, "iters": PARAMS.iters, "shortlist": SHORTLIST, "init": PARAMS.init},
        "load_average_start": os.getloadavg()[0],
    }  # fmt: skip
    print(f"scale bench: {n:,} videos × {DIM}, {n_queries} queries, {figures['config']}")
    start = time.perf_counter()
    videos, queries = clustered(n, n_queries, seed)
    figures["generate_s"] = round(time.perf_counter() - start, 2)
    print(f"  generated in {figures['generate_s']} s; RSS {rss_mb():.0f} MiB")

    with tempfile.TemporaryDirectory(prefix="scale_bench_") as folder:
        index = build(figures, videos, config, Path(folder))
        del videos  # the index holds its own normalised copy
    figures["rss_after_build_mb"] = round(rss_mb(), 0)

    kth = exact_top(index.embeddings, queries, SHORTLIST)
    for n, probes in enumerate(nprobes):
        if index.ann is not None:
            ann = dataclasses.replace(index.ann, config=dataclasses.replace(config, nprobe=probes))
            index = dataclasses.replace(index, ann=ann)
            print(f"  nprobe {probes}:")
        found = measure(index, queries, kth, query_threads)
        if n == 0:
            figures.update(found)
        else:
            figures.setdefault("other_nprobe", {})[str(probes)] = found
        if index.ann is None:
            break
    figures["rss_serving_mb"] = round(rss_mb(), 0)  # gallery embeddings + ANN index + ids
    if index.ann is not None and exact_queries:
        exact_index = GalleryIndex(index.video_ids, index.embeddings, index.rows)  # no ANN
        figures["exact"] = {}
        for threads in query_threads:
            set_threads(threads)
            exact_times = [query_path(exact_index, q)[0] for q in queries[:exact_queries]]
            figures["exact"][str(threads)] = found = latency(exact_times)
            print(
                f"  exact search (every video scored), {threads} thread(s), {exact_queries} "
                f"queries: p50 {found['p50_ms']} ms, p95 {found['p95_ms']} ms"
            )
    figures["rss_peak_mb"] = round(peak_rss_mb(), 0)
    figures["load_average_end"] = os.getloadavg()[0]
    rss = figures["rss_serving_mb"]
    print(f"  RSS serving {rss:.0f} MiB, peak {figures['rss_peak_mb']:.0f} MiB")
    return figures


def main(argv: list[str] | None = None) -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, required=True, help="gallery videos")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=20, help="0: skip the exact path")
    parser.add_argument(
        "--nprobe", default=str(AnnConfig.nprobe), help="cells visited; a list times each"
    )
    parser.add_argument("--nlist", type=int, help="IVF cells (default 4·√N)")
    parser.add_argument("--codes", default=AnnConfig.codes, help="SQ8, SQfp16 or PQ<m>")
    parser.add_argument("--threshold", type=int, default=AnnConfig.threshold)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--query-threads", default="1,2", help="thread counts the queries are timed with"
    )
    args = parser.parse_args(argv)
    nprobes = [int(p) for p in args.nprobe.split(",")]
    config = AnnConfig(
        threshold=args.threshold, codes=args.codes, nlist=args.nlist, nprobe=nprobes[0]
    )
    threads = [int(t) for t in args.query_threads.split(",")]
    figures = run(args.n, args.queries, args.exact_queries, config, args.seed, threads, nprobes)
    if args.json:
        atomic_write_json(args.json, figures, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
