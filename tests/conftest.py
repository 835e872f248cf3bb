"""Shared fixtures: synthetic clips and a tiny demo world, all made inside the test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import clip_frames

from emcl.video.writing import write_video


@pytest.fixture(autouse=True)
def ieee_main_thread():
    """IEEE subnormals on the test thread: hypothesis refuses to draw floats without them, and
    a bench main() run in-process (emcl/runtime.py) turns them off for its thread."""
    torch.set_flush_denormal(False)


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
    from emcl.data.world import build_world

    out = tmp_path_factory.mktemp("tiny_world")
    build_world(out, n_train=20, n_test=10, seed=0, workers=1)
    return out


# ---------------------------------------------------------------------------------------------
# The explorer: a small demo world, the demo checkpoints (random-weight stand-ins saved
# through the real checkpoint format until the trained ones exist) and both galleries.
# ---------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def explorer_inputs(tmp_path_factory) -> dict:
    """World, checkpoints and a warm feature cache; ``make`` builds a fresh Explorer on them."""
    import torch

    from emcl.data.world import build_world
    from emcl.explorer.setup import Setup, load_explorer
    from emcl.model.checkpoint import save_checkpoint
    from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
    from emcl.model.model import EMCLRetrievalModel

    root = tmp_path_factory.mktemp("explorer")
    world = root / "world"
    build_world(world, n_train=8, n_test=80, seed=0, workers=1)  # > one 64-video EM block
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

    from emcl.explorer.uploads import UploadLimits
    from ui import app
    from ui.flags import Serving

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    setup = explorer_inputs["setup"]()
    serving = Serving(port=port, uploads=UploadLimits())  # uploads on: their routes are tested
    settings = app.launch_settings(setup, explorer, serving)
    demo = app.queued(app.build_demo(explorer, serving))
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
