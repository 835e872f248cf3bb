"""The Subspaces figure never waits for the test split's grounding: it is computed in the
background (emcl/explorer/latest.py's Jobs on a low-priority Worker) and filled in by a later
poll; the jobs' bookkeeping on its own."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import pytest

from emcl.explorer import subspaces as subspace_service
from emcl.explorer.latest import Jobs, JobState, Worker
from emcl.explorer.results import GroundingAverage
from ui.tabs import subspaces as subspaces_tab

# Knobs no other test grounds with, so the split's grounding starts uncomputed here.
FRESH = {"k": 5, "iters": 4, "lam": 0.02, "init": "data", "seed": 91}


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


@pytest.fixture
def gated(monkeypatch):
    """``gated()`` makes the split's grounding block until ``release`` is set (``started``
    says it began); returns ``(started, release)``."""
    events = threading.Event(), threading.Event()
    real = subspace_service._grounding_average

    def slow(*args, **kwargs):
        events[0].set()
        assert events[1].wait(60), "the test never released the grounding"
        return real(*args, **kwargs)

    def install() -> tuple[threading.Event, threading.Event]:
        monkeypatch.setattr(subspace_service, "_grounding_average", slow)
        return events

    yield install
    events[1].set()


def test_the_figure_comes_before_the_grounding_and_a_later_poll_fills_it(explorer, gated):
    knobs = replace(explorer.defaults("inference"), **FRESH)
    explorer.default_words(knobs)  # the default encoding, fixed per snapshot (warmed at start)
    started, release = gated()
    snap = explorer.snapshot
    video, caption = snap.caption_video[1], snap.captions[1]
    begin = time.perf_counter()
    sub, full, loadings, score, _ = subspaces_tab.draw(explorer, video, caption, "auto", knobs)
    drawn = time.perf_counter() - begin
    assert started.wait(10) and not release.is_set()  # the grounding runs, and is held
    assert sub is not None and full is not None and loadings is not None
    assert "computing in the background" in score and "%" in score
    assert "this pair" in score  # the pair's own grounding is there at once
    assert drawn < 10
    state = explorer.grounding_status(knobs, words="tokens")
    assert isinstance(state, JobState) and state.error is None
    text, again = subspaces_tab.poll(explorer, video, caption, "auto", knobs)
    assert again and "computing in the background" in text
    release.set()
    wait_for(lambda: not subspaces_tab.poll(explorer, video, caption, "auto", knobs)[1])
    text, again = subspaces_tab.poll(explorer, video, caption, "auto", knobs)
    assert not again and "computing" not in text
    for words in ("tokens", "alone"):
        ready = explorer.grounding_status(knobs, words=words)
        assert isinstance(ready, GroundingAverage) and ready.words == words
        assert ready == explorer.grounding_average(knobs, words=words)  # the same numbers
    # β does not enter the links: a β change finds the grounding computed.
    moved = explorer.grounding_status(replace(knobs, beta=knobs.beta + 1.0), words="tokens")
    assert isinstance(moved, GroundingAverage)


def test_asking_twice_runs_the_grounding_once(explorer, monkeypatch):
    calls = []
    real = subspace_service._grounding_average

    def counted(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(subspace_service, "_grounding_average", counted)
    knobs = replace(explorer.defaults("inference"), **{**FRESH, "seed": 92})
    for _ in range(5):
        explorer.grounding_status(knobs, words="alone")
    wait_for(lambda: isinstance(explorer.grounding_status(knobs, words="alone"), GroundingAverage))
    assert calls == ["alone"]


# ---- the background machinery ----------------------------------------------------------------
def test_jobs_report_progress_keep_failures_and_drop_the_oldest_waiting():
    jobs = Jobs(Worker("test-jobs"), waiting=2)
    hold, done = threading.Event(), []

    def blocker(progress):
        progress(0.5, "half way")
        assert hold.wait(30)
        done.append("blocker")

    def job(name):
        return lambda progress: done.append(name)

    assert jobs.start("a", blocker) == JobState()
    wait_for(lambda: jobs.state("a") == JobState(0.5, "half way"))
    assert jobs.start("a", blocker).fraction == 0.5  # running: not queued again
    for name in ("b", "c", "d"):
        jobs.start(name, job(name))
    assert jobs.state("b") is None  # the oldest waiting job was dropped
    assert jobs.state("c") == JobState() and jobs.state("d") == JobState()

    def broken(progress):
        raise ValueError("no ground truth today")

    jobs.start("e", broken)
    assert jobs.state("c") is None  # the next oldest, dropped for it
    hold.set()
    wait_for(lambda: jobs.state("e") is not None and jobs.state("e").error is not None)
    assert done == ["blocker", "d"]
    assert jobs.state("a") is None and jobs.state("d") is None  # finished: forgotten
    assert "ValueError: no ground truth today" in jobs.state("e").error
    assert jobs.start("e", broken).error  # a failure is reported, not retried


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priority is Linux's")
def test_a_worker_runs_below_the_callers_priority_with_its_context():
    import contextvars

    import torch

    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    name = contextvars.ContextVar("name")
    name.set("caller")

    def look() -> tuple[int, str, bool]:
        tid = threading.get_native_id()
        return os.getpriority(os.PRIO_PROCESS, tid), name.get(), torch.is_inference_mode_enabled()

    niceness, seen, inference = Worker("test-nice", nice=5).run(look)
    assert niceness == min(19, here + 5)
    assert seen == "caller" and inference  # Gradio's progress lives in the caller's context
    with pytest.raises(ZeroDivisionError):
        Worker("test-raise").run(lambda: 1 / 0)


def test_a_beta_move_redraws_the_same_figures_from_the_cache(explorer):
    knobs = explorer.defaults("inference")
    snap = explorer.snapshot
    video, caption = snap.caption_video[3], snap.captions[3]
    first = subspaces_tab.draw(explorer, video, caption, "auto", knobs)
    moved = replace(knobs, beta=knobs.beta + 2.0)
    again = subspaces_tab.draw(explorer, video, caption, "auto", moved)
    assert again[:3] == first[:3] and again[0] is first[0]  # served from the cache
    fresh = explorer.align(video, caption, moved, words=explorer.default_words(moved))
    drawn = subspaces_tab._figures(explorer, video, "", fresh, "auto")
    assert [d.plot for d in drawn] == [f.plot for f in again[:3]]  # what a new drawing gives
    assert again[3] != first[3]  # the EM line names the new β's size
