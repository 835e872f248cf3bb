"""The build pipeline shared by both world versions: building only when needed, the demo
folders the commands read, refused versions, and the package's import structure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import emcl.data.world.build as build_mod
from emcl import paths
from emcl.data.datasets import read_msrvtt
from emcl.data.world import (
    build_world,
    ensure_demo_world,
    ensure_world,
    video_splits,
    world_is_complete,
)

PACKAGE = Path(build_mod.__file__).parent


def test_ensure_world_builds_only_when_needed(tmp_path, monkeypatch):
    world = tmp_path / "w"
    ensure_world(world, 2, 1, 0)
    assert world_is_complete(world, 2, 1, 0)
    assert len(read_msrvtt(world, "test")) == 1

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a complete world was rebuilt")

    monkeypatch.setattr(build_mod, "build_world", no_rebuild)
    ensure_world(world, 2, 1, 0)
    with pytest.raises(AssertionError, match="rebuilt"):  # other parameters: built again
        ensure_world(world, 2, 1, 1)


def test_unknown_world_version_is_refused(tmp_path):
    with pytest.raises(ValueError, match="world version must be one of"):
        build_world(tmp_path, 2, 2, version=3)


def test_commands_build_only_the_demo_videos_they_read(tmp_path, monkeypatch):
    assert video_splits("test") == ("test",) and video_splits("val") == ("train",)
    assert video_splits("trainval") == ("train",) and video_splits("all") == ("test", "train")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(paths.DEMO_WORLDS, 2, paths.DemoWorld(12, 8, 3, version=2))
    folder = paths.demo_world_dir(version=2)
    ensure_demo_world(folder, progress=False, split="test")  # evaluation, the app
    assert len(list((folder / "videos").iterdir())) == 8
    ensure_demo_world(folder, progress=False, split="trainval")  # training
    assert len(list((folder / "videos").iterdir())) == 20
    assert world_is_complete(folder, 12, 8, 3, version=2)
    ensure_demo_world(tmp_path / "mine", progress=False)  # a user's folder is only read
    assert not (tmp_path / "mine").exists()


def _world_imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from emcl.data.world[.m] import ...``)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        edges = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "emcl.data.world":
                edges |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file()}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "emcl.data.world."
            ):
                edges.add(node.module.rsplit(".", 1)[1])
    return graph


def test_the_world_modules_import_no_private_names_and_form_no_cycle():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emcl"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (path.name, node.module, private)
    graph = _world_imports()
    graph.pop("__init__")  # the package re-exports; its modules never import the package's names
    assert {"common", "v1", "v2", "build", "pretrain"} <= set(graph)

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(
            n == target or (n not in seen and reaches(n, target, seen | {n}))
            for n in graph.get(start, ())
        )

    assert not any(reaches(m, m, set()) for m in graph), graph
    assert graph["common"] == set()  # the shared module depends on no version
