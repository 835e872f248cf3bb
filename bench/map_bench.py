"""How long the embedding map's UMAP takes as the number of points grows (sets MAX_MAP_POINTS).

    python -m bench.map_bench [--sizes 1000 2000 4000 8000] [--dim 512] [--json PATH]

Clustered unit vectors (50 clusters, like a gallery's videos and captions), one UMAP fit per
size as :func:`emcl.explorer.projection.project` runs it (cosine, seeded, one thread), after a
warm-up fit that pays numba's compilation. A map fits twice (before and after EMCL), so its
time is about twice the fit time. The load average beside each figure says how busy the
machine was (other processes share the cores).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from emcl.explorer.embedding_map import MAX_MAP_POINTS
from emcl.explorer.projection import project
from emcl.fileio import atomic_write_json
from emcl.runtime import flush_subnormals

DEFAULT_JSON = "bench/results/map_umap_times.json"


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--json", default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    project(clustered(200, args.dim), method="umap")
    warmup = time.perf_counter() - start
    print(f"warm-up fit (numba compilation): {warmup:.1f} s", flush=True)
    rows = []
    for n in args.sizes:
        x = clustered(n, args.dim)
        start = time.perf_counter()
        project(x, method="umap")
        fit = time.perf_counter() - start
        load = [round(v, 2) for v in os.getloadavg()]
        rows.append(
            {"points": n, "fit_s": round(fit, 2), "map_s": round(2 * fit, 2), "load_avg": load}
        )
        print(f"{n:>6} points: one fit {fit:6.1f} s, a map ~{2 * fit:6.1f} s", flush=True)
        report = {
            "dim": args.dim,
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "warmup_s": round(warmup, 2),
            "max_map_points": MAX_MAP_POINTS,
            "sizes": rows,
        }
        atomic_write_json(args.json, report, indent=1)  # after each size: a cut run keeps some
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
