"""Switching the served pair: the new pair answers as an explorer built on it does, the old
pair serves while the new one is built, a failed switch keeps the old pair, one switch at a
time."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
from test_checkpoint_catalog import tiny_checkpoint

import emcl.explorer.setup as explorer_setup
from emcl.explorer.knobs import KnobError
from emcl.explorer.setup import load_explorer
from emcl.explorer.switching import SwitchStatus
from emcl.model.config import EMCLConfig
from emcl.paths import CHECKPOINTS

QUERY = "a red circle moves left"


@pytest.fixture(scope="module")
def inputs(explorer_inputs, tmp_path_factory) -> dict:
    """The explorer fixtures' setup with a folder holding one more joint checkpoint (K 16)."""
    extra = tmp_path_factory.mktemp("extra")
    other = tiny_checkpoint(extra / "other-emcl", 101, EMCLConfig(k=16, beta=2.0))
    folders = [extra]
    given = explorer_inputs["checkpoints"]["demo-base"].parent
    if given.resolve() != CHECKPOINTS.resolve():  # stand-ins outside the shipped folder
        folders.append(given)
    setup = dataclasses.replace(explorer_inputs["setup"](), checkpoint_dirs=tuple(folders))
    return {**explorer_inputs, "setup": setup, "other": other}


def name_of(explorer, path: Path) -> str:
    return next(e.name for e in explorer.checkpoint_catalog() if e.path.resolve() == path.resolve())


def wait(explorer, timeout: float = 300) -> SwitchStatus:
    end = time.monotonic() + timeout
    while (status := explorer.switch_status()).running:
        assert time.monotonic() < end, status
        time.sleep(0.05)
    return status


def answers(explorer) -> tuple:
    """What the Search and Metrics tabs show for the joint defaults (timings left out)."""
    knobs = explorer.defaults("joint") if explorer.has_joint else explorer.defaults("inference")
    ranked = explorer.rank(QUERY, knobs).to_json()
    ranked.pop("ms")
    table = explorer.metrics(knobs).table()
    return ranked, table, knobs


def test_a_switch_serves_the_new_pair_and_the_old_one_meanwhile(inputs, monkeypatch):
    explorer = load_explorer(inputs["setup"])
    base_name = name_of(explorer, inputs["checkpoints"]["demo-base"])
    other_name = name_of(explorer, inputs["other"])
    before, version = answers(explorer), explorer.snapshot.version
    records = [r.video_id for r in explorer.snapshot.records]

    entered, gate = threading.Event(), threading.Event()
    real = explorer_setup.build_pair

    def blocked(*args, **kwargs):
        entered.set()
        assert gate.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(explorer_setup, "build_pair", blocked)
    status = explorer.switch_models(base_name, other_name)
    assert status.running and "re-indexing" in status.message
    assert entered.wait(60)
    assert answers(explorer) == before  # the old pair still serves, unchanged
    with pytest.raises(KnobError, match="busy"):  # one switch at a time
        explorer.switch_models(base_name, other_name)
    gate.set()
    status = wait(explorer)
    assert status.error is None and "switched" in status.message, status
    assert explorer.snapshot.version == version + 1
    assert status.emcl.endswith("other-emcl")
    assert [r.video_id for r in explorer.snapshot.records] == records

    after = answers(explorer)
    assert after[0]["emcl"] != before[0]["emcl"] or after[1] != before[1]
    assert after[2].k == 16 and explorer.trained.k == 16  # defaults follow the EMCL side
    assert explorer.prior(after[2]) is not None
    direct = load_explorer(dataclasses.replace(inputs["setup"], checkpoint=inputs["other"]))
    assert answers(direct) == after  # the same as an explorer built on the pair
    assert explorer.defaults("joint") == direct.defaults("joint")
    assert (explorer.prior(after[2]) == direct.prior(after[2])).all()


def test_a_failed_switch_keeps_the_old_pair(inputs, monkeypatch):
    explorer = load_explorer(inputs["setup"])
    base_name = name_of(explorer, inputs["checkpoints"]["demo-base"])
    before, version = answers(explorer), explorer.snapshot.version

    def out_of_memory(*args, **kwargs):
        raise MemoryError("out of memory while indexing")

    monkeypatch.setattr(explorer_setup, "build_pair", out_of_memory)
    explorer.switch_models(base_name, name_of(explorer, inputs["other"]))
    status = wait(explorer)
    assert status.error == "MemoryError: out of memory while indexing"
    assert "failed" in status.line() and "still serves" in status.line()
    assert explorer.snapshot.version == version and answers(explorer) == before
    assert status.emcl.endswith("demo-emcl")

    with pytest.raises(KnobError, match="no checkpoint named"):
        explorer.switch_models("/etc/passwd")  # names only, never a path
    with pytest.raises(KnobError, match="is a base checkpoint"):
        explorer.switch_models(base_name, base_name)
    monkeypatch.undo()  # the next switch may run: the slot was released
    explorer.switch_models(base_name, "none")
    status = wait(explorer)
    assert status.error is None and not explorer.has_joint and status.emcl == "none"
    assert explorer.defaults().mode == "inference"
    assert explorer.snapshot.version == version + 1


def test_two_switches_at_once_one_is_busy(inputs, monkeypatch):
    explorer = load_explorer(inputs["setup"])
    base_name = name_of(explorer, inputs["checkpoints"]["demo-base"])
    gate = threading.Event()
    real = explorer_setup.build_pair
    monkeypatch.setattr(
        explorer_setup, "build_pair", lambda *a, **k: gate.wait(60) and real(*a, **k)
    )
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def attempt() -> None:
        barrier.wait()
        try:
            explorer.switch_models(base_name, "none")
            outcomes.append("started")
        except KnobError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.set()
    wait(explorer)
    assert sorted(outcomes)[0].startswith("busy") and sorted(outcomes)[1] == "started"


def test_an_explorer_built_by_hand_cannot_switch(explorer):
    from emcl.explorer.service import Explorer

    snap = explorer.snapshot
    by_hand = Explorer(snap.base.encoder, snap.base.gallery)
    with pytest.raises(KnobError, match="start-up settings"):
        by_hand.switch_models("demo-base")
    assert by_hand.switch_status().base == "a --model backbone"
