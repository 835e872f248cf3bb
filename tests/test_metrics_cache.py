"""The Metrics tab scores each row once per what it depends on (issue 18: /metrics under load):
the no-EM rows survive every EM knob change, and the cached table equals the uncached one."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from emcl.explorer import metrics as metrics_service
from emcl.explorer.context import Caches, ServiceContext
from emcl.explorer.knobs import Knobs

# Away from the paper defaults, so no other test's cache entry could answer them.
START = Knobs(mode="joint", beta=2.5, k=6, iters=4, lam=0.3, init="data", seed=5)


def fresh(explorer) -> ServiceContext:
    """The explorer's snapshot with empty caches (nothing shared with the other tests)."""
    return replace(explorer.context, caches=Caches(), latest={})


def uncached(ctx: ServiceContext, knobs: Knobs, protocol: str) -> dict:
    """The four rows computed straight from the score matrices, no row cache involved."""
    snap = ctx.snapshot
    out = {}
    for plain, view, with_em in (("base", snap.base, "base+emcl"), ("emcl", snap.emcl, "emcl+em")):
        for name, point in ((plain, None), (with_em, knobs)):
            sim = metrics_service.similarity(ctx, snap, view, point, protocol)
            out[metrics_service.ROWS[name]] = metrics_service._scored(snap, sim, knobs)
    return out


@pytest.fixture
def counted(monkeypatch):
    """How many rows were scored (ranked) since the last read."""
    calls: list[int] = []
    scored = metrics_service._scored

    def counting(*args, **kwargs):
        calls.append(1)
        return scored(*args, **kwargs)

    monkeypatch.setattr(metrics_service, "_scored", counting)

    def take() -> int:
        n = len(calls)
        calls.clear()
        return n

    return take


@pytest.mark.parametrize("protocol", ["trained", "inference"])
def test_em_knob_changes_rescore_only_the_em_rows(explorer, counted, protocol):
    ctx = fresh(explorer)
    assert ctx.snapshot.emcl is not None  # four rows: two without EM, two with
    steps = [
        (START, 4),  # nothing cached yet
        (replace(START, k=9), 2),  # K: the EM rows only
        (replace(START, k=9, iters=2, lam=1.0, seed=6), 2),
        (replace(START, k=9, iters=2, lam=1.0, seed=6, init="reference"), 2),
        (replace(START, k=9, iters=2, lam=1.0, seed=6, beta=4.0), 2),  # β
        (START, 0),  # back to a setting already shown: every row cached
        (replace(START, isoftmax=True, isoftmax_temp=0.05), 4),  # rescored: all four rows
        (replace(START, isoftmax=True, isoftmax_temp=0.05, beta=1.0), 2),
    ]
    for knobs, rescored in steps:
        got = metrics_service.metrics(ctx, knobs, protocol)
        assert counted() == rescored, knobs.summary()
        assert dict(got.rows) == uncached(fresh(explorer), knobs, protocol), knobs.summary()
        counted()  # the uncached reference's own calls


def test_row_keys_separate_what_rows_depend_on(explorer):
    snap = explorer.snapshot
    key = metrics_service.row_key
    base, emcl = snap.base, snap.emcl
    assert key(snap, base, None, START, "trained") == key(
        snap, base, None, replace(START, k=3, beta=9.0, seed=1), "trained"
    )
    distinct = {
        key(snap, base, None, START, "trained"),
        key(snap, emcl, None, START, "trained"),
        key(snap, base, None, START, "inference"),
        key(snap, base, None, replace(START, isoftmax=True), "trained"),
        key(snap, base, START, START, "trained"),
        key(snap, base, replace(START, beta=1.0), START, "trained"),
        key(snap, base, replace(START, context="gallery"), START, "inference"),
    }
    assert len(distinct) == 7
    # The trained protocol runs its own blocks whatever the context knob says.
    assert key(snap, base, START, START, "trained") == key(
        snap, base, replace(START, context="block"), START, "trained"
    )


def test_an_inference_em_size_is_cached_per_em_setting(explorer, monkeypatch):
    ctx = fresh(explorer)
    knobs = replace(START, mode="inference")
    first = metrics_service.em_size(ctx, ctx.snapshot, knobs, "inference")

    def no_em(*args, **kwargs):
        raise AssertionError("the same EM setting must not run its EM again")

    monkeypatch.setattr(metrics_service, "_inference_em_size", no_em)
    assert metrics_service.em_size(ctx, ctx.snapshot, knobs, "inference") == first


@pytest.fixture
def row_threads(monkeypatch) -> dict[tuple[str, bool], set[str]]:
    """The threads that scored each model's rows: ``(view name, with EM)`` -> thread names."""
    threads: dict[tuple[str, bool], set[str]] = {}
    scored = metrics_service.row

    def recording(ctx, snap, view, point, knobs, protocol):
        name = threading.current_thread().name
        threads.setdefault((view.name, point is not None), set()).add(name)
        return scored(ctx, snap, view, point, knobs, protocol)

    monkeypatch.setattr(metrics_service, "row", recording)
    return threads


def prefixes(names: set[str]) -> set[str]:
    """Worker threads are named ``<worker>_<n>``."""
    return {name.rpartition("_")[0] or name for name in names}


@pytest.mark.parametrize("together", [True, False])
def test_the_two_models_rows_side_by_side_equal_one_after_the_other(
    explorer, monkeypatch, row_threads, together
):
    """On one worker thread (2 cores) the EMCL model's rows run on the `metrics_beside` worker
    while the metrics worker scores the base model's; the table is the same either way."""
    ctx = fresh(explorer)
    monkeypatch.setattr(metrics_service, "side_by_side", lambda: together)
    knobs = replace(START, k=7, seed=11)
    got = metrics_service.metrics(ctx, knobs, "trained")
    seen = {key: prefixes(names) for key, names in row_threads.items()}
    assert [name for name, _ in got.rows] == list(metrics_service.ROWS.values())
    assert dict(got.rows) == uncached(fresh(explorer), knobs, "trained")
    snap = ctx.snapshot
    for with_em in (False, True):
        assert ("metrics-beside" in seen[snap.emcl.name, with_em]) == together
        assert "metrics-beside" not in seen[snap.base.name, with_em]


def test_side_by_side_only_when_the_worker_has_one_thread(monkeypatch):
    monkeypatch.setattr(metrics_service.torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(metrics_service, "usable_cores", lambda: 2)
    assert metrics_service.side_by_side()
    monkeypatch.setattr(metrics_service, "usable_cores", lambda: 1)
    assert not metrics_service.side_by_side()  # one core: nothing to run beside
    monkeypatch.setattr(metrics_service.torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(metrics_service, "usable_cores", lambda: 4)
    assert not metrics_service.side_by_side()  # the EM already spreads over the cores


def test_a_sweep_measures_the_emcl_curve_beside(explorer, monkeypatch, row_threads):
    ctx = fresh(explorer)
    monkeypatch.setattr(metrics_service, "side_by_side", lambda: True)
    beside = metrics_service.sweep(ctx, START, "iters")
    seen = {key: prefixes(names) for key, names in row_threads.items()}
    monkeypatch.setattr(metrics_service, "side_by_side", lambda: False)
    assert beside == metrics_service.sweep(fresh(explorer), START, "iters")
    snap = ctx.snapshot
    assert seen[snap.emcl.name, True] == {"sweeps-beside"}
    assert "sweeps-beside" not in seen[snap.base.name, True]
