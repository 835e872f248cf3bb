"""The one build pipeline of every world version: render the videos, write the annotation
files, then ``world.json`` (last, so a world with ``world.json`` present is complete).

A version supplies its :class:`~emcl.data.world.common.WorldGenerator`; the pipeline owns the
worker pool, the progress bar, the resumption of already rendered splits and the parameters
recorded in ``world.json``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emcl import paths
from emcl.data.world import v1, v2
from emcl.data.world.common import (
    VERSIONS,
    VIDEO_SPLITS,
    WorldGenerator,
    built_with,
    rendered_splits,
    video_splits,
    world_is_complete,
    world_meta,
    world_params,
    write_files,
    write_world_file,
)

GENERATORS: dict[int, WorldGenerator] = {1: v1.GENERATOR, 2: v2.GENERATOR}
CHUNK = 16  # clips per worker job


def _render_chunk(job: tuple[Callable[[Any, Path], None], list, str]) -> int:
    render, specs, videos = job
    for s in specs:
        render(s, Path(videos) / f"{s.video_id}.mp4")
    return len(specs)


def render_videos(
    render: Callable[[Any, Path], None],
    specs: list,
    videos: Path,
    *,
    workers: int | None = None,
    label: str | None = None,
) -> int:
    """Render ``specs`` into ``videos/<id>.mp4`` in ``workers`` processes (default: all CPUs);
    ``label`` shows a progress bar. Returns the worker count used."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(specs) or 1))
    jobs = [(render, specs[i : i + CHUNK], str(videos)) for i in range(0, len(specs), CHUNK)]
    bar = None
    if label:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), desc=label, unit="clip")
    if workers == 1:
        for job in jobs:
            done = _render_chunk(job)
            bar and bar.update(done)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_render_chunk, jobs):
                bar and bar.update(done)
    bar and bar.close()
    return workers


def build_world(
    out: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    *,
    workers: int | None = None,
    progress: bool = False,
    version: int = 1,
    splits: tuple[str, ...] = VIDEO_SPLITS,
) -> dict[str, object]:
    """Generate world ``version`` under ``out`` and return its parameters (also saved as
    ``world.json``, with the seconds taken and the worker count added).

    v2 renders only the videos of ``splits`` and keeps those already rendered for a world with
    the same parameters, so a test-only world grows into a full one by rendering the rest;
    v1 is always rendered whole."""
    if version not in VERSIONS:
        raise ValueError(f"world version must be one of {VERSIONS}, got {version!r}")
    generator = GENERATORS[version]
    t0 = time.perf_counter()
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    previous = world_meta(out)
    rendered: set[str] = set()
    if generator.by_split and built_with(previous, n_train, n_test, seed, version):
        rendered = rendered_splits(previous)
    (out / "world.json").unlink(missing_ok=True)
    specs = generator.make_specs(n_train, n_test, seed)
    wanted = set(splits) if generator.by_split else set(VIDEO_SPLITS)
    todo = [s for s in specs if s.split in wanted and s.split not in rendered]
    label = ("demo world" if version == 1 else f"demo world v{version}") if progress else None
    used = render_videos(generator.render_clip, todo, videos, workers=workers, label=label)
    write_files(out, generator.annotations(specs, seed))
    meta = world_params(version, seed, n_train, n_test)
    if generator.by_split:
        meta["splits"] = sorted(rendered | wanted)
    if generator.extra_meta is not None:
        meta |= generator.extra_meta(specs, seed)
    write_world_file(meta, out / "world.json")
    return meta | {"seconds": round(time.perf_counter() - t0, 1), "workers": used}


def ensure_world(
    root: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int,
    *,
    progress: bool = False,
    version: int = 1,
    splits: tuple[str, ...] = VIDEO_SPLITS,
) -> None:
    """Build the world under ``root`` unless a finished one with these parameters and the videos
    of ``splits`` is there (v2 renders only the missing splits' videos; v1 renders all)."""
    if not world_is_complete(root, n_train, n_test, seed, version=version, splits=splits):
        build_world(root, n_train, n_test, seed, progress=progress, version=version, splits=splits)


def ensure_demo_world(data: str | os.PathLike, progress: bool = True, split: str = "all") -> None:
    """Build a demo world (one of ``paths.DEMO_WORLDS``) with the videos ``split`` reads if
    ``data`` is its folder under the cache root and they are missing. Any other folder is the
    user's dataset and is only read."""
    for w in paths.DEMO_WORLDS.values():
        folder = paths.demo_world_dir(version=w.version)
        if Path(data).resolve() == folder.resolve():
            ensure_world(folder, w.n_train, w.n_test, w.seed, progress=progress,
                         version=w.version, splits=video_splits(split))  # fmt: skip
