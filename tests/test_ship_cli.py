"""``python -m emcl ship``: a trained checkpoint stored as the app ships it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emcl.cli import ship as ship_cli
from emcl.model.checkpoint import load_checkpoint, save_checkpoint
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.model import EMCLRetrievalModel

TINY = ModelConfig(
    backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1, emcl=EMCLConfig(k=8)
)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[EMCLRetrievalModel, Path]:
    """A run's export folder: fp32 weights with the run's three records."""
    torch.manual_seed(0)
    model = EMCLRetrievalModel(TINY).eval()
    path = save_checkpoint(model, tmp_path_factory.mktemp("run") / "export", extra={"n": 1})
    (path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (path / "summary.json").write_text('{"steps": 1}')
    (path / "train_config.json").write_text('{"seed": 0}')
    return model, path


def test_ship_writes_fp16_weights_and_the_run_records(export, tmp_path, capsys):
    model, source = export
    target = tmp_path / "demo-emcl"
    assert ship_cli.main([str(source), str(target)]) == 0
    assert "float16" in capsys.readouterr().out
    for name in ship_cli.RUN_RECORDS:
        assert (target / name).read_bytes() == (source / name).read_bytes()
    assert json.loads((target / "config.json").read_text())["storage"] == "float16"
    size = (target / "model.safetensors").stat().st_size
    assert size < 0.51 * (source / "model.safetensors").stat().st_size
    loaded = load_checkpoint(target).state_dict()
    for key, value in model.state_dict().items():  # reference: fp32 -> fp16 -> fp32
        assert torch.equal(loaded[key], value.half().to(value.dtype)), key


def test_shipping_over_an_old_folder_drops_records_the_new_run_lacks(export, tmp_path):
    _, source = export
    bare = tmp_path / "bare"
    ship_cli.ship(source, bare)
    (bare / "log.jsonl").unlink()  # a checkpoint without a log
    target = tmp_path / "shipped"
    ship_cli.ship(source, target)
    assert ship_cli.ship(bare, target) == ["summary.json", "train_config.json"]
    assert not (target / "log.jsonl").exists()


def test_a_missing_or_same_folder_is_refused_with_a_message(export, tmp_path, capsys):
    _, source = export
    assert ship_cli.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert ship_cli.main([str(source), str(source)]) == 2
    assert "same folder" in capsys.readouterr().err
    assert (source / "model.safetensors").is_file()  # nothing lost
