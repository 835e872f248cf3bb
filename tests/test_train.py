"""Training: the loss, the optimiser groups, a short run on a tiny demo world, best-checkpoint
selection and export, resume, the NaN guard, DDP on CPU (gloo), the ``python -m emcl`` commands."""

from __future__ import annotations

import dataclasses
import json
import math
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

import emcl.__main__ as dispatcher
import emcl.cli.train as train_cli
import emcl.training.loop as loop
import emcl.training.step as step_module
from emcl.cli.train import main
from emcl.model.checkpoint import load_checkpoint
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.encoder import Encoder
from emcl.model.model import EMCLRetrievalModel
from emcl.training.data import epoch_plan, load_split
from emcl.training.loop import step_loss, train
from emcl.training.optim import build_optimizer, lr_multiplier
from emcl.training.presets import PRESETS, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ModelConfig(
    backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1, emcl=EMCLConfig(k=8)
)


def tiny_config(world: Path, **changes) -> TrainConfig:
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


def symmetric_infonce(logits: torch.Tensor, scale: float) -> tuple[float, float, float]:
    """The symmetric InfoNCE written out: (mean of both directions, text->video, video->text).

    Row i is text i; its positive is video i. text->video normalises each row over the videos,
    video->text each column over the texts."""
    s = scale * logits.detach().double()
    n = s.shape[0]
    t2v = sum(math.log(sum(math.exp(s[i, j]) for j in range(n))) - s[i, i] for i in range(n)) / n
    v2t = sum(math.log(sum(math.exp(s[i, j]) for i in range(n))) - s[j, j] for j in range(n)) / n
    return float((t2v + v2t) / 2), float(t2v), float(v2t)


def test_schedule_and_epoch_plan(tiny_world):
    assert lr_multiplier(0, 100, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, 0.1) == pytest.approx(1.0)
    assert lr_multiplier(99, 100, 0.1) < 0.001
    model = EMCLRetrievalModel(TINY_MODEL)
    split = load_split(model, tiny_world, "train", None, progress=False)
    cfg = tiny_config(tiny_world)
    plan = epoch_plan(split, 0, cfg)
    videos = split.caption_owner[plan.ravel()]
    assert plan.shape == (len(split.video_ids) // 4, 4)
    assert len(set(videos.tolist())) == videos.size  # each video at most once per epoch
    assert np.array_equal(plan, epoch_plan(split, 0, cfg))  # same on every rank
    assert not np.array_equal(plan, epoch_plan(split, 1, cfg))


def test_twins_plan_keeps_each_pair_side_by_side_and_every_video_once(tiny_world):
    model = EMCLRetrievalModel(TINY_MODEL)
    split = load_split(model, tiny_world, "train", None, progress=False)
    n = len(split.video_ids) // 2 * 2
    split = dataclasses.replace(
        split, video_ids=split.video_ids[:n], frames=split.frames[:n],
        caption_owner=split.caption_owner[split.caption_owner < n],
    )  # fmt: skip
    cfg = dataclasses.replace(tiny_config(tiny_world), pairs="twins")
    plan = epoch_plan(split, 0, cfg)
    videos = split.caption_owner[plan]  # [steps, batch]
    assert plan.shape == (n // 4, 4)
    assert len(set(videos.ravel().tolist())) == videos.size
    pairs = videos.reshape(-1, 2)
    assert np.all(pairs[:, 0] % 2 == 0) and np.array_equal(pairs[:, 1], pairs[:, 0] + 1)
    assert np.array_equal(plan, epoch_plan(split, 0, cfg))
    with pytest.raises(ValueError, match="even"):
        epoch_plan(split, 0, dataclasses.replace(cfg, batch_size=3))


def test_clip_corpus_needs_even_twins():
    from emcl.training.presets import PRESETS
    from emcl.training.pretrain import corpus_splits

    model = EMCLRetrievalModel(TINY_MODEL)
    with pytest.raises(ValueError, match="twins"):
        corpus_splits(model, dataclasses.replace(PRESETS["demo-pretrain-video"], corpus=5))


def test_step_loss_is_the_symmetric_infonce_of_the_logits_it_returns():
    torch.manual_seed(0)
    model = EMCLRetrievalModel(TINY_MODEL).train()
    ids, pixels, mask = _global_batch(model)
    loss, logits = step_loss(model, model, ids, pixels, mask)
    both, t2v, v2t = symmetric_infonce(logits, model.logit_scale().item())
    assert abs(t2v - v2t) > 1e-3  # the logits are not symmetric: a one-sided loss differs
    assert loss.item() == pytest.approx(both, rel=1e-5)


def test_optimizer_gives_clip_the_backbone_lr_and_the_temporal_module_the_new_lr():
    model = EMCLRetrievalModel(TINY_MODEL)
    cfg = TrainConfig(model=TINY_MODEL, data="unused", batch_size=4, epochs=1,
                      lr_backbone=2e-5, lr_new=3e-3, weight_decay=0.05)  # fmt: skip
    optimizer = build_optimizer(model, cfg)
    group_of: dict[int, dict] = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            assert id(parameter) not in group_of  # every parameter is in exactly one group
            group_of[id(parameter)] = group
    named = dict(model.named_parameters())
    assert len(group_of) == len(named)
    backbone = {n for n in named if n.startswith("clip.")}
    temporal = {n for n in named if n.startswith("temporal.")}
    assert backbone | temporal == set(named) and temporal and "clip.logit_scale" in backbone
    for name, parameter in named.items():
        group = group_of[id(parameter)]
        lr = 2e-5 if name in backbone else 3e-3
        assert (group["lr"], group["base_lr"]) == (lr, lr), name
        assert group["weight_decay"] == (0.05 if parameter.ndim >= 2 else 0.0), name


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


def test_best_checkpoint_is_the_step_with_the_best_val_r1_in_the_log_and_is_exported(
    tiny_world, tmp_path, monkeypatch
):
    # Validation as usual, but its t2v R@1 scripted so that the best is neither the first nor
    # the last validation; the weights seen at each validation are kept for the comparison.
    real = loop.validate
    script = iter([10.0, 40.0, 20.0])
    weights_seen: list[dict[str, torch.Tensor]] = []

    def scripted(model, split, device):
        metrics = real(model, split, device)
        metrics["t2v"]["R1"] = next(script)
        weights_seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return metrics

    monkeypatch.setattr(loop, "validate", scripted)
    run, export = tmp_path / "run", tmp_path / "export"
    cfg = tiny_config(tiny_world, max_steps=6)  # validations after steps 2, 4 and 6
    _, summary = train(cfg, run, cache_dir=tmp_path / "cache", export=export, progress=False)

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    validations = [(r["step"], r["val"]["t2v"]["R1"]) for r in log if "val" in r]
    assert validations == [(2, 10.0), (4, 40.0), (6, 20.0)]
    best_index = max(range(len(validations)), key=lambda i: validations[i][1])
    best_step = validations[best_index][0]
    assert (summary["best_step"], summary["best_val_t2v_R1"]) == (best_step, 40.0)
    last = load_file(run / "last" / "model.safetensors")
    for folder, dtype in ((run / "best", torch.float32), (export, torch.float16)):
        info = json.loads((folder / "config.json").read_text())["info"]
        assert info["step"] == best_step and info["val"]["t2v"]["R1"] == 40.0
        saved = load_file(folder / "model.safetensors")  # the export is stored in fp16
        assert saved.keys() == weights_seen[best_index].keys()
        for key, value in weights_seen[best_index].items():
            assert torch.equal(saved[key], value.to(dtype) if value.is_floating_point() else value)
        assert any(not torch.equal(saved[k], last[k]) for k in saved)  # not the last weights
    for name in ("log.jsonl", "summary.json", "train_config.json"):
        assert (export / name).read_bytes() == (run / name).read_bytes()
    assert sorted(os.listdir(export)) == sorted(  # no temp files left behind
        ["config.json", "model.safetensors", "log.jsonl", "summary.json", "train_config.json"]
    )


def test_resume_continues_exactly(tiny_world, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_world, max_steps=4)
    straight, _ = train(cfg, tmp_path / "straight", cache_dir=tmp_path / "cache", progress=False)

    real = loop.make_batch
    calls = {"n": 0}

    def interrupt_after_two_steps(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # 2 training batches, 1 validation batch, then the third step
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_batch", interrupt_after_two_steps)
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
    real = step_module.contrastive_loss
    calls = {"n": 0}

    def nan_on_third_step(logits, scale):
        calls["n"] += 1
        loss = real(logits, scale)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(step_module, "contrastive_loss", nan_on_third_step)
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
               f"--master_port={_free_port()}", "-m", "emcl", "train", "--preset", "demo",
               "--data", str(tiny_world), "--out", str(tmp_path / "run"), "--max-steps", "2",
               "--batch-size", "4", "--device", "cpu", "--cache", str(tmp_path / "cache"),
               "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["world_size"] == 2
    load_checkpoint(tmp_path / "run" / "best")


# ---- the command line ----------------------------------------------------------------------
def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_python_m_emcl_without_or_with_an_unknown_command_lists_the_commands_and_exits_2():
    for args in ((), ("fly",)):
        done = run_module("emcl", *args)
        assert done.returncode == 2, args
        listed = [line.split()[0] for line in done.stderr.splitlines() if line.startswith("  ")]
        assert listed == list(dispatcher.COMMANDS), done.stderr
        assert {"train", "study", "index", "auth"} <= set(listed), done.stderr
    assert "unknown command 'fly'" in done.stderr


def test_python_m_emcl_train_help_exits_0_with_the_train_options():
    done = run_module("emcl", "train", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m emcl train")
    assert "--preset {demo,demo-pretrain,demo-pretrain-video,demo-v2,msrvtt}" in done.stdout
    assert "--resume" in done.stdout and "--init-from" in done.stdout


def test_dispatcher_hands_the_rest_of_the_arguments_to_the_command(monkeypatch):
    received = []
    monkeypatch.setattr(train_cli, "main", lambda argv: received.append(argv) or 7)
    assert dispatcher.main(["train", "--preset", "demo", "--quiet"]) == 7
    assert received == [["--preset", "demo", "--quiet"]]
