"""The checkpoint catalog: shipped, run and folder checkpoints found with their kind, EM
settings, seed, summary and recipe; foreign and corrupt folders refused with their reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from emcl.explorer.cache import LRU
from emcl.explorer.checkpoints import BASE, FOLDER, JOINT, RUN, SHIPPED, ModelSources, scan
from emcl.model.checkpoint import CheckpointError, check_checkpoint, save_checkpoint
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.model import EMCLRetrievalModel

TRAIN = {"preset": "demo-v2", "data": "/elsewhere/demo_world_v2", "seed": 0,
         "init_from": "/elsewhere/runs/demo-pretrain/best"}  # fmt: skip


def tiny_checkpoint(
    path: Path, seed: int, emcl: EMCLConfig | None = None, train: dict | None = None
) -> Path:
    """A random-weight tiny checkpoint (the same ``seed`` gives the same weights, so the
    gallery features it indexes are cached across tests) with a training record."""
    torch.manual_seed(seed)
    config = ModelConfig(backbone=DEMO_BACKBONE, temporal_layers=2, emcl=emcl)
    record = {**TRAIN, "seed": seed, **(train or {}), "model": config.to_dict()}
    return save_checkpoint(EMCLRetrievalModel(config), path, extra={"train": record})


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    return {
        "base": tiny_checkpoint(root / "base", 11),
        "joint": tiny_checkpoint(root / "joint", 12, EMCLConfig(k=16, beta=2.0)),
    }


def _copy(source: Path, target: Path, summary: bool = True) -> Path:
    shutil.copytree(source, target)
    if summary:
        (target / "summary.json").write_text(json.dumps({"steps": 42, "wall_seconds": 3.5}))
    return target


def test_sources_and_reasons(tmp_path, good):
    shipped = tmp_path / "checkpoints"
    _copy(good["base"], shipped / "demo-base")
    _copy(good["joint"], shipped / "demo-emcl")
    runs = tmp_path / "cache" / "runs"
    _copy(good["joint"], runs / "page-run" / "export")
    _copy(good["joint"], runs / "unfinished" / "export", summary=False)  # still training
    (runs / "no-export").mkdir(parents=True)
    repo = tmp_path / "repo-runs"
    _copy(good["base"], repo / "study" / "s0-base" / "export")
    _copy(good["joint"], repo / "cli" / "best", summary=False)
    mine = tmp_path / "mine"
    _copy(good["base"], mine / "fine")
    (mine / "foreign").mkdir()
    (mine / "foreign" / "notes.txt").write_text("not a checkpoint")
    _copy(good["base"], mine / "bad-json")
    (mine / "bad-json" / "config.json").write_text("{not json")
    _copy(good["base"], mine / "wrong-format")
    meta = json.loads((mine / "wrong-format" / "config.json").read_text())
    (mine / "wrong-format" / "config.json").write_text(json.dumps({**meta, "format": "other/9"}))
    _copy(good["base"], mine / "missing-weights")
    (mine / "missing-weights" / "model.safetensors").unlink()
    _copy(good["base"], mine / "truncated")
    weights = mine / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _copy(good["base"], mine / "swapped")  # another model's weights: the recorded hash differs
    shutil.copyfile(good["joint"] / "model.safetensors", mine / "swapped" / "model.safetensors")
    (mine / "pickled").mkdir()
    torch.save({"w": torch.zeros(2)}, mine / "pickled" / "model.pt")
    shutil.copyfile(good["base"] / "config.json", mine / "pickled" / "config.json")
    single = _copy(good["joint"], tmp_path / "single")  # a --checkpoint-dir that is one

    sources = ModelSources(shipped=shipped, runs_dir=runs, repo_runs=repo,
                           folders=(mine, single, tmp_path / "absent"))  # fmt: skip
    entries = {e.name: e for e in scan(sources)}
    assert list(entries)[:5] == [
        "demo-base", "demo-emcl", "run page-run", "runs/study/s0-base/export", "runs/cli/best",
    ]  # fmt: skip
    assert "run unfinished" not in entries and "run no-export" not in entries
    sources_of = {n: e.source for n, e in entries.items()}
    assert sources_of["demo-base"] == SHIPPED and sources_of["run page-run"] == RUN
    assert sources_of["mine/fine"] == FOLDER and sources_of["single"] == FOLDER

    base, joint = entries["demo-base"], entries["demo-emcl"]
    assert base.ok and base.kind == BASE and base.em is None and base.seed == 11
    assert joint.ok and joint.kind == JOINT and joint.em["k"] == 16 and joint.em["beta"] == 2.0
    assert joint.summary == {"steps": 42, "wall_seconds": 3.5}
    assert "K 16" in joint.label and "seed 12" in joint.label
    assert joint.recipe.preset == "demo-v2"
    assert joint.recipe.world == "world v2 (3000 + 1000 clips, seed 0)"  # by its folder name
    assert joint.recipe.backbone.endswith("from demo-pretrain")
    assert entries["runs/cli/best"].ok and entries["mine/fine"].ok

    reasons = {n: e.reason for n, e in entries.items() if not e.ok}
    assert "model.safetensors" in reasons["mine/foreign"] and "missing" in reasons["mine/foreign"]
    assert "not valid JSON" in reasons["mine/bad-json"]
    assert "unknown format 'other/9'" in reasons["mine/wrong-format"]
    assert "missing" in reasons["mine/missing-weights"]
    assert "SHA-256" in reasons["mine/truncated"]
    assert "SHA-256" in reasons["mine/swapped"]
    assert "pickle" in reasons["mine/pickled"] and "model.pt" in reasons["mine/pickled"]
    assert "no folder" in reasons["absent"]
    assert set(reasons) == {"mine/foreign", "mine/bad-json", "mine/wrong-format", "absent",
                            "mine/missing-weights", "mine/truncated", "mine/swapped",
                            "mine/pickled"}  # fmt: skip
    assert all(not e.ok and "refused" in e.label for e in entries.values() if e.reason)


def test_truncated_weights_without_a_hash_and_wrong_architecture(tmp_path, good):
    folder = _copy(good["base"], tmp_path / "nohash")
    meta = json.loads((folder / "config.json").read_text())
    meta.pop("weights_sha256")
    (folder / "config.json").write_text(json.dumps(meta))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        check_checkpoint(folder)
    other = _copy(good["joint"], tmp_path / "arch")  # a joint config over base weights
    meta = json.loads((other / "config.json").read_text())
    meta.pop("weights_sha256")
    meta["model"]["temporal_layers"] = 1
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unexpected key"):
        check_checkpoint(other)
    config, info = check_checkpoint(good["joint"])
    assert config.emcl.k == 16 and info["train"]["seed"] == 12


def test_checks_are_cached_until_the_files_change(tmp_path, good, monkeypatch):
    import emcl.explorer.checkpoints as catalog

    shipped = tmp_path / "shipped"
    folder = _copy(good["base"], shipped / "a")
    calls = []
    real = catalog.check_checkpoint
    monkeypatch.setattr(catalog, "check_checkpoint", lambda p: calls.append(p) or real(p))
    cache = LRU(16)
    sources = ModelSources(shipped=shipped)
    assert scan(sources, cache)[0].ok and scan(sources, cache)[0].ok
    assert len(calls) == 1  # the second scan hashed nothing
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    entry = scan(sources, cache)[0]
    assert len(calls) == 2 and not entry.ok and "SHA-256" in entry.reason
