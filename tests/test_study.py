"""The study: the t-test maths against known values and a plain reference, the aggregate, the
report, bad input, the backbone hand-over, and (slow) a tiny end-to-end run that resumes."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.cli.study import main as study_main
from emcl.model.checkpoint import CheckpointError, save_checkpoint
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.model import EMCLRetrievalModel
from emcl.study.report import markdown
from emcl.study.run import (
    ROWS,
    StudyConfig,
    StudyError,
    aggregate,
    check_recipe,
    run_study,
)
from emcl.study.stats import (
    mean_std,
    paired_t_test,
    regularized_incomplete_beta,
    t_two_sided_p,
)
from emcl.training.pretrain import PRETRAIN_COMMAND, init_backbone


# ---- statistics -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("t", "df", "p"),  # two-sided critical values of Student's t (standard tables)
    [(12.706, 1, 0.05), (63.657, 1, 0.01), (4.303, 2, 0.05), (2.776, 4, 0.05), (4.604, 4, 0.01),
     (8.610, 4, 0.001), (2.228, 10, 0.05), (1.960, 10**6, 0.05), (1.0, 1, 0.5)],
)  # fmt: skip
def test_t_p_values_match_the_tables(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=2e-3, abs=1e-5)
    assert t_two_sided_p(-t, df) == t_two_sided_p(t, df)


def _t_tail_by_integration(t: float, df: int, steps: int = 20000) -> float:
    """Two-sided tail of Student's t by Simpson's rule on the density (substituting x = tan u
    maps [|t|, inf) to a finite interval)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    a, b = math.atan(abs(t)), math.pi / 2
    h = (b - a) / steps
    total = 0.0
    for i in range(steps + 1):
        u = a + i * h
        if i == steps:  # the limit at u = pi/2: 1/pi for df = 1 (Cauchy), else 0
            value = 1 / math.pi if df == 1 else 0.0
        else:
            value = density(math.tan(u)) / math.cos(u) ** 2
        total += value * (1 if i in (0, steps) else 4 if i % 2 else 2)
    return 2 * total * h / 3


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 12.0), st.integers(1, 30))
def test_t_p_values_match_numerical_integration(t, df):
    assert t_two_sided_p(t, df) == pytest.approx(_t_tail_by_integration(t, df), abs=2e-6)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(0.05, 20),
    st.floats(0.05, 20),
    # Away from 0 and 1, where ``1 - x`` rounds (x = 1e-45 gives exactly 1) and the
    # identity's other side is ill-conditioned; the end points themselves are exact.
    st.floats(1e-3, 1.0 - 1e-3) | st.sampled_from([0.0, 1.0]),
)
def test_incomplete_beta_symmetry_and_range(a, b, x):
    value = regularized_incomplete_beta(a, b, x)
    assert 0.0 <= value <= 1.0
    assert value + regularized_incomplete_beta(b, a, 1.0 - x) == pytest.approx(1.0, abs=1e-9)


def test_paired_t_test_against_the_formula():
    a, b = [46.1, 47.0, 45.2, 46.8, 47.5], [44.0, 44.9, 45.0, 44.1, 45.3]
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(mean / (sd / math.sqrt(5)))
    assert p == pytest.approx(t_two_sided_p(t, 4))
    assert paired_t_test(a, a) == (0.0, 1.0)
    assert paired_t_test([2.0, 3.0], [1.0, 2.0]) == (math.inf, 0.0)
    with pytest.raises(ValueError, match="at least two"):
        paired_t_test([1.0], [2.0])
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


# ---- aggregate and report ---------------------------------------------------------------------
def _seed_result(seed: int, shift: float) -> dict:
    def metrics(r1: float) -> dict:
        return {"R1": r1, "R5": r1 + 20, "R10": r1 + 30, "MdR": 3.0, "MnR": 5.0 - r1 / 100}

    rows = {}
    for i, name in enumerate(ROWS):
        value = 30.0 + seed + (shift * i if name != "base" else 0.0) + (seed % 2) * 0.3 * i
        rows[name] = {"t2v": metrics(value), "v2t": metrics(value + 1)}
    table2 = {n: {"t2v_R1": [20.0 + b + seed for b in range(5)],
                  "v2t_R1": [21.0 + b for b in range(5)]}
              for n in ("emcl", "base+emcl")}  # fmt: skip
    return {"seed": seed, "rows": rows, "table2": table2}


def test_aggregate_means_stds_and_paired_p_values():
    per_seed = [_seed_result(s, shift=1.0) for s in range(5)]
    study = aggregate(per_seed, list(range(5)))
    emcl = [r["rows"]["emcl"]["t2v"]["R1"] for r in per_seed]
    base = [r["rows"]["base"]["t2v"]["R1"] for r in per_seed]
    assert study["rows"]["emcl"]["t2v"]["R1"] == emcl
    mean, std = mean_std(emcl)
    assert study["summary"]["emcl"]["t2v"]["R1"] == {"mean": mean, "std": std}
    assert study["p_values"]["emcl"]["t2v"]["R1"] == paired_t_test(emcl, base)[1]
    l2 = [r["rows"]["base+emcl(l2)"]["t2v"]["R1"] for r in per_seed]
    ref = [r["rows"]["base(l2)"]["t2v"]["R1"] for r in per_seed]
    assert study["p_values"]["base+emcl(l2)"]["t2v"]["R1"] == paired_t_test(l2, ref)[1]
    assert study["table2"]["beta"] == [0, 1, 2, 3, 4]
    assert study["table2"]["t2v_R1"] == pytest.approx([22.0 + b for b in range(5)])


def _finished_study() -> dict:
    study = aggregate([_seed_result(s, 1.0) for s in range(3)], [0, 1, 2])
    return study | {
        "ceiling": {"t2v_R1": 71.3}, "world": {"version": 2, "seed": 0, "n_train": 30, "n_test": 9},
        "train": {"preset": "demo-v2", "steps": 7, "batch_size": 4, "lr_new": 1e-3,
                  "lr_backbone": 1e-4},
        "pretrained": "runs/demo-pretrain/best", "device": {"finetune": "cpu",
                                                           "evaluation": ["cpu"]},
        "seconds": {"world_build_this_run": 1.0, "pretrain": 61.0, "finetune": {"s0-base": 2.0},
                    "finetune_wall_this_run": 3.0, "evaluate": {"s0": 1.0}, "total_this_run": 9.0},
    }  # fmt: skip


def test_report_quotes_the_json():
    study = _finished_study()
    text = markdown(study)
    summary = study["summary"]["emcl"]["t2v"]["R1"]
    assert f"{summary['mean']:.1f} ± {summary['std']:.1f}" in text
    assert "71.3 %" in text and "1 min 01 s" in text
    assert f"{study['p_values']['emcl']['t2v']['R1']:.3f}" in text


def _ablation_row(r1: float, motion: float, seconds: float | None) -> dict:
    return {"t2v": {"R1": r1, "R5": r1 + 20.04, "R10": r1 + 30, "MdR": 2.0, "MnR": 170.2},
            "v2t": {"R1": r1 + 0.4, "R5": 1.0, "R10": 2.0, "MdR": 3.0, "MnR": 9.0},
            "errors": {"own_clip": r1, "another_described_clip": 3.1,
                       "undescribed_clip": 96.9 - r1,
                       "wrong_per_miss": {"color": 0.1, "shape": 0.936, "size": 0.1,
                                          "count": 0.1, "motion": motion}},
            "train_wall_seconds": seconds}  # fmt: skip


ABLATION = {"device": "cpu", "rows": {"frames alone": _ablation_row(5.3, 1.324, 1364.2),
                                      "+ clips": _ablation_row(45.6, 1.0126, None)}}  # fmt: skip


def test_report_renders_the_ablation_rows_and_closes_with_the_study_base():
    study = _finished_study() | {"ablation": ABLATION}
    text = markdown(study)
    assert (
        "| frames alone | 5.3 | 25.3 | 35.3 | 170.20 | 5.7 | 91.6 % | 1.32 / 0.94 | 22 min 44 s |"
        in text
    )
    assert "| + clips | 45.6 | 65.6 | 75.6 | 170.20 | 46.0 | 51.3 % | 1.01 / 0.94 | n/a |" in text
    base = [r["rows"]["base"]["t2v"]["R1"] for r in (_seed_result(s, 1.0) for s in range(3))]
    mean, std = mean_std(base)
    assert f"| this study's † base, mean ± std of 3 seeds | {mean:.1f} ± {std:.1f} |" in text
    assert "What each step" not in markdown(_finished_study())


def test_render_adds_the_ablation_to_a_finished_study_and_runs_nothing(tmp_path, capsys):
    study_json, report = tmp_path / "study.json", tmp_path / "REPORT.md"
    study_json.write_text(json.dumps(_finished_study()))
    table = tmp_path / "ablation.json"
    table.write_text(json.dumps(ABLATION))
    out = tmp_path / "never"
    argv = ["--render", "--json", str(study_json), "--report", str(report), "--out", str(out)]
    assert study_main([*argv, "--ablation", str(table), "--note", "made here"]) == 0
    assert json.loads(study_json.read_text())["ablation"] == ABLATION
    text = report.read_text()
    assert "| + clips | 45.6 |" in text and "made here" in text and not out.exists()
    # a table that is not one, or no finished study, is refused and nothing is rewritten
    table.write_text(json.dumps({"rows": {"x": {"t2v": {}}}}))
    before = report.read_text()
    assert study_main([*argv, "--ablation", str(table)]) == 2
    assert "not a bench.pretrain_ablation table" in capsys.readouterr().err
    assert report.read_text() == before
    argv[2] = str(tmp_path / "missing.json")
    assert study_main(argv) == 2
    assert "--render needs a finished study" in capsys.readouterr().err


# ---- bad input ----------------------------------------------------------------------------------
def test_fewer_than_two_seeds_is_refused(capsys):
    with pytest.raises(StudyError, match="at least two seeds"):
        StudyConfig(seeds=(0,))
    assert study_main(["--seeds", "1"]) == 2
    assert "at least two seeds" in capsys.readouterr().err


def test_missing_pretrained_backbone_names_the_command(tmp_path, capsys):
    code = study_main(["--seeds", "2", "--pretrained", str(tmp_path / "nothing"),
                       "--out", str(tmp_path / "study")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert PRETRAIN_COMMAND in err and str(tmp_path / "nothing") in err
    assert not (tmp_path / "study").exists()  # refused before doing anything


def test_a_study_folder_refuses_runs_of_another_recipe(tmp_path):
    backbones = {}
    for name, digest in (("a", "1" * 64), ("b", "2" * 64), ("a-moved", "1" * 64)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"weights_sha256": digest}))
        backbones[name] = str(folder)
    out = str(tmp_path / "study")
    os.makedirs(out)
    check_recipe(StudyConfig(seeds=(0, 1), out=out, pretrained=backbones["a"]))
    check_recipe(StudyConfig(seeds=(0, 1, 2), out=out, pretrained=backbones["a-moved"]))  # same
    with pytest.raises(StudyError, match="backbone_sha256"):
        check_recipe(StudyConfig(seeds=(0, 1), out=out, pretrained=backbones["b"]))
    with pytest.raises(StudyError, match="max_steps"):
        check_recipe(StudyConfig(seeds=(0, 1), out=out, pretrained=backbones["a"],
                                 overrides={"max_steps": 2}))  # fmt: skip
    old = tmp_path / "old"
    (old / "s0-base").mkdir(parents=True)  # runs from before recipes were recorded
    with pytest.raises(StudyError, match="recipe is unknown"):
        check_recipe(StudyConfig(seeds=(0, 1), out=str(old), pretrained=backbones["a"]))


# ---- the backbone hand-over ---------------------------------------------------------------------
TINY_VIDEO = ModelConfig(backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1,
                         emcl=EMCLConfig(k=8))  # fmt: skip


def test_init_backbone_copies_clip_and_restarts_the_temporal_transformer(tmp_path):
    torch.manual_seed(1)
    pretrained = EMCLRetrievalModel(ModelConfig(backbone=DEMO_BACKBONE, num_frames=1, max_words=16,
                                                temporal="meanP", emcl=None))  # fmt: skip
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.01)
    path = save_checkpoint(pretrained, tmp_path / "pre", storage="float16")
    torch.manual_seed(2)
    model = EMCLRetrievalModel(TINY_VIDEO)
    init_backbone(model, path)
    stored = {k: v.half().float() for k, v in pretrained.state_dict().items()}
    for key, value in model.state_dict().items():
        if key.startswith("clip."):
            assert torch.equal(value, stored[key]), key
    block, text_block = model.temporal.transformer.resblocks[0], model.clip.transformer.resblocks[0]
    for (key, a), (_, b) in zip(block.state_dict().items(), text_block.state_dict().items(),
                                strict=True):  # fmt: skip
        assert torch.equal(a, b), key
    with pytest.raises(CheckpointError, match=PRETRAIN_COMMAND.split(" --out")[0]):
        init_backbone(model, tmp_path / "missing")
    other = dataclasses.replace(TINY_VIDEO, backbone="RN50")
    with pytest.raises(CheckpointError, match="backbone"):
        init_backbone(EMCLRetrievalModel(dataclasses.replace(other, temporal="meanP")), path)


def test_init_backbone_keeps_a_video_pretrained_temporal_transformer(tmp_path):
    torch.manual_seed(3)
    video_base = EMCLRetrievalModel(dataclasses.replace(TINY_VIDEO, emcl=None))
    with torch.no_grad():
        for p in video_base.parameters():
            p.add_(0.02)
    path = save_checkpoint(video_base, tmp_path / "video", storage="float32")
    torch.manual_seed(4)
    model = EMCLRetrievalModel(TINY_VIDEO)  # the same temporal module, with an EMCL layer
    init_backbone(model, path)
    theirs = video_base.state_dict()
    copied = [k for k in model.state_dict() if k.startswith(("clip.", "temporal."))]
    assert any(k.startswith("temporal.") for k in copied)
    for key in copied:
        assert torch.equal(model.state_dict()[key], theirs[key]), key
    deeper = EMCLRetrievalModel(dataclasses.replace(TINY_VIDEO, temporal_layers=2))
    init_backbone(deeper, path)  # another temporal module: CLIP copied, temporal from text
    block = deeper.temporal.transformer.resblocks[0]
    text_block = deeper.clip.transformer.resblocks[0]
    for (key, a), (_, b) in zip(block.state_dict().items(), text_block.state_dict().items(),
                                strict=True):  # fmt: skip
        assert torch.equal(a, b), key


# ---- end to end (slow): pretrain, two seeds, resume ------------------------------------------
@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume(tmp_path):
    from emcl.cli.train import main as train_main

    pre = tmp_path / "pre"
    assert train_main(["--preset", "demo-pretrain", "--corpus", "128", "--val-videos", "32",
                       "--epochs", "1", "--batch-size", "32", "--out", str(pre), "--device",
                       "cpu", "--quiet"]) == 0  # fmt: skip
    cfg = StudyConfig(seeds=(0, 1), out=str(tmp_path / "study"), pretrained=str(pre / "best"),
                      world_size=(20, 8, 0), world_dir=str(tmp_path / "world"), device="cpu",
                      cache_dir=str(tmp_path / "frames"),
                      overrides={"max_steps": 2, "batch_size": 4, "val_videos": 2})  # fmt: skip
    study = run_study(cfg, say=lambda message: None)
    assert study["seeds"] == [0, 1] and study["world"]["version"] == 2
    assert set(study["rows"]) == set(ROWS) and len(study["rows"]["emcl"]["t2v"]["R1"]) == 2
    assert set(study["p_values"]) == {"base+emcl", "emcl", "base+emcl(l2)"}
    exports = {k: tmp_path / "study" / f"s{s}-{k}" / "export" for s in (0, 1) for k in
               ("base", "emcl")}  # fmt: skip
    for export in exports.values():
        assert json.loads((export / "summary.json").read_text())["best_step"] == 2
    kept = tmp_path / "study" / "s0-base" / "export" / "model.safetensors"
    before = os.stat(kept).st_mtime_ns
    # "Kill" one fine-tune and one evaluation: resuming redoes only those
    for name in ("summary.json", "model.safetensors", "config.json"):
        (tmp_path / "study" / "s1-emcl" / "export" / name).unlink()
    (tmp_path / "study" / "eval" / "s1.json").unlink()
    again = run_study(cfg, say=lambda message: None)
    assert os.stat(kept).st_mtime_ns == before
    assert again["rows"]["base"] == study["rows"]["base"]
    assert again["rows"]["emcl"]["t2v"]["R1"][0] == study["rows"]["emcl"]["t2v"]["R1"][0]
    errors = study["top1_errors"]["base"]
    shares = errors["own_clip"] + errors["another_described_clip"] + errors["undescribed_clip"]
    assert set(study["top1_errors"]) == {"base", "emcl"} and shares == pytest.approx(100)
    assert errors["own_clip"] == pytest.approx(study["summary"]["base"]["t2v"]["R1"]["mean"])


def test_base_and_emcl_of_one_seed_start_from_the_same_weights(tmp_path):
    # train() seeds torch, builds the model, then loads the backbone: do the same for both kinds
    pre = EMCLRetrievalModel(ModelConfig(backbone=DEMO_BACKBONE, num_frames=1, max_words=16,
                                         temporal="meanP", emcl=None))  # fmt: skip
    path = save_checkpoint(pre, tmp_path / "pre", storage="float16")
    states = []
    for emcl in (None, EMCLConfig(k=8)):
        torch.manual_seed(3)
        model = EMCLRetrievalModel(dataclasses.replace(TINY_VIDEO, emcl=emcl))
        init_backbone(model, path)
        states.append({k: v for k, v in model.state_dict().items() if not k.startswith("emcl.")})
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


def test_resume_needs_no_checkpoints_of_evaluated_seeds_but_weights_for_the_rest(tmp_path):
    """A run folder copied back from another machine holds summaries but no weights: seeds
    already evaluated are not retrained (their times come from finetune_seconds.json), and a
    run without its weights is not finished."""
    from emcl.study.run import KINDS, fine_tune_all, finished

    cfg = StudyConfig(seeds=(0, 1), out=str(tmp_path / "study"))
    for seed in (0, 1):
        for kind in KINDS:
            export = cfg.run_dir(seed, kind) / "export"
            export.mkdir(parents=True)
            (export / "summary.json").write_text(json.dumps({"wall_seconds": 5.0}))
            assert not finished(cfg.run_dir(seed, kind))  # no model.safetensors
    record = {f"s{s}-{k}": 80.0 + s for s in (0, 1) for k in KINDS}
    (tmp_path / "study" / "finetune_seconds.json").write_text(json.dumps(record))
    said: list[str] = []
    seconds = fine_tune_all(cfg, said.append, evaluated=frozenset({0, 1}))
    assert said == ["fine-tunes: 4 of 4 done, 0 to run (1 at a time)"]
    assert seconds == {name: 5.0 for name in record}  # the local summaries win
    (cfg.run_dir(0, "base") / "export" / "model.safetensors").write_bytes(b"weights")
    assert finished(cfg.run_dir(0, "base"))
