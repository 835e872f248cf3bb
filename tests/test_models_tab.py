"""The Models tab: pickers offer the checkpoints that load, the table lists refused folders with
their reason, the tab builds and wires, a switch started from its handler is polled to the end."""

from __future__ import annotations

import dataclasses
import time

import gradio as gr
import pytest
from test_checkpoint_catalog import tiny_checkpoint

from emcl.explorer.checkpoints import NONE
from emcl.explorer.latest import JobState
from emcl.explorer.setup import load_explorer
from emcl.model.config import EMCLConfig
from ui.tabs import models


@pytest.fixture(scope="module")
def explorer(explorer_inputs, tmp_path_factory):
    mine = tmp_path_factory.mktemp("mine")
    tiny_checkpoint(mine / "other-emcl", 101, EMCLConfig(k=16, beta=2.0))
    (mine / "foreign").mkdir()
    (mine / "foreign" / "readme.txt").write_text("not a checkpoint")
    setup = dataclasses.replace(explorer_inputs["setup"](), checkpoint_dirs=(mine,))
    return load_explorer(setup)


def test_pickers_offer_only_checkpoints_that_load(explorer):
    found = models.pickers(explorer)
    offered = {value for _, value in found.base_choices}
    names = [row[0] for row in found.rows]
    refused = [row for row in found.rows if row[5].startswith("refused")]
    assert refused and all(row[0] not in offered for row in refused)
    assert any(name.endswith("/foreign") for name in (row[0] for row in refused))
    assert found.emcl_choices[0][1] == NONE
    joint = {value for _, value in found.emcl_choices[1:]}
    assert any(name.endswith("/other-emcl") for name in joint) and joint <= offered
    assert found.base is not None and found.base in offered  # the served pair is selected
    assert found.emcl in joint and len(names) == len(set(names))


def test_evaluation_view_states():
    line, table, again = models.evaluation_view(JobState(0.5, "‡ run: encoding"))
    assert "50%" in line and table == [] and again
    line, table, again = models.evaluation_view(JobState(1.0, "failed", "OSError: gone"))
    assert "failed" in line and "OSError: gone" in line and not again


def test_the_tab_builds_wires_and_switches(explorer, monkeypatch):
    import threading

    import emcl.explorer.setup as explorer_setup

    gate, real = threading.Event(), explorer_setup.build_pair
    monkeypatch.setattr(
        explorer_setup, "build_pair", lambda *a, **k: gate.wait(60) and real(*a, **k)
    )
    with gr.Blocks() as demo:
        header = gr.Markdown("")
        tab = models.build(explorer)
        models.wire(tab, explorer, header)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"switch_models", "evaluate_pair"} <= names
    assert tab.poll.active is False  # nothing to poll until a switch starts

    switch = next(fn.fn for fn in demo.fns.values() if fn.api_name == "switch_models")
    other = next(value for _, value in models.pickers(explorer).emcl_choices if "other" in value)
    base = models.pickers(explorer).base
    line, timer = switch(base, other)
    assert "switching" in line and timer.active
    with pytest.raises(gr.Error, match="busy"):
        switch(base, NONE)
    gate.set()
    end = time.monotonic() + 300
    while explorer.switch_status().running:
        assert time.monotonic() < end
        time.sleep(0.05)
    status = explorer.switch_status()
    assert status.error is None and status.emcl.endswith("other-emcl")
    assert "trained K 16" in models.summary(explorer)
    assert models.pickers(explorer).emcl == other  # the pickers follow the served pair
