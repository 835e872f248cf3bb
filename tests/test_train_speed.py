"""The training step's device settings: what each device turns on, the same loss curve with and
without the optimisations, the fused AdamW update, the deferred non-finite check, the bench."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import emcl.training.step as step_module
from bench.train_bench import SMOKE_MODEL
from bench.train_bench import main as bench_main
from emcl.model.model import EMCLRetrievalModel
from emcl.training.optim import build_optimizer
from emcl.training.presets import PRESETS
from emcl.training.step import PLAIN_SETTINGS, NonFiniteLoss, StepSettings, TrainStep
from emcl.training.step_bench import compare_train_step, fixed_batch

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_cpu_keeps_the_plain_settings_whatever_is_asked():
    resolved = StepSettings(fused_optimizer=True, tf32=True).resolve(CPU)
    assert (resolved.precision, resolved.fused_optimizer, resolved.tf32) == ("fp32", False, False)
    assert StepSettings(precision="bf16").resolve(CPU).amp_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        StepSettings(precision="fp16").resolve(CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        StepSettings(precision="fp8")
    with pytest.raises(ValueError, match="resolve"):
        StepSettings().amp_dtype  # noqa: B018 - the property raises


def test_a_gpu_gets_bf16_where_it_has_it_fused_adamw_and_tf32(monkeypatch):
    monkeypatch.setattr(step_module, "_bf16_ok", lambda device: True)
    monkeypatch.setattr(step_module, "compile_supported", lambda device, backend: False)
    resolved = StepSettings(compile=True).resolve(CUDA)
    assert (resolved.precision, resolved.fused_optimizer, resolved.tf32) == ("bf16", True, True)
    assert resolved.compile is False  # asked for, but not supported here
    plain = PLAIN_SETTINGS.resolve(CUDA)
    assert (plain.precision, plain.fused_optimizer, plain.tf32) == ("bf16", False, False)
    monkeypatch.setattr(step_module, "_bf16_ok", lambda device: False)
    assert StepSettings().resolve(CUDA).precision == "fp16"
    with pytest.raises(ValueError, match="no bf16"):
        StepSettings(precision="bf16").resolve(CUDA)
    monkeypatch.setattr(step_module, "compile_supported", lambda device, backend: True)
    assert StepSettings(compile=True).resolve(CUDA).compile is True


def test_optimised_compiled_and_bf16_steps_follow_the_plain_loss_curve():
    settings = {
        "plain": (PLAIN_SETTINGS, True),
        "compiled": (StepSettings(compile=True, compile_backend="eager"), False),
        "bf16": (StepSettings(precision="bf16"), False),
    }
    report = compare_train_step(
        SMOKE_MODEL, batch=4, device="cpu", steps=1, warmup=1, lr=1e-3, variants=settings
    )
    runs = report["runs"]
    plain = runs["plain"]["losses"]
    assert len(plain) == 2 and plain[1] != plain[0]  # the weights moved between the steps
    assert runs["compiled"]["settings"]["compile"] is True
    assert runs["compiled"]["compile_error"] is None
    diffs = report["loss_max_abs_diff"]
    assert diffs["compiled"] < 1e-4  # fp32 either way
    assert 0 < diffs["bf16"] < 0.05 * max(plain)  # bf16 noise: different, but close
    for run in runs.values():
        assert run["flop_per_step"] > 1e6 and run["step_seconds"] > 0 and run["tflops"] > 0


def test_fused_adamw_makes_the_same_update_as_the_for_each_one():
    cfg = dataclasses.replace(PRESETS["demo"], model=SMOKE_MODEL)
    torch.manual_seed(0)
    model = EMCLRetrievalModel(SMOKE_MODEL)
    twin = EMCLRetrievalModel(SMOKE_MODEL)
    twin.load_state_dict(model.state_dict())
    plain, fused = build_optimizer(model, cfg), build_optimizer(twin, cfg, fused=True)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    plain.step()
    fused.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_a_gpu_style_step_defers_the_non_finite_check_and_names_the_first_bad_step(
    monkeypatch,
):
    real = step_module.contrastive_loss
    calls = {"n": 0}

    def nan_on_second_step(logits, scale):
        calls["n"] += 1
        loss = real(logits, scale)
        return loss * float("nan") if calls["n"] in (2, 3) else loss

    monkeypatch.setattr(step_module, "contrastive_loss", nan_on_second_step)
    torch.manual_seed(0)
    model = EMCLRetrievalModel(SMOKE_MODEL).train()
    cfg = dataclasses.replace(PRESETS["demo"], model=SMOKE_MODEL)
    stepper = TrainStep(model, cfg, StepSettings(), device=CPU)
    stepper.check_each_step = False  # as on a GPU: no read-back per step
    ids, pixels, mask = fixed_batch(model, 4, CPU, seed=0)
    stepper(ids, pixels, mask, step=0)
    stepper.check()  # a finite step passes
    for step in (1, 2):
        stepper(ids, pixels, mask, step=step)  # no exception yet
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 1") as caught:
        stepper.check()
    assert caught.value.step == 1


def test_train_bench_smoke_writes_the_side_by_side_report(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert bench_main(["--smoke", "--device", "cpu", "--no-compile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"plain", "optimised"} and report["baseline"] == "plain"
    assert report["runs"]["plain"]["settings"]["precision"] == "fp32"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
