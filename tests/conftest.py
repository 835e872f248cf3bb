"""Shared fixtures: synthetic clips and a tiny demo world, all made inside the test session."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from emcl.video import write_video


def clip_frames(n: int, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """``n`` RGB frames whose grey level encodes the frame index (frame i ~ 6 * i), so a test
    can tell which frame a decoder returned. The level is constant over the frame: robust to
    compression and resizing."""
    h, w = size
    return [np.full((h, w, 3), (6 * i) % 250, np.uint8) for i in range(n)]


def frame_number(frame: np.ndarray) -> int:
    """Inverse of :func:`clip_frames` for one decoded frame [H, W, 3]."""
    return round(float(frame.mean()) / 6)


def run_in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(i)`` for ``i < count`` on ``count`` threads at once; the exceptions raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as error:  # reported to the caller
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture
def make_clip(tmp_path: Path):
    """``make_clip(name, n=30, size=(96, 128), fps=10, **write_video_kwargs) -> Path``."""

    def make(name: str = "clip.mp4", n: int = 30, size=(96, 128), fps: float = 10, **kw) -> Path:
        path = tmp_path / name
        write_video(path, clip_frames(n, size), fps, **kw)
        return path

    return make


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A 20 train + 10 test demo world (seed 0), built once per session (~1 s)."""
    from emcl.demo_world import build_world

    out = tmp_path_factory.mktemp("tiny_world")
    build_world(out, n_train=20, n_test=10, seed=0, workers=1)
    return out


# ---------------------------------------------------------------------------------------------
# The explorer (issue 5): a small demo world, the demo checkpoints (random-weight stand-ins saved
# through the real checkpoint format until the trained ones exist) and both galleries.
# ---------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def explorer_inputs(tmp_path_factory) -> dict:
    """World, checkpoints and a warm feature cache; ``make`` builds a fresh Explorer on them."""
    import torch

    from emcl.checkpoint import save_checkpoint
    from emcl.demo_world import build_world
    from emcl.explorer import Setup, load_explorer
    from emcl.model import DEMO_BACKBONE, EMCLConfig, EMCLRetrievalModel, ModelConfig

    root = tmp_path_factory.mktemp("explorer")
    world = root / "world"
    build_world(world, n_train=8, n_test=24, seed=0, workers=1)
    checkpoints = {}
    for name, emcl in (("demo-base", None), ("demo-emcl", EMCLConfig())):
        real = REPO / "checkpoints" / name
        if (real / "model.safetensors").is_file():
            checkpoints[name] = real
            continue
        torch.manual_seed(len(checkpoints))
        config = ModelConfig(backbone=DEMO_BACKBONE, temporal_layers=2, emcl=emcl)
        checkpoints[name] = save_checkpoint(EMCLRetrievalModel(config), root / name)

    def setup(cache_dir: Path | None = None) -> Setup:
        return Setup(
            data=world,
            base_checkpoint=checkpoints["demo-base"],
            checkpoint=checkpoints["demo-emcl"],
            cache_dir=cache_dir or root / "cache",
            log=lambda message: None,
        )

    def make(cache_dir: Path | None = None):
        return load_explorer(setup(cache_dir))

    make()  # index both galleries once; later explorers load features from the cache
    return {"world": world, "checkpoints": checkpoints, "setup": setup, "make": make}


@pytest.fixture(scope="session")
def explorer(explorer_inputs):
    """One shared Explorer (tests that add videos build their own with ``explorer_inputs``)."""
    return explorer_inputs["make"]()


@pytest.fixture(scope="session")
def served_app(explorer_inputs, explorer):
    """The app launched on a free loopback port, as ``python app.py`` launches it."""
    import socket

    import app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    setup = explorer_inputs["setup"]()
    settings = app.launch_settings(setup, explorer, port=port)
    demo = app.queued(app.build_demo(explorer))
    server, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **settings)
    yield {
        "url": url,
        "demo": demo,
        "server": server,
        "settings": settings,
        "setup": setup,
        "explorer": explorer,
    }
    demo.close()
