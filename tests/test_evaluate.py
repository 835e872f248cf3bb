"""Evaluation: the rows against similarities and ranks computed by hand, t2v vs v2t on a
non-symmetric matrix, beta = 0 equals the base row, the reports, ``python -m emcl evaluate``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import emcl.evaluation.protocol as protocol
from emcl.cli.evaluate import main
from emcl.core.em import EMCL_NET_DEFAULTS
from emcl.evaluation.protocol import PRESETS, Features, evaluate, extract, metrics, scores
from emcl.evaluation.report import markdown
from emcl.evaluation.sweep import Sweep
from emcl.model.checkpoint import save_checkpoint
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.model import EMCLRetrievalModel

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(
    backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=1, emcl=EMCLConfig(k=8)
)
TAU = 0.01  # the inverted softmax temperature the evaluation uses


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


# ---- independent computations --------------------------------------------------------------
def ranks_by_hand(sim: torch.Tensor, owner: list[int]) -> tuple[list[int], list[int]]:
    """1-based ranks of the right answer, counted entry by entry (no ties in these matrices).

    t2v: caption t ranks its video owner[t] among all videos (row t). v2t: video v ranks its own
    caption group among the groups, a group scoring its best caption against v (column v)."""
    s = sim.double().tolist()
    n_texts, n_videos = len(s), len(s[0])
    t2v = [1 + sum(s[t][v] > s[t][owner[t]] for v in range(n_videos)) for t in range(n_texts)]
    group = [
        [max(s[t][v] for t in range(n_texts) if owner[t] == g) for g in range(n_videos)]
        for v in range(n_videos)
    ]  # group[v][g]: video v against caption group g
    v2t = [1 + sum(group[v][g] > group[v][v] for g in range(n_videos)) for v in range(n_videos)]
    return t2v, v2t


def summary_by_hand(ranks: list[int]) -> dict[str, float]:
    r = np.asarray(ranks, dtype=float)
    recalls = {f"R{k}": 100.0 * float((r <= k).mean()) for k in (1, 5, 10)}
    return recalls | {"MdR": float(np.median(r)), "MnR": float(r.mean())}


def inverted_by_hand(sim: torch.Tensor, over: str) -> torch.Tensor:
    """``S * softmax(S / tau) * Nt``, the softmax over the texts (for t2v) or the videos (v2t)."""
    s = sim.double()
    weights = torch.softmax(s / TAU, dim=0 if over == "texts" else 1)
    return s * weights * s.shape[0]


def expected_metrics(sim: torch.Tensor, owner: list[int]) -> dict:
    t2v, v2t = ranks_by_hand(sim, owner)
    inverted_t2v, _ = ranks_by_hand(inverted_by_hand(sim, "texts"), owner)
    _, inverted_v2t = ranks_by_hand(inverted_by_hand(sim, "videos"), owner)
    return {
        "t2v": summary_by_hand(t2v),
        "v2t": summary_by_hand(v2t),
        "inverted_softmax": {"t2v": summary_by_hand(inverted_t2v),
                             "v2t": summary_by_hand(inverted_v2t)},
    }  # fmt: skip


def non_symmetric(n_texts: int, owner: list[int], seed: int) -> torch.Tensor:
    """Noise plus a bonus on the right pairs: some, not all, queries right, and t2v != v2t."""
    generator = torch.Generator().manual_seed(seed)
    sim = 0.1 * torch.randn(n_texts, max(owner) + 1, generator=generator)
    sim[torch.arange(n_texts), torch.tensor(owner)] += 0.12
    return sim


def hand_features(owner: list[int], n_videos: int) -> Features:
    return Features(
        text=torch.zeros(len(owner), 4),
        frames=torch.zeros(n_videos, 2, 4),
        video=torch.zeros(n_videos, 4),
        text_to_video=owner,
        skipped=[],
        prior=None,
        frame_temp=3.0,
    )


def assert_metrics_equal(found: dict, expected: dict) -> None:
    for direction in ("t2v", "v2t"):
        assert found[direction] == pytest.approx(expected[direction]), direction
        assert found["inverted_softmax"][direction] == pytest.approx(
            expected["inverted_softmax"][direction]
        ), f"inverted softmax {direction}"


# ---- metrics on hand-made similarities -----------------------------------------------------
@pytest.mark.parametrize(
    "owner",
    [list(range(12)), [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7, 7, 8]],
    ids=["one caption per video", "several captions per video"],
)
def test_t2v_and_v2t_match_hand_ranking_of_a_non_symmetric_matrix(owner):
    sim = non_symmetric(len(owner), owner, seed=3)
    expected = expected_metrics(sim, owner)
    # Only a discriminating matrix can tell the directions (or their inverted softmax) apart.
    assert expected["t2v"] != expected["v2t"]
    assert expected["inverted_softmax"]["t2v"] != expected["inverted_softmax"]["v2t"]
    assert 0 < expected["t2v"]["R1"] < 100 and 0 < expected["v2t"]["R1"] < 100
    assert_metrics_equal(metrics(sim, hand_features(owner, max(owner) + 1)), expected)


def base_similarity_by_hand(features: Features) -> torch.Tensor:
    """No EMCL, EMCL-Net protocol: each text pools each video's frames with softmax weights
    on <text, frame> / frame_temp, and the score is the cosine of text and pooled video."""
    text, frames = features.text.double(), features.frames.double()
    sim = torch.empty(text.shape[0], frames.shape[0], dtype=torch.float64)
    for a in range(text.shape[0]):
        for b in range(frames.shape[0]):
            weights = torch.softmax(frames[b] @ text[a] / features.frame_temp, dim=0)
            pooled = weights @ frames[b]
            sim[a, b] = text[a] @ pooled / (text[a].norm() * pooled.norm())
    return sim


def test_rows_equal_hand_computed_scores_and_sweeps_start_at_the_base_row(
    tiny_world, checkpoints, tmp_path
):
    cfg = small_config(tiny_world, *checkpoints)
    result = evaluate(cfg, cache_dir=tmp_path / "gallery", device="cpu", progress=False)
    base = extract(cfg.base_checkpoint, str(tiny_world), "test", tmp_path / "gallery", "cpu", False)
    assert result["meta"]["videos"] == result["meta"]["captions"] == 10
    assert base.text_to_video == list(range(10))
    sim = base_similarity_by_hand(base)
    assert_metrics_equal(result["base"], expected_metrics(sim, base.text_to_video))
    cosine = (
        torch.nn.functional.normalize(base.text.double(), dim=-1)
        @ torch.nn.functional.normalize(base.video.double(), dim=-1).T
    )  # the inference-module protocol without EMCL: plain cosines of mean-pooled videos
    assert_metrics_equal(
        result["inference_module"]["base"], expected_metrics(cosine, base.text_to_video)
    )
    assert result["base"]["em"] is None
    assert result["base+emcl"]["em"] == dataclasses.asdict(EMCL_NET_DEFAULTS)
    assert result["emcl"]["em"]["init"] == "prior" and result["emcl"]["em"]["k"] == 8
    assert result["base"]["protocol"] == "trained"
    assert result["meta"]["blocks"] == {"trained": [32, 32], "inference": [64, 64]}
    sweep = Sweep.from_json(result["sweeps"]["beta"])
    assert sweep.knob == "beta" and sweep.values == [0.0, 3.0]
    assert set(sweep.series) == {"base+emcl", "emcl"}
    at_zero = sweep.series["base+emcl"][0]
    for d in ("t2v", "v2t"):
        assert at_zero[d] == result["base"][d] == sweep.reference["base"][d]
    assert sweep.series["emcl"][1] == {k: result["emcl"][k] for k in at_zero}  # beta 3: its row
    module = Sweep.from_json(result["sweeps"]["beta (inference module)"])
    at_zero = module.series["base+emcl (inference module)"][0]  # beta 0: no EMCL
    assert at_zero["t2v"] == result["inference_module"]["base"]["t2v"]
    assert Sweep.from_json(result["sweeps"]["lam"]).series["base+emcl (data init)"]


def test_beta_zero_in_base_plus_emcl_equals_base_exactly(tiny_world, checkpoints, tmp_path):
    base_path, _ = checkpoints
    features = extract(base_path, str(tiny_world), "test", tmp_path / "gallery", "cpu", False)
    plain = scores(features, None)
    zero = scores(features, dataclasses.replace(EMCL_NET_DEFAULTS, beta=0.0))
    # EMCL returns its input at beta = 0; the split/stack only changes the summation order.
    torch.testing.assert_close(zero, plain, atol=1e-6, rtol=0)
    assert torch.equal(zero.argsort(dim=1), plain.argsort(dim=1))
    assert not torch.equal(plain, scores(features, EMCL_NET_DEFAULTS))


# ---- the command ---------------------------------------------------------------------------
def test_cli_reports_t2v_and_v2t_of_the_scores_in_json_markdown_and_figure(
    tiny_world, checkpoints, tmp_path, monkeypatch
):
    # Every row and sweep point scores with one hand-made non-symmetric matrix, so each reported
    # number is known: t2v and v2t must come out where they belong, in the JSON and the table.
    owner = list(range(10))
    sim = non_symmetric(10, owner, seed=122)
    expected = expected_metrics(sim, owner)
    inverted = expected["inverted_softmax"]
    r1 = [m[d]["R1"] for m in (expected, inverted) for d in ("t2v", "v2t")]
    assert len(set(r1)) == 4  # any two of the four R@1 swapped shows
    monkeypatch.setattr(protocol, "scores", lambda features, params, protocol="trained": sim)
    base, joint = checkpoints
    monkeypatch.setitem(PRESETS, "demo", small_config(tiny_world, base, joint))
    out = tmp_path / "out" / "eval.json"
    assert main(["--preset", "demo", "--json", str(out), "--cache", str(tmp_path / "g"),
                 "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    rows = [result[name] for name in ("base", "base+emcl", "emcl")]
    for row in rows + list(result["inference_module"].values()):
        assert_metrics_equal(row, expected)
    assert set(result["sweeps"]) == {"beta", "k", "iters", "lam", "beta (inference module)"}
    for data in result["sweeps"].values():
        sweep = Sweep.from_json(data)
        points = [p for series in sweep.series.values() for p in series]
        assert len(points) >= len(sweep.values) > 0
        for point in [*points, *sweep.reference.values()]:
            assert_metrics_equal(point, expected)
    table = out.with_suffix(".md").read_text()
    assert table == markdown(result)
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    base_line = next(line for line in table.splitlines() if line.startswith("| base | trained |"))
    cells = dict(zip(header, (c.strip() for c in base_line.strip("|").split("|")), strict=True))
    # the header reads "t2v R@1 | R@5 | ... | v2t R@1 | ...": one column per name
    assert cells["t2v R@1"] == f"{expected['t2v']['R1']:.1f}"
    assert cells["v2t R@1"] == f"{expected['v2t']['R1']:.1f}"
    page = out.with_suffix(".html").read_text()
    assert "plotly" in page[:5000].lower()
    assert page.count('class="plotly-graph-div"') == len(result["sweeps"])  # a figure per sweep
    # a result saved with the as-trained protocol's alias reads the same
    saved = json.dumps(result).replace('"protocol": "trained"', '"protocol": "emclnet"')
    aliased = json.loads(saved)
    assert aliased != result and markdown(aliased) == table


def test_python_m_emcl_evaluate_help_exits_0_with_the_evaluate_options():
    done = subprocess.run([sys.executable, "-m", "emcl", "evaluate", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m emcl evaluate")
    assert "--json JSON" in done.stdout and "--base-checkpoint" in done.stdout
