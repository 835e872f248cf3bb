"""Where things live: the one cache-root rule and the project's shared locations.

Every cache (demo world, gallery features, decoded frames, maps, uploads) sits under one
root: ``--cache-dir`` where a command takes it, else ``$EMCL_CACHE_DIR``, else ``.cache`` in
the repository. Never the working directory, so the app, the training and the evaluation
CLIs started from anywhere share one cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEMO_BASE_CHECKPOINT = CHECKPOINTS / "demo-base"
DEMO_EMCL_CHECKPOINT = CHECKPOINTS / "demo-emcl"
DEMO_PRETRAINED_CHECKPOINT = CHECKPOINTS / "demo-pretrain-video"  # where the fine-tunes start
CACHE_ENV = "EMCL_CACHE_DIR"


@dataclass(frozen=True)
class DemoWorld:
    """One generated demo world: its clip counts, seed and generator version."""

    n_train: int  # training clips (the last 10 % of them are the val split)
    n_test: int
    seed: int
    version: int  # 1: emcl/data/world/v1.py, 2: emcl/data/world/v2.py

    @property
    def folder(self) -> str:
        """Its folder name under the cache root (v1 keeps its original name)."""
        return "demo_world" if self.version == 1 else f"demo_world_v{self.version}"


# Every version stays buildable; the app's world is the one its shipped checkpoints were trained
# on (docs/design.md, "The demo world"): v2 since the five-seed study (checkpoints/REPORT.md).
DEMO_WORLDS = {1: DemoWorld(2000, 1000, 0, version=1), 2: DemoWorld(3000, 1000, 0, version=2)}
DEMO_WORLD = DEMO_WORLDS[2]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$EMCL_CACHE_DIR``, else ``<repo>/.cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env) if from_env else REPO_ROOT / ".cache"


def demo_world_dir(cache_dir: str | os.PathLike | None = None, version: int | None = None) -> Path:
    """The demo world's folder (``version``: the app's world when None)."""
    world = DEMO_WORLD if version is None else DEMO_WORLDS[version]
    return cache_root(cache_dir) / world.folder


def features_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "features"


def frames_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "frames"


def maps_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "maps"


def uploads_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "uploads"


def runs_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The runs trained from the page (``<run>/export`` once finished)."""
    return cache_root(cache_dir) / "runs"
