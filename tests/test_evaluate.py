"""Evaluation: the three rows, beta = 0 equals the base row, the report files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from emcl.checkpoint import save_checkpoint
from emcl.em import EMCL_NET_DEFAULTS
from emcl.evaluate import PRESETS, evaluate, extract, main, markdown, scores
from emcl.model import DEMO_BACKBONE, EMCLConfig, EMCLRetrievalModel, ModelConfig

TINY = ModelConfig(
    backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1, emcl=EMCLConfig(k=8)
)
METRICS = {"R1", "R5", "R10", "MdR", "MnR"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    save_checkpoint(EMCLRetrievalModel(dataclasses.replace(TINY, emcl=None)), root / "base")
    joint = EMCLRetrievalModel(TINY).train()
    with torch.no_grad():
        joint.emcl(torch.randn(20, 128))  # a prior that moved
    save_checkpoint(joint, root / "emcl")
    return root / "base", root / "emcl"


def small_config(world: Path, base: Path, joint: Path):
    return dataclasses.replace(
        PRESETS["demo"],
        data=str(world),
        checkpoint=str(joint),
        base_checkpoint=str(base),
        betas=(0.0, 3.0),
        ks=(2,),
        iters=(1,),
        lams=(0.1,),
        module_betas=(0.0, 4.0),
    )


def test_three_rows_with_both_directions_plain_and_inverted_softmax(
    tiny_world, checkpoints, tmp_path
):
    cfg = small_config(tiny_world, *checkpoints)
    result = evaluate(cfg, cache_dir=tmp_path / "gallery", device="cpu", progress=False)
    for row in ("base", "base+emcl", "emcl"):
        for direction in ("t2v", "v2t"):
            assert set(result[row][direction]) == METRICS
            assert set(result[row]["inverted_softmax"][direction]) == METRICS
    assert result["base"]["em"] is None
    assert result["base+emcl"]["em"]["init"] == "reference"
    assert result["emcl"]["em"]["init"] == "prior" and result["emcl"]["em"]["k"] == 8
    assert result["meta"]["videos"] == result["meta"]["captions"] == 10
    sweep = result["sweeps"]["beta/base+emcl"]
    assert sweep[0]["beta"] == 0.0
    assert sweep[0]["t2v_R1"] == result["base"]["t2v"]["R1"]
    assert sweep[0]["v2t_R1"] == result["base"]["v2t"]["R1"]
    module = result["sweeps"]["beta/base+emcl(inference module)"][0]
    assert module["t2v_R1"] == result["inference_module"]["base"]["t2v"]["R1"]  # beta 0 = no EMCL
    table = markdown(result)
    assert "| base+emcl | emclnet |" in table and "Sweep k/base+emcl" in table


def test_beta_zero_in_base_plus_emcl_equals_base_exactly(tiny_world, checkpoints, tmp_path):
    base_path, _ = checkpoints
    features = extract(base_path, str(tiny_world), "test", tmp_path / "gallery", "cpu", False)
    plain = scores(features, None)
    zero = scores(features, dataclasses.replace(EMCL_NET_DEFAULTS, beta=0.0))
    # EMCL returns its input at beta = 0; the split/stack only changes the summation order.
    torch.testing.assert_close(zero, plain, atol=1e-6, rtol=0)
    assert torch.equal(zero.argsort(dim=1), plain.argsort(dim=1))
    assert not torch.equal(plain, scores(features, EMCL_NET_DEFAULTS))


def test_cli_writes_json_markdown_and_figure(tiny_world, checkpoints, tmp_path, monkeypatch):
    base, joint = checkpoints
    monkeypatch.setitem(PRESETS, "demo", small_config(tiny_world, base, joint))
    out = tmp_path / "out" / "eval.json"
    assert main(["--preset", "demo", "--json", str(out), "--cache", str(tmp_path / "g"),
                 "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert {"base", "base+emcl", "emcl"} <= set(result)
    assert out.with_suffix(".md").read_text().startswith("| row |")
    assert "plotly" in out.with_suffix(".html").read_text()[:5000].lower()
