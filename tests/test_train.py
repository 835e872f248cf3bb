"""Training: a short run on a tiny demo world, resume, the NaN guard, and DDP on CPU (gloo)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import emcl.train as train_module
from emcl.checkpoint import load_checkpoint
from emcl.encoder import Encoder
from emcl.model import DEMO_BACKBONE, EMCLConfig, EMCLRetrievalModel, ModelConfig
from emcl.train import PRESETS, epoch_plan, lr_multiplier, main, step_loss, train

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ModelConfig(
    backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1, emcl=EMCLConfig(k=8)
)


def tiny_config(world: Path, **changes) -> train_module.TrainConfig:
    base = dataclasses.replace(
        PRESETS["demo"],
        model=TINY_MODEL,
        data=str(world),
        batch_size=4,
        epochs=2,
        val_every=2,
        log_every=1,
    )
    return dataclasses.replace(base, **changes)


def test_schedule_and_epoch_plan(tiny_world):
    assert lr_multiplier(0, 100, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, 0.1) == pytest.approx(1.0)
    assert lr_multiplier(99, 100, 0.1) < 0.001
    model = EMCLRetrievalModel(TINY_MODEL)
    split = train_module.load_split(model, tiny_world, "train", None, progress=False)
    cfg = tiny_config(tiny_world)
    plan = epoch_plan(split, 0, cfg)
    videos = split.caption_owner[plan.ravel()]
    assert plan.shape == (len(split.video_ids) // 4, 4)
    assert len(set(videos.tolist())) == videos.size  # each video at most once per epoch
    assert np.array_equal(plan, epoch_plan(split, 0, cfg))  # same on every rank
    assert not np.array_equal(plan, epoch_plan(split, 1, cfg))


def test_two_step_run_writes_a_checkpoint_that_reloads_identically(tiny_world, tmp_path):
    cfg = tiny_config(tiny_world, max_steps=2)
    model, summary = train(cfg, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    assert summary["steps"] == 2 and summary["best_step"] == 2
    for name in ("best", "last"):
        files = set(os.listdir(tmp_path / "run" / name))
        assert {"config.json", "model.safetensors"} <= files
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert "R1" in log[-1]["val"]["t2v"]

    loaded = load_checkpoint(tmp_path / "run" / "last")
    initial = EMCLRetrievalModel(TINY_MODEL).emcl.prior
    assert torch.equal(loaded.emcl.prior, model.emcl.prior)
    assert not torch.equal(loaded.emcl.prior, initial)  # the prior was trained and saved
    model.eval()
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 64, 64, 3), dtype=np.uint8)
    a, b = Encoder(model, "cpu"), Encoder(loaded, "cpu")
    assert a.fingerprint == b.fingerprint
    assert torch.equal(a.encode_videos(clips)["frames"], b.encode_videos(clips)["frames"])
    text_a, text_b = a.encode_texts(["a red ball"]), b.encode_texts(["a red ball"])
    assert torch.equal(text_a["sentence"], text_b["sentence"])


def test_resume_continues_exactly(tiny_world, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_world, max_steps=4)
    straight, _ = train(cfg, tmp_path / "straight", cache_dir=tmp_path / "cache", progress=False)

    real = train_module.make_batch
    calls = {"n": 0}

    def interrupt_after_two_steps(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # 2 training batches, 1 validation batch, then the third step
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "make_batch", interrupt_after_two_steps)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.undo()
    resumed, summary = train(
        cfg, tmp_path / "resumed", resume=True, cache_dir=tmp_path / "cache", progress=False
    )
    assert summary["steps"] == 4
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_world, tmp_path, monkeypatch, capsys
):
    real = train_module.contrastive_loss
    calls = {"n": 0}

    def nan_on_third_step(logits, scale):
        calls["n"] += 1
        loss = real(logits, scale)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "contrastive_loss", nan_on_third_step)
    out = tmp_path / "run"
    args = ["--preset", "demo", "--data", str(tiny_world), "--out", str(out), "--max-steps", "4",
            "--batch-size", "4", "--val-every", "2", "--cache", str(tmp_path / "cache"),
            "--quiet"]  # fmt: skip
    monkeypatch.setitem(PRESETS, "demo", dataclasses.replace(PRESETS["demo"], model=TINY_MODEL))
    assert main(args) == 2
    message = capsys.readouterr().err
    assert "loss is nan at step 2" in message
    assert f"last good checkpoint is {out / 'last'}" in message
    state = json.loads((out / "last" / "config.json").read_text())["info"]["progress"]
    assert state["step"] == 2
    load_checkpoint(out / "last")  # intact and loadable


# ---- DDP on CPU ----------------------------------------------------------------------------
def _global_batch(model: EMCLRetrievalModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    clips = torch.randint(0, 256, (4, 4, 64, 64, 3), dtype=torch.uint8, generator=generator)
    captions = ["a red circle", "two blue squares", "a green star spins", "three tiny crosses"]
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[3, 3] = False  # one padded frame, gathered like the rest
    return model.tokenize(captions), model.frames_to_pixels(clips), mask


def _run_step(rank: int, world: int, port: int, out: str) -> None:
    if world > 1:
        dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EMCLRetrievalModel(TINY_MODEL).train()
    seen: dict[str, torch.Tensor] = {}
    model.emcl.register_forward_pre_hook(lambda _, args: seen.update(em_input=args[0].detach()))
    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    ids, pixels, mask = _global_batch(model)
    per = 4 // world
    rows = slice(rank * per, (rank + 1) * per)
    loss, logits = step_loss(wrapped, model, ids[rows], pixels[rows], mask[rows], world)
    loss.backward()
    result = {"loss": loss.detach()[None], "em_input": seen["em_input"], "logits": logits.detach(),
              "prior": model.emcl.prior.detach()}  # fmt: skip
    for name, parameter in model.named_parameters():
        result[f"grad.{name}"] = parameter.grad.detach()
    save_file({k: v.contiguous() for k, v in result.items()}, f"{out}/rank{rank}.safetensors")
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    threads = torch.get_num_threads()
    try:
        _run_step(0, 1, 0, str(tmp_path / "one"))
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_run_step, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    single = load_file(tmp_path / "one" / "rank0.safetensors")
    for rank in (0, 1):
        ranked = load_file(tmp_path / "two" / f"rank{rank}.safetensors")
        assert ranked["em_input"].shape == (4 * 4 + 4, 128)  # the global batch: 16 pairs + 4 texts
        torch.testing.assert_close(ranked["em_input"], single["em_input"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ranked["loss"], single["loss"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ranked["prior"], single["prior"])
        for key in single:
            if key.startswith("grad."):  # DDP's averaged gradient equals the global one
                torch.testing.assert_close(ranked[key], single[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train(tiny_world, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={_free_port()}", "-m", "emcl.train", "--preset", "demo",
               "--data", str(tiny_world), "--out", str(tmp_path / "run"), "--max-steps", "2",
               "--batch-size", "4", "--device", "cpu", "--cache", str(tmp_path / "cache"),
               "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["world_size"] == 2
    load_checkpoint(tmp_path / "run" / "best")


def test_gpu_check_smoke_runs_on_cpu():
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("device_name", "frame_embed", "train_step", "em_block_1k"):
        assert key in report
    assert (
        report["train_step"]["em_rows"]
        == report["train_step"]["batch"] ** 2 + report["train_step"]["batch"]
    )
