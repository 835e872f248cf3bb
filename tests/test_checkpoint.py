"""Checkpoints: safetensors + config.json round trip, clear refusals, atomic saves."""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import emcl
import emcl.model.checkpoint as checkpoint
from emcl.model.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.encoder import Encoder
from emcl.model.model import EMCLRetrievalModel

TINY = ModelConfig(
    backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1, emcl=EMCLConfig(k=8)
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[EMCLRetrievalModel, Path]:
    """A model whose prior moved away from its initial value, saved once."""
    torch.manual_seed(0)
    model = EMCLRetrievalModel(TINY).train()
    with torch.no_grad():
        for _ in range(3):
            model.emcl(torch.randn(40, 128))
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(model, path, extra={"note": "test"})
    return model, path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("model.safetensors", "config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def rehash(path: Path) -> None:
    """Make config.json agree with an edited model.safetensors (to test the next check)."""
    meta = json.loads((path / "config.json").read_text())
    meta.pop("weights_sha256")
    (path / "config.json").write_text(json.dumps(meta))


def test_round_trip_gives_identical_outputs_including_the_prior(trained):
    model, path = trained
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert torch.equal(loaded.emcl.prior, model.emcl.prior)
    assert not torch.equal(loaded.emcl.prior, EMCLRetrievalModel(TINY).emcl.prior)
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 64, 64, 3), dtype=np.uint8)
    a, b = Encoder(model, "cpu"), Encoder(loaded, "cpu")
    assert a.fingerprint == b.fingerprint
    va, vb = a.encode_videos(clips), b.encode_videos(clips)
    ta, tb = a.encode_texts(["a red circle"]), b.encode_texts(["a red circle"])
    assert torch.equal(va["frames"], vb["frames"]) and torch.equal(ta["sentence"], tb["sentence"])
    mask = torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        la = model.logits(ta["sentence"].expand(2, -1), va["frames"], mask)
        lb = loaded.logits(tb["sentence"].expand(2, -1), vb["frames"], mask)
    assert torch.equal(la, lb)
    config, info = read_config(path)
    assert config == model.config and info == {"note": "test"}


def test_wrong_shape_names_the_key_and_both_shapes(trained, tmp_path):
    _, src = trained
    path = copy_checkpoint(src, tmp_path / "bad")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["num_frames"] = 6  # frame_position_embeddings becomes [6, 128]
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "temporal.frame_position_embeddings.weight" in message
    assert "(4, 128)" in message and "(6, 128)" in message


def test_wrong_k_is_refused(trained, tmp_path):
    _, src = trained
    path = copy_checkpoint(src, tmp_path / "k")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["emcl"]["k"] = 16
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"'emcl.prior'.*\(1, 8\).*\(1, 16\)"):
        load_checkpoint(path)


def test_missing_key_is_named(trained, tmp_path):
    _, src = trained
    path = copy_checkpoint(src, tmp_path / "missing")
    tensors = load_file(path / "model.safetensors")
    del tensors["clip.ln_final.weight"]
    save_file(tensors, path / "model.safetensors")
    rehash(path)
    with pytest.raises(CheckpointError, match=r"missing key 'clip.ln_final.weight'.*\(128,\)"):
        load_checkpoint(path)


def test_truncated_file_is_refused_clearly(trained, tmp_path):
    _, src = trained
    path = copy_checkpoint(src, tmp_path / "truncated")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, modified"):
        load_checkpoint(path)
    rehash(path)  # without the recorded hash the safetensors reader catches it
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(path)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payloads_are_refused_without_running(trained, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="pickles, and unpickling can run arbitrary code"):
        load_checkpoint(evil)
    _, src = trained
    disguised = copy_checkpoint(src, tmp_path / "disguised")
    (disguised / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    rehash(disguised)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(disguised)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing-here")


def test_failed_save_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    model, src = trained
    path = copy_checkpoint(src, tmp_path / "keep")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "st_save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(EMCLRetrievalModel(TINY), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path).emcl.prior, model.emcl.prior)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]  # no temp files


def test_a_save_interrupted_between_the_two_files_is_detected(trained, tmp_path, monkeypatch):
    _, src = trained
    path = copy_checkpoint(src, tmp_path / "half")
    real = checkpoint.atomic_write  # emcl.fileio.atomic_write, as the checkpoint module names it
    calls = []

    def crash_on_config(target, data):
        calls.append(target)
        if Path(target).name == "config.json":
            raise KeyboardInterrupt
        real(target, data)

    monkeypatch.setattr(checkpoint, "atomic_write", crash_on_config)
    other = EMCLRetrievalModel(TINY)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(other, path)
    monkeypatch.undo()
    # The weights are replaced first, so the old config's hash now names the mismatch.
    assert [Path(target).name for target in calls] == ["model.safetensors", "config.json"]
    with pytest.raises(CheckpointError, match="interrupted save"):
        load_checkpoint(path)


def test_no_unsafe_torch_load_in_the_library():
    for source in Path(emcl.__file__).parent.rglob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", "")
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "load" and getattr(node.func.value, "id", "") == "torch":
                value = keywords.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, source
            if name == "load_state_dict" and "strict" in keywords:
                value = keywords["strict"]
                assert not (isinstance(value, ast.Constant) and value.value is False), source


# ---------------------------------------------------------------------------------------------
# fp16 storage (the shipped checkpoints)
# ---------------------------------------------------------------------------------------------
def test_fp16_storage_halves_the_file_and_loads_to_the_rounded_fp32_weights(trained, tmp_path):
    model, fp32 = trained
    fp16 = checkpoint.convert_checkpoint(fp32, tmp_path / "half")
    size32 = (fp32 / "model.safetensors").stat().st_size
    size16 = (fp16 / "model.safetensors").stat().st_size
    assert size16 < 0.51 * size32
    stored = load_file(str(fp16 / "model.safetensors"))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    meta = json.loads((fp16 / "config.json").read_text())
    assert meta["storage"] == "float16" and meta["info"] == {"note": "test"}
    loaded = load_checkpoint(fp16)
    expected = model.state_dict()
    for key, value in loaded.state_dict().items():  # reference: fp32 -> fp16 -> fp32 rounding
        assert value.dtype == expected[key].dtype
        assert torch.equal(value, expected[key].half().to(expected[key].dtype)), key
    assert read_config(fp16)[0] == model.config


def test_save_checkpoint_in_fp16_equals_converting_an_fp32_save(trained, tmp_path):
    model, fp32 = trained
    direct = save_checkpoint(model, tmp_path / "direct", extra={"note": "test"}, storage="float16")
    converted = checkpoint.convert_checkpoint(fp32, tmp_path / "converted")
    a = (direct / "model.safetensors").read_bytes()
    assert a == (converted / "model.safetensors").read_bytes()


def test_fp16_checkpoint_detects_a_swapped_weights_file(trained, tmp_path):
    _, fp32 = trained
    fp16 = checkpoint.convert_checkpoint(fp32, tmp_path / "half")
    (fp16 / "model.safetensors").write_bytes((fp32 / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(fp16)


def test_unknown_storage_is_refused(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ValueError, match="storage must be one of"):
        save_checkpoint(model, tmp_path / "x", storage="int8")
