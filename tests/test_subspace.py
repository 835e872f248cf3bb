"""The subspace view's construction (emcl/subspace.py) against loop oracles and hand examples."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from emcl.core.em import EMParams
from emcl.core.subspace import (
    Grounding,
    align,
    align_batch,
    bootstrap_interval,
    channel_weights,
    closest_frames,
    distinct_subspaces,
    full_similarity,
    grounding,
    keep_word,
    loadings,
    normalise_word,
    subspace_similarity,
    total,
)


def tokens(n: int, d: int = 24, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_channel_weights_scale_each_subspace_to_one():
    z = torch.rand(16, 5, generator=torch.Generator().manual_seed(1))
    w = channel_weights(z)  # [K, D]
    assert w.shape == (5, 16)
    assert torch.allclose(w.amax(dim=1), torch.ones(5))
    assert torch.allclose(w * z.amax(dim=0)[:, None], z.T)


def test_distinct_subspaces_groups_equal_profiles_only():
    base = torch.rand(3, 10, generator=torch.Generator().manual_seed(2))
    w = torch.stack([base[0], base[1], base[0], base[0] + 0.005, base[2], base[1] + 0.5])
    assert distinct_subspaces(w, tol=1e-2) == [[0, 2, 3], [1], [4], [5]]
    assert distinct_subspaces(w, tol=0.0) == [[0, 2], [1], [3], [4], [5]]


def test_subspace_similarity_matches_masked_cosines():
    f, w = tokens(5, seed=3), tokens(4, seed=4)
    weights = torch.rand(3, 24, generator=torch.Generator().manual_seed(5))
    got = subspace_similarity(f, w, weights)  # [S, T, L]
    for s in range(3):
        for i in range(5):
            for j in range(4):
                want = F.cosine_similarity(f[i] * weights[s], w[j] * weights[s], dim=0)
                assert got[s, i, j] == pytest.approx(float(want), abs=1e-5)


def test_uniform_weights_give_the_full_space():
    f, w = tokens(6, seed=6), tokens(3, seed=7)
    got = subspace_similarity(f, w, torch.ones(1, 24))[0]
    assert torch.allclose(got, full_similarity(f, w), atol=1e-6)


def test_loadings_are_weighted_mean_squares():
    x = tokens(4, seed=8)
    weights = torch.rand(2, 24, generator=torch.Generator().manual_seed(9))
    got = loadings(x, weights)
    for n in range(4):
        for s in range(2):
            want = float((weights[s] * x[n] ** 2).sum() / weights[s].sum())
            assert got[n, s] == pytest.approx(want, rel=1e-5)


def test_closest_frames_per_word():
    sim = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4]])  # [T=3, L=2]
    frame, best = closest_frames(sim)
    assert frame.tolist() == [1, 0]
    assert best.tolist() == pytest.approx([0.5, 0.9])


def test_reference_init_collapses_to_two_subspaces():
    f, w = tokens(12, seed=10), tokens(7, seed=11)
    params = EMParams(k=16, iters=9, lam=1.0, beta=3.0, init="reference", seed=0)
    result = align(f, w, [f"w{j}" for j in range(7)], params)
    assert 1 <= result.n_subspaces <= 2  # docs/method.md §1.5
    assert sum(len(g) for g in result.groups) == 16
    assert result.similarity.shape == (result.n_subspaces, 12, 7)


def test_data_init_with_a_sharp_temperature_breaks_the_symmetry():
    f, w = tokens(12, d=64, seed=12), tokens(7, d=64, seed=13)
    params = EMParams(k=16, iters=9, lam=0.01, beta=3.0, init="data", seed=0)
    result = align(f, w, [f"w{j}" for j in range(7)], params)
    assert result.n_subspaces > 2
    assert result.effective_k > 2
    assert torch.allclose(result.frame_loadings.sum(dim=1), torch.ones(12), atol=1e-5)
    assert torch.allclose(result.word_loadings.sum(dim=1), torch.ones(7), atol=1e-5)


def test_links_follow_each_selection():
    f, w = tokens(12, d=64, seed=14), tokens(6, d=64, seed=15)
    params = EMParams(k=8, iters=9, lam=0.01, beta=3.0, init="data", seed=1)
    result = align(f, w, [f"w{j}" for j in range(6)], params)
    frame, best = result.links(None)
    assert frame.tolist() == full_similarity(f, w).argmax(dim=0).tolist()
    for s in range(result.n_subspaces):
        frame, best = result.links(s)
        assert frame.tolist() == result.similarity[s].argmax(dim=0).tolist()
        assert torch.allclose(best, result.similarity[s].amax(dim=0))
    with pytest.raises(ValueError, match="subspace must be"):
        result.links(result.n_subspaces)
    auto_frame, _ = result.links(-1)
    for j, group in enumerate(result.dominant.tolist()):
        # Auto links go to a frame that is closest in the word's dominant subspace.
        assert auto_frame[j] == result.similarity[group][:, j].argmax()


def test_batch_alignment_equals_one_pair_at_a_time():
    torch.manual_seed(16)
    params = EMParams(k=8, iters=7, lam=0.03, beta=2.0, init="data", seed=3)
    frames = F.normalize(torch.randn(3, 12, 32), dim=-1)
    lengths = [5, 2, 7]
    words = torch.zeros(3, 7, 32)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for b, n in enumerate(lengths):
        words[b, :n] = F.normalize(torch.randn(n, 32), dim=-1)
        mask[b, :n] = True
    links = align_batch(frames, words, mask, params)
    for b, n in enumerate(lengths):
        single = align(frames[b], words[b, :n], [str(j) for j in range(n)], params)
        assert links.auto[b, :n].tolist() == single.links(-1)[0].tolist()  # zero rows are neutral
        assert links.full[b, :n].tolist() == single.links(None)[0].tolist()


def test_align_rejects_bad_shapes():
    params = EMParams(k=4, iters=3, lam=0.1, beta=1.0, init="reference")
    with pytest.raises(ValueError, match="need frames"):
        align(tokens(3)[None], tokens(2), ["a", "b"], params)
    with pytest.raises(ValueError, match="word strings"):
        align(tokens(3), tokens(2), ["a"], params)
    with pytest.raises(ValueError, match="no words"):
        align(tokens(3), tokens(0), [], params)


def test_grounding_by_hand():
    lexicon = {"red": "color:red", "circle": "shape:circle", "vanishes": "event:disappear"}
    concepts = [
        ["color:red", "shape:circle"],
        ["color:red", "shape:circle"],
        ["event:disappear"],
        ["event:disappear"],
    ]
    words = ["a", "Red", "circle", "vanishes"]
    g = grounding(words, [0, 2, 1, 3], concepts, lexicon)
    assert g.correct == [None, False, True, True]
    everywhere = [[*c, "count:1"] for c in concepts]  # a concept every frame shows
    assert grounding(["one"], [0], everywhere, {"one": "count:1"}).scored == 0
    assert grounding(["one"], [0], everywhere, {"one": "count:1"}, False).score == 1.0
    assert (g.hits, g.scored) == (2, 3)
    assert g.score == pytest.approx(2 / 3)
    assert g.chance == pytest.approx(0.5 + 0.5 + 0.5)  # each concept is visible in 2 of 4 frames
    pooled = total([g, grounding(["red"], [0], concepts, lexicon)])
    assert (pooled.hits, pooled.scored) == (3, 4)
    assert grounding(["the"], [0], concepts, lexicon).score is None
    with pytest.raises(ValueError, match="outside"):
        grounding(["red"], [7], concepts, lexicon)


def test_word_helpers():
    assert normalise_word("Right,") == "right"
    assert keep_word("x2") and keep_word("红") and not keep_word(",") and not keep_word("...")


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 12),
    iters=st.integers(0, 6),
    lam=st.floats(1e-3, 10.0),
    init=st.sampled_from(["reference", "data"]),
    n_words=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_alignment_is_finite_for_any_accepted_knobs(k, iters, lam, init, n_words, seed):
    f, w = tokens(6, d=16, seed=seed), tokens(n_words, d=16, seed=seed + 1)
    params = EMParams(k=k, iters=iters, lam=lam, beta=1.0, init=init, seed=seed)
    result = align(f, w, [str(j) for j in range(n_words)], params)
    assert torch.isfinite(result.similarity).all() and torch.isfinite(result.full).all()
    assert result.similarity.abs().max() <= 1 + 1e-5
    for selection in (-1, None, *range(result.n_subspaces)):
        frame, best = result.links(selection)
        assert frame.shape == (n_words,) and int(frame.max()) < 6
        assert all(math.isfinite(v) for v in best.tolist())


@settings(max_examples=30, deadline=None)
@given(
    shows=st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=30),
    picks=st.lists(st.integers(0, 3), min_size=30, max_size=30),
)
def test_only_informative_words_are_scored_and_chance_stays_below_one(shows, picks):
    """A concept in every frame or in none is never scored; each scored word's chance is the
    share of frames showing it, so pooled chance is strictly between 0 and 1."""
    lexicon = {"x": "event:x"}
    scores = []
    for visible, frame in zip(shows, picks, strict=False):
        concepts = [["event:x"] if v else [] for v in visible]
        g = grounding(["x"], [frame], concepts, lexicon)
        informative = 0 < sum(visible) < 4
        assert g.scored == int(informative)
        if informative:
            assert g.chance == pytest.approx(sum(visible) / 4)
            assert g.hits == int(visible[frame])
        scores.append(g)
    pooled = total(scores)
    if pooled.scored:
        assert 0 < pooled.chance_score < 1
        low, high = bootstrap_interval(scores)
        assert 0.0 <= low <= pooled.score <= high <= 1.0
    else:
        assert bootstrap_interval(scores) is None


def test_bootstrap_interval_narrows_with_more_pairs():
    one = Grounding(hits=1, scored=2, chance=1.0, correct=[])
    other = Grounding(hits=0, scored=2, chance=1.0, correct=[])
    few = bootstrap_interval([one, other] * 5)
    many = bootstrap_interval([one, other] * 200)
    assert few[1] - few[0] > many[1] - many[0] > 0
    assert few[0] < 0.25 < few[1] and many[0] < 0.25 < many[1]
