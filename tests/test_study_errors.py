"""emcl/study/errors.py: where the top-1 clips come from and what they get wrong, against a plain
reference written here."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.study.errors import ATTRIBUTES, top1_errors, world_truth

COLORS, SHAPES, MOTIONS = ("red", "blue", "green"), ("circle", "star"), ("up", "left", "still")


def _event(draw) -> list:
    return [draw(st.sampled_from(COLORS)), draw(st.sampled_from(SHAPES)),
            draw(st.sampled_from(("small", "large"))), draw(st.integers(1, 3)),
            draw(st.sampled_from(MOTIONS))]  # fmt: skip


@st.composite
def worlds(draw):
    n = draw(st.integers(2, 6))
    shown = [[_event(draw) for _ in range(draw(st.integers(1, 3)))] for _ in range(n)]
    stated = []
    for events in shown:  # a caption names a non-empty run of its clip's events, size sometimes
        start = draw(st.integers(0, len(events) - 1))
        stop = draw(st.integers(start + 1, len(events)))
        stated.append([[*e[:2], e[2] if draw(st.booleans()) else None, *e[3:]]
                       for e in events[start:stop]])  # fmt: skip
    sim = torch.tensor(draw(st.lists(st.lists(st.floats(-1, 1), min_size=n, max_size=n),
                                     min_size=n, max_size=n)))  # fmt: skip
    return sim, stated, shown


def _reference(sim, stated, shown):
    def described(facts, events):  # every stated event, in order, among the clip's events
        i = 0
        for fact in facts:
            while i < len(events) and not all(
                f is None or f == g for f, g in zip(fact, events[i], strict=True)
            ):
                i += 1
            if i == len(events):
                return False
            i += 1
        return True

    kinds = {"own": 0, "described": 0, "other": 0}
    wrong = dict.fromkeys(ATTRIBUTES, 0)
    for i in range(len(stated)):
        j = max(range(sim.shape[1]), key=lambda c: (sim[i, c].item(), -c))  # first maximum
        if j == i:
            kinds["own"] += 1
        elif described(stated[i], shown[j]):
            kinds["described"] += 1
        else:
            kinds["other"] += 1
            for fact in stated[i]:
                agree = [sum(f is None or f == g for f, g in zip(fact, e, strict=True))
                         for e in shown[j]]  # fmt: skip
                closest = shown[j][agree.index(max(agree))]
                for a, f, g in zip(ATTRIBUTES, fact, closest, strict=True):
                    wrong[a] += f is not None and f != g
    return kinds, wrong


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_top1_errors_match_a_plain_reference(world):
    sim, stated, shown = world
    found = top1_errors(sim, stated, shown)
    kinds, wrong = _reference(sim, stated, shown)
    n = len(stated)
    assert found["own_clip"] == pytest.approx(100 * kinds["own"] / n)
    assert found["another_described_clip"] == pytest.approx(100 * kinds["described"] / n)
    assert found["undescribed_clip"] == pytest.approx(100 * kinds["other"] / n)
    for a in ATTRIBUTES:
        expected = wrong[a] / kinds["other"] if kinds["other"] else 0.0
        assert found["wrong_per_miss"][a] == pytest.approx(expected), a


def test_a_motion_blind_ranking_is_charged_to_motion():
    shown = [[["red", "circle", "small", 1, "up"]], [["red", "circle", "small", 1, "left"]]]
    stated = [[["red", "circle", None, 1, "up"]], [["red", "circle", "small", 1, "left"]]]
    sim = torch.tensor([[0.1, 0.9], [0.9, 0.1]])  # each caption prefers the other clip
    found = top1_errors(sim, stated, shown)
    assert found["undescribed_clip"] == 100.0
    assert found["wrong_per_miss"] == {"color": 0, "shape": 0, "size": 0, "count": 0, "motion": 1}


def test_needs_one_caption_per_clip():
    with pytest.raises(ValueError, match="one caption per clip"):
        top1_errors(torch.zeros(3, 2), [[]] * 3, [[]] * 2)


def test_world_truth_reads_the_test_caption_and_the_events(tmp_path):
    event = {"color": "red", "shape": "star", "size": "large", "count": 2, "motion": "up"}
    (tmp_path / "caption_facts.json").write_text(
        json.dumps({"v1": [[["red", "star", None, 2, "up"]], [["blue", "star", None, 1, "up"]]]})
    )
    (tmp_path / "frame_concepts.json").write_text(json.dumps(
        {"clips": {"v1": {"spec": {"events": [event]}}}}))  # fmt: skip
    stated, shown = world_truth(tmp_path, ["v1"])
    assert stated == [[["red", "star", None, 2, "up"]]]
    assert shown == [[["red", "star", "large", 2, "up"]]]
