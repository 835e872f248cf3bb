"""Where things live: the one cache-root rule and the project's shared locations.

Every cache (demo world, gallery features, decoded frames, maps, uploads) sits under one
root: ``--cache-dir`` where a command takes it, else ``$EMCL_CACHE_DIR``, else ``.cache`` in
the repository. Never the working directory, so the app, the training and the evaluation
CLIs started from anywhere share one cache.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEMO_BASE_CHECKPOINT = CHECKPOINTS / "demo-base"
DEMO_EMCL_CHECKPOINT = CHECKPOINTS / "demo-emcl"
CACHE_ENV = "EMCL_CACHE_DIR"

# The default demo world: training clips, test clips, seed (app, training and evaluation).
DEMO_WORLD_SIZE = (2000, 1000, 0)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$EMCL_CACHE_DIR``, else ``<repo>/.cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env) if from_env else REPO_ROOT / ".cache"


def demo_world_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "demo_world"


def features_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "features"


def frames_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "frames"


def maps_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "maps"


def uploads_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "uploads"
