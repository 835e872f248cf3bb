"""``python -m emcl train``'s EMCL knob flags (--emcl-k, --emcl-iters, --emcl-lam, --emcl-beta,
--emcl-momentum, --emcl-init): applied to the preset's EMCL layer, validated, refused where the
model has no EMCL layer; and the Train tab's requests (emcl/training/jobs.py) parse back."""

from __future__ import annotations

import dataclasses

import pytest

from emcl.cli.train import config_from_args, main, parser
from emcl.model.config import EMCLConfig
from emcl.training.jobs import TrainRequest
from emcl.training.presets import PRESETS


def config(*flags: str, preset: str = "demo-v2"):
    return config_from_args(parser().parse_args(["--preset", preset, *flags]))


def test_without_the_flags_the_preset_layer_is_unchanged():
    assert config().model.emcl == PRESETS["demo-v2"].model.emcl
    assert config("--no-emcl").model.emcl is None


def test_each_flag_sets_its_field_of_the_layer():
    cfg = config("--emcl-k", "8", "--emcl-iters", "4", "--emcl-lam", "0.05", "--emcl-beta",
                 "1.5", "--emcl-momentum", "0.5", "--emcl-init", "data")  # fmt: skip
    preset = PRESETS["demo-v2"].model.emcl
    assert cfg.model.emcl == dataclasses.replace(
        preset, k=8, iters=4, lam=0.05, beta=1.5, momentum=0.5, init="data"
    )
    assert config("--emcl-beta", "0").model.emcl == dataclasses.replace(preset, beta=0.0)
    assert cfg.model.backbone == PRESETS["demo-v2"].model.backbone  # nothing else moved


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--emcl-k", "0"], "k must be an integer in [1, "),
        (["--emcl-iters", "-1"], "iters must be an integer in [0, "),
        (["--emcl-lam", "0"], "lam must be a finite number"),
        (["--emcl-beta", "nan"], "beta must be a finite number"),
        (["--emcl-momentum", "1.5"], "momentum must be a finite number in [0, 1]"),
        (["--no-emcl", "--emcl-k", "8", "--emcl-beta", "2"],
         "--emcl-k, --emcl-beta: knobs of the EMCL layer, but --no-emcl trains the base model"),
    ],
)  # fmt: skip
def test_bad_values_exit_2_naming_the_field(flags, message, capsys):
    assert main(["--preset", "demo-v2", "--max-steps", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_preset_without_a_layer_refuses_the_flags(capsys):
    assert main(["--preset", "demo-pretrain", "--emcl-k", "4"]) == 2
    assert "but preset demo-pretrain has none" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--emcl-init", "reference"), ("--emcl-k", "two")])
def test_argparse_refuses_what_is_not_a_value_of_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["--preset", "demo-v2", flag, value])
    assert stop.value.code == 2 and flag in capsys.readouterr().err


def test_a_train_tab_request_becomes_the_same_layer_on_the_command_line():
    request = TrainRequest(init_from="/ckpt", k=16, iters=5, lam=0.03, beta=2.5, momentum=0.8,
                           init="data", seed=3, epochs=2, max_steps=7)  # fmt: skip
    cfg = config(*request.train_flags())
    assert cfg.model.emcl == EMCLConfig(k=16, iters=5, lam=0.03, beta=2.5, momentum=0.8,
                                        init="data")  # fmt: skip
    assert (cfg.seed, cfg.epochs, cfg.max_steps, cfg.init_from) == (3, 2, 7, "/ckpt")
    base = config(*TrainRequest(init_from="/ckpt", emcl=False).train_flags())
    assert base.model.emcl is None and base.max_steps is None


def test_a_corrupt_or_foreign_init_from_is_refused_with_its_reason(tmp_path, capsys):
    from emcl.model.checkpoint import save_checkpoint
    from emcl.model.config import DEMO_BACKBONE, ModelConfig
    from emcl.model.model import EMCLRetrievalModel

    frame_model = ModelConfig(backbone=DEMO_BACKBONE, num_frames=1, temporal="meanP", emcl=None)
    good = save_checkpoint(EMCLRetrievalModel(frame_model), tmp_path / "good", storage="float16")
    weights = good / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8  # a flipped tail: the recorded hash no longer matches
    weights.write_bytes(bytes(data))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.pt").write_bytes(b"\x80\x04not a checkpoint")
    for folder, reason in ((good, "sha-256"), (foreign, "config.json|pickle")):
        out = tmp_path / f"run-{folder.name}"
        code = main(["--preset", "demo-v2", "--init-from", str(folder), "--out", str(out),
                     "--device", "cpu", "--quiet"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and str(folder) in err, err
        assert any(word in err.lower() for word in reason.split("|")), err
        assert not (out / "best").exists()


def test_pairs_flag_overrides_the_presets_epoch_plan():
    assert config(preset="demo-pretrain-video").pairs == "video"
    assert config("--pairs", "twins", preset="demo-pretrain-video").pairs == "twins"
    with pytest.raises(SystemExit):
        parser().parse_args(["--preset", "demo-v2", "--pairs", "twin"])
    with pytest.raises(ValueError, match="pairs must be one of"):
        dataclasses.replace(PRESETS["demo-v2"], pairs="twin")
