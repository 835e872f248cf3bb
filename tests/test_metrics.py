"""Retrieval metrics against per-query loop oracles and the reference's numpy code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emcl.retrieval.metrics import direction_metrics, inverted_softmax, retrieval_metrics


def reference_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """CLIP4Clip's ``compute_metrics`` (docs/method.md §6.1), verbatim."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {
        "R1": 100 * float(np.sum(ind == 0)) / len(ind),
        "R5": 100 * float(np.sum(ind < 5)) / len(ind),
        "R10": 100 * float(np.sum(ind < 10)) / len(ind),
        "MdR": float(np.median(ind)) + 1,
        "MnR": float(np.mean(ind)) + 1,
    }


def oracle(scores: np.ndarray, gt: list[int]) -> dict[str, float]:
    """One query at a time: every tied position of the ground truth is equally likely."""
    recalls = {1: [], 5: [], 10: []}
    ranks = []
    for q, row in enumerate(scores):
        target = row[gt[q]]
        higher = sum(1 for j, value in enumerate(row) if value > target)
        tied = sum(1 for j, value in enumerate(row) if value == target and j != gt[q])
        positions = list(range(higher + 1, higher + tied + 2))
        ranks.append(sum(positions) / len(positions))
        for k in recalls:
            recalls[k].append(sum(1 for p in positions if p <= k) / len(positions))
    out = {f"R{k}": 100 * sum(v) / len(v) for k, v in recalls.items()}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = sum(ranks) / len(ranks)
    return out


def assert_metrics_close(got: dict, want: dict) -> None:
    assert set(want) <= set(got)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64, 257, 1000])
def test_single_caption_equals_reference_and_oracle_without_ties(n):
    sim = np.random.default_rng(n).normal(size=(n, n))
    result = retrieval_metrics(sim)
    assert_metrics_close(result["t2v"], reference_compute_metrics(sim))
    assert_metrics_close(result["v2t"], reference_compute_metrics(sim.T))
    assert_metrics_close(result["t2v"], oracle(sim, list(range(n))))
    for ties in ("optimistic", "pessimistic", "reference"):
        assert retrieval_metrics(sim, ties=ties) == result


@pytest.mark.parametrize("n", [2, 5, 40, 300])
def test_ties_expected_equals_oracle_and_reference_mode_equals_reference(n):
    # Integer scores in a small range: many ties.
    sim = np.random.default_rng(n).integers(0, 4, size=(n, n)).astype(float)
    assert_metrics_close(direction_metrics(sim, range(n)), oracle(sim, list(range(n))))
    assert_metrics_close(
        direction_metrics(sim, range(n), ties="reference"), reference_compute_metrics(sim)
    )


def test_documented_tie_example():
    sim = np.array([[1.0, 1.0], [0.0, 1.0]])
    reference = direction_metrics(sim, [0, 1], ties="reference")
    assert reference["R1"] == pytest.approx(200 / 3) and reference["MnR"] == pytest.approx(4 / 3)
    expected = direction_metrics(sim, [0, 1])
    assert expected["R1"] == pytest.approx(75.0) and expected["MnR"] == pytest.approx(1.25)
    assert direction_metrics(sim, [0, 1], ties="optimistic")["R1"] == 100.0
    assert direction_metrics(sim, [0, 1], ties="pessimistic")["R1"] == 50.0


def test_constant_scores_give_chance_not_perfect_recall():
    sim = np.zeros((20, 20))
    metrics = direction_metrics(sim, range(20))
    assert metrics["R1"] == pytest.approx(5.0)
    assert metrics["R10"] == pytest.approx(50.0)
    assert metrics["MnR"] == pytest.approx(10.5)


def test_nan_scores_never_outrank():
    sim = np.eye(4)
    sim[0, 1] = np.nan
    sim[2, 2] = np.nan  # the ground truth itself is unknown: ranked last among 4
    metrics = direction_metrics(sim, range(4))
    assert metrics["R1"] == pytest.approx(75.0)
    assert metrics["MnR"] == pytest.approx((1 + 1 + 4 + 1) / 4)


def test_multi_caption_protocol_against_loops():
    rng = np.random.default_rng(0)
    n_videos, owner = 30, []
    for video in range(n_videos):
        owner += [video] * int(rng.integers(1, 6))
    owner = np.array(owner)
    sim = rng.normal(size=(len(owner), n_videos))
    result = retrieval_metrics(sim, owner)
    assert_metrics_close(result["t2v"], oracle(sim, list(owner)))
    # v2t: each video ranks caption groups by their best caption.
    groups = np.full((n_videos, n_videos), -np.inf)
    for video in range(n_videos):
        for group in range(n_videos):
            groups[video, group] = max(sim[t, video] for t in np.flatnonzero(owner == group))
    assert_metrics_close(result["v2t"], oracle(groups, list(range(n_videos))))
    assert_metrics_close(result["v2t"], reference_compute_metrics(groups))


def test_multi_caption_skips_videos_without_captions():
    sim = np.random.default_rng(1).normal(size=(6, 4))
    owner = [0, 0, 1, 1, 3, 3]  # video 2 has no caption
    result = retrieval_metrics(sim, owner)
    groups = np.array(
        [[max(sim[t, v] for t in range(6) if owner[t] == g) for g in (0, 1, 3)] for v in (0, 1, 3)]
    )
    assert_metrics_close(result["v2t"], oracle(groups, [0, 1, 2]))


def test_inverted_softmax_formula():
    rng = np.random.default_rng(2)
    sim = rng.uniform(-1, 1, size=(5, 7))
    t2v = inverted_softmax(sim, 0.05, "t2v").numpy()
    v2t = inverted_softmax(sim, 0.05, "v2t").numpy()
    for i in range(5):
        for j in range(7):
            column = np.exp(sim[:, j] / 0.05)
            row = np.exp(sim[i, :] / 0.05)
            assert t2v[i, j] == pytest.approx(sim[i, j] * column[i] / column.sum() * 5)
            assert v2t[i, j] == pytest.approx(sim[i, j] * row[j] / row.sum() * 5)


def test_inverted_softmax_is_stable_at_small_temperature():
    sim = np.random.default_rng(3).uniform(-1, 1, size=(50, 50))
    out = inverted_softmax(sim, 1e-4)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="temperature"):
        inverted_softmax(sim, 0.0)
    with pytest.raises(ValueError, match="direction"):
        inverted_softmax(sim, 0.01, "x")


def test_metrics_with_inverted_softmax_use_each_direction():
    sim = np.random.default_rng(4).normal(size=(40, 40))
    result = retrieval_metrics(sim, inverted_softmax_temp=0.01)
    t2v = inverted_softmax(sim, 0.01, "t2v").numpy()
    v2t = inverted_softmax(sim, 0.01, "v2t").numpy()
    assert_metrics_close(result["t2v"], reference_compute_metrics(t2v))
    assert_metrics_close(result["v2t"], reference_compute_metrics(v2t.T))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="text_to_video"):
        retrieval_metrics(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="entries"):
        retrieval_metrics(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(3))


@settings(max_examples=40, deadline=None)
@given(
    sim=st.integers(1, 30).flatmap(
        lambda n: arrays(np.float64, (n, n), elements=st.floats(-1, 1, allow_nan=False))
    ),
    seed=st.integers(0, 1000),
)
def test_property_permutation_invariant_and_bounded(sim, seed):
    n = sim.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    base = retrieval_metrics(sim)
    permuted = retrieval_metrics(sim[perm][:, perm])  # same pairs, other order
    for direction in ("t2v", "v2t"):
        for key, value in base[direction].items():
            assert permuted[direction][key] == pytest.approx(value)
            if key.startswith("R"):
                assert 0.0 <= value <= 100.0
            else:
                assert 1.0 <= value <= n
