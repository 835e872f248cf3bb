"""The paper's own preset (``--preset msrvtt``) end to end on CPU: a ViT-B-32 with random weights
saved as a local ``.safetensors`` file and passed as ``--pretrained PATH`` (the same loading code
as the OpenAI weights), one training step per model on a tiny MSR-VTT-layout folder, the
evaluation, and the explorer service on the result."""

from __future__ import annotations

import dataclasses
import json

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from emcl.cli.train import main as train_main
from emcl.data.world import build_world
from emcl.evaluation.protocol import PRESETS as EVAL_PRESETS
from emcl.evaluation.protocol import evaluate
from emcl.explorer.knobs import Knobs
from emcl.explorer.setup import Setup, load_explorer
from emcl.model.checkpoint import load_checkpoint
from emcl.model.model import EMCLRetrievalModel
from emcl.training.optim import build_optimizer
from emcl.training.presets import PRESETS

pytestmark = pytest.mark.slow  # ViT-B-32 at 224 px: ~1-2 min on 2 CPU cores


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("msrvtt")
    world = root / "msrvtt"
    build_world(world, n_train=10, n_test=3, seed=0, workers=1)  # val: 1 clip, test: 3
    torch.manual_seed(0)
    random_clip = open_clip.create_model("ViT-B-32", pretrained=None)
    weights = root / "vit-b-32-random.safetensors"
    save_file({k: v.contiguous() for k, v in random_clip.state_dict().items()}, str(weights))
    out = {"root": root, "world": world, "weights": weights}
    for name, extra in (("emcl", []), ("base", ["--no-emcl"])):
        argv = ["--preset", "msrvtt", "--data", str(world), "--pretrained", str(weights),
                "--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--quiet",
                "--cache", str(root / "frames"), "--out", str(root / f"run-{name}"),
                "--export", str(root / f"ckpt-{name}"), *extra]  # fmt: skip
        assert train_main(argv) == 0
        out[name] = root / f"ckpt-{name}"
    return out


def test_pretrained_file_is_loaded_and_seqtransf_starts_from_the_text_encoder(runs):
    cfg = PRESETS["msrvtt"]
    config = dataclasses.replace(cfg.model, pretrained=str(runs["weights"]))
    model = EMCLRetrievalModel(config)
    saved = load_file(str(runs["weights"]))
    for key, value in model.clip.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert model.config.quick_gelu is False  # the file carries no tag: the config's setting
    for mine, theirs in zip(model.temporal.transformer.resblocks, model.clip.transformer.resblocks,
                            strict=False):  # fmt: skip
        for (k, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items(),
                                  strict=True):  # fmt: skip
            assert torch.equal(a, b), k
    table = model.temporal.frame_position_embeddings.weight
    assert torch.equal(table, model.clip.positional_embedding[: table.shape[0]])


def test_one_step_moves_clip_by_the_backbone_lr_and_the_new_modules_by_theirs(runs):
    cfg = PRESETS["msrvtt"]
    model = EMCLRetrievalModel(dataclasses.replace(cfg.model, emcl=None), load_pretrained=False)
    groups = build_optimizer(model, cfg)
    assert sorted({g["lr"] for g in groups.param_groups}) == [cfg.lr_backbone, cfg.lr_new]
    start = load_file(str(runs["weights"]))
    after = load_file(str(runs["root"] / "run-emcl" / "last" / "model.safetensors"))  # fp32
    clip_step = max((after[f"clip.{k}"] - v).abs().max().item() for k, v in start.items())
    # AdamW's first step moves each weight by about lr (plus lr * weight decay * |w|)
    assert 0 < clip_step <= 2 * cfg.lr_backbone
    initial = EMCLRetrievalModel(dataclasses.replace(cfg.model, pretrained=str(runs["weights"])))
    new_step = max((after[k] - v).abs().max().item() for k, v in initial.state_dict().items()
                   if k.startswith("temporal."))  # fmt: skip
    assert 0.5 * cfg.lr_new <= new_step <= 2 * cfg.lr_new
    summary = json.loads((runs["root"] / "run-emcl" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["device"] == "cpu"


def test_the_result_evaluates_and_loads_in_the_explorer(runs):
    joint = load_checkpoint(runs["emcl"])
    assert joint.config.backbone == "ViT-B-32" and joint.emcl is not None
    cfg = dataclasses.replace(EVAL_PRESETS["msrvtt"], data=str(runs["world"]),
                              checkpoint=str(runs["emcl"]),
                              base_checkpoint=str(runs["base"]))  # fmt: skip
    result = evaluate(cfg, cache_dir=runs["root"] / "features", sweeps=False, device="cpu",
                      progress=False)  # fmt: skip
    assert result["meta"]["videos"] == 3
    for row in ("base", "base+emcl", "emcl"):
        assert 0 <= result[row]["t2v"]["R1"] <= 100 and 1 <= result[row]["t2v"]["MnR"] <= 3
    explorer = load_explorer(Setup(data=runs["world"], base_checkpoint=runs["base"],
                                   checkpoint=runs["emcl"], cache_dir=runs["root"] / "cache",
                                   device="cpu", log=lambda message: None))  # fmt: skip
    knobs = Knobs(mode="joint", top_k=3)
    ranked = explorer.rank("a red circle moves to the left", knobs)
    assert len(ranked.base) == len(ranked.emcl) == 3
