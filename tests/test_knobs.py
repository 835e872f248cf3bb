"""Knobs: they hold one EMParams (defaults written once, in emcl/core/em.py), build from flat
names as the page and the API send them, round-trip, and refuse each knob just past its limits."""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import pytest

from emcl.core.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.explorer.knobs import EM_KNOBS, LIMITS, NAMES, KnobError, Knobs

INTEGER = {"k", "iters", "seed", "shortlist", "top_k"}


def test_defaults_are_emparams_defaults_with_the_trained_prior():
    knobs = Knobs()
    assert knobs.em == replace(EMCL_NET_DEFAULTS, init="prior") == EMParams(init="prior")
    assert (knobs.k, knobs.iters, knobs.lam, knobs.beta) == (
        EMParams.k, EMParams.iters, EMParams.lam, EMParams.beta,
    )  # fmt: skip


def test_flat_names_build_the_same_knobs_as_an_emparams():
    p = INFERENCE_MODULE_DEFAULTS
    flat = Knobs(mode="inference", **asdict(p), top_k=5)
    held = Knobs(mode="inference", em=p, top_k=5)
    assert flat == held and flat.em is not None and flat.params() == p
    assert hash(flat) == hash(held)
    assert flat.em_key() == (p.k, p.iters, p.lam, p.beta, p.init, p.seed)
    assert flat.em_run_key() == (p.k, p.iters, p.lam, p.init, p.seed)  # beta left out


def test_round_trip_through_the_flat_dict_and_replace():
    knobs = Knobs(mode="inference", em=INFERENCE_MODULE_DEFAULTS, context="gallery", top_k=3)
    flat = knobs.to_dict()
    assert tuple(flat) == NAMES == Knobs.names()
    assert Knobs.from_dict(flat) == knobs
    moved = replace(knobs, beta=1.5, k=9.0)  # a flat knob over the held em, slider floats
    assert (moved.beta, moved.k, moved.lam) == (1.5, 9, knobs.lam) and isinstance(moved.k, int)
    assert moved.em == replace(knobs.em, beta=1.5, k=9)
    swapped = replace(knobs, em=EMParams(k=4, init="data"))
    assert swapped.em == EMParams(k=4, init="data") and swapped.context == "gallery"


def test_unknown_names_and_non_emparams_are_refused():
    with pytest.raises(KnobError, match="unknown knob"):
        Knobs(gamma=1.0)
    with pytest.raises(KnobError, match="unknown knob"):
        Knobs.from_dict({"beta": 1.0, "em_k": 2})
    with pytest.raises(KnobError, match="em must be an EMParams"):
        Knobs(em={"k": 3})


def _edges(name: str) -> tuple[list[float], list[float]]:
    """(accepted, refused) values at and just past the knob's limits."""
    lo, hi = LIMITS[name]
    step = 1 if name in INTEGER else 1e-9 * max(1.0, abs(hi))
    below = lo - step if name in INTEGER or lo == 0 else lo * (1 - 1e-9)
    above = hi + step
    return [lo, hi], [below, above]


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_each_numeric_knob_at_and_just_past_its_limits(name):
    accepted, refused = _edges(name)
    base = {"mode": "inference", "init": "data"}
    for value in accepted:
        knobs = Knobs(**base, **{name: value})
        assert getattr(knobs, name) == value
        if name in EM_KNOBS:
            assert getattr(knobs.em, name) == value
    for value in refused:
        with pytest.raises(KnobError, match=f"{name} must be a finite number in"):
            Knobs(**base, **{name: value})
    for value in (math.nan, math.inf):
        with pytest.raises(KnobError, match=name):
            Knobs(**base, **{name: value})


def test_emparams_inside_its_own_range_but_outside_the_knobs_limits_is_refused():
    wide = EMParams(k=LIMITS["k"][1] + 1, beta=LIMITS["beta"][1] + 1)  # EMParams accepts both
    with pytest.raises(KnobError, match="k must be a finite number in"):
        Knobs(em=wide)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("mode", "both", "mode must be one of joint, inference"),
        ("init", "random", "init must be one of prior, reference, data"),
        ("context", "batch", "context must be one of"),
        ("isoftmax", "yes", "isoftmax must be true or false"),
        ("k", 7.5, "k must be a whole number"),
        ("seed", True, "seed must be a number"),
    ],
)
def test_choices_and_kinds_are_refused_by_name(name, value, message):
    with pytest.raises(KnobError, match=message):
        Knobs(**{name: value})
