"""Steady under load: a search never waits behind a metrics run (in the service and through
the served app's concurrency groups), and the load test's client logic counts requests,
errors and latencies as they happened (bench/load_test.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from gradio_client import Client

from bench import load_test
from emcl.explorer import metrics as metrics_service


@pytest.fixture
def held_metrics(monkeypatch):
    """Every metrics run blocks until ``release`` is set; ``started`` says one began."""
    started, release = threading.Event(), threading.Event()
    real = metrics_service._metrics

    def slow(*args, **kwargs):
        started.set()
        assert release.wait(60), "the test never released the metrics run"
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics_service, "_metrics", slow)
    yield started, release
    release.set()


def test_a_search_returns_while_a_metrics_run_is_in_flight(explorer, held_metrics):
    started, release = held_metrics
    knobs = explorer.defaults("joint")
    explorer.rank("a red circle moves to the left", knobs)  # query encodings cached
    answers = []
    runs = [
        threading.Thread(
            target=lambda b=b: answers.append(explorer.metrics(replace(knobs, beta=b)))
        )
        for b in (1.0, 2.0)
    ]
    runs[0].start()
    assert started.wait(30)
    runs[1].start()  # waits for the run in flight (latest wins)
    result = explorer.rank("a red circle moves to the left", knobs)
    assert result.base and result.emcl
    assert not answers and all(run.is_alive() for run in runs)  # the metrics still held
    release.set()
    for run in runs:
        run.join(60)
    assert len(answers) == 2 and {a.knobs.beta for a in answers} <= {1.0, 2.0}


def test_rank_is_served_while_metrics_requests_hold_their_group(served_app, held_metrics):
    started, release = held_metrics
    client = Client(served_app["url"], verbose=False)
    named = {"mode": "inference", "beta": 1.0, "k": 7, "iters": 10, "lam": 0.1, "init": "data"}
    held = [client.submit(**{**named, "beta": b}, api_name="/metrics") for b in (1.0, 2.0, 3.0)]
    assert started.wait(30)
    begin = time.perf_counter()
    reply = client.predict(**load_test.rank_args(load_test.random.Random(0)), api_name="/rank")
    assert reply["base"] and time.perf_counter() - begin < 30
    assert not any(job.done() for job in held)  # three metrics calls held, the search served
    release.set()
    for job in held:
        assert len(job.result(timeout=60)["rows"]) >= 2


# ---- the load test's client logic ------------------------------------------------------------
def test_timed_call_and_summary_count_what_happened(monkeypatch):
    tally = load_test.Tally()
    clock = iter([0.0, 0.10, 1.0, 1.30, 2.0, 2.05, 3.0, 3.50])
    monkeypatch.setattr(load_test.time, "perf_counter", lambda: next(clock))

    def fail():
        raise RuntimeError("queue full")

    assert load_test.timed_call(tally, "/rank", lambda: {"x": 1}, lambda r: True) == {"x": 1}
    assert load_test.timed_call(tally, "/rank", lambda: {}, lambda r: False) is None
    assert load_test.timed_call(tally, "/metrics", fail, lambda r: True) is None
    load_test.timed_call(tally, "/metrics", lambda: 1, lambda r: True)
    summary = load_test.summarise(tally.records, seconds=4.0)
    assert summary["/rank"] == {
        "requests": 2, "ok": 1, "p50_ms": 100.0, "p95_ms": 100.0, "max_ms": 100.0,
    }  # fmt: skip
    assert summary["/metrics"]["requests"] == 2 and summary["/metrics"]["max_ms"] == 500.0
    assert summary["/align"]["requests"] == 0 and summary["/align"]["p95_ms"] is None
    assert summary["errors"] == 2 and summary["requests_per_s"] == 1.0
    assert summary["first_errors"] == [
        "/rank: unexpected answer",
        "/metrics: RuntimeError: queue full",
    ]


def test_the_mix_is_parsed_and_checked():
    assert load_test.parse_mix("rank=7,metrics=2,align=1") == pytest.approx(
        {"/rank": 0.7, "/metrics": 0.2, "/align": 0.1}
    )
    for bad in ("rank=1,maps=1", "", "rank=0", "rank=-1,metrics=2"):
        with pytest.raises(ValueError):
            load_test.parse_mix(bad)


def test_a_short_mixed_run_against_the_app_counts_every_request(served_app, monkeypatch):
    mix = load_test.parse_mix(load_test.DEFAULT_MIX)
    good = load_test.run_load(served_app["url"], clients=3, seconds=4, mix=mix)
    counted = sum(good[e]["requests"] for e in load_test.ENDPOINTS)
    assert good["errors"] == 0 and counted >= 6
    for endpoint in load_test.ENDPOINTS:
        if good[endpoint]["requests"]:
            assert good[endpoint]["ok"] == good[endpoint]["requests"]
            assert 0 < good[endpoint]["p50_ms"] <= good[endpoint]["p95_ms"]
            assert good[endpoint]["p95_ms"] <= good[endpoint]["max_ms"]
    # Every other search refused by the server (β out of range): counted as errors, by name.
    real, calls = load_test.rank_args, []

    def half_bad(rng):
        calls.append(1)
        return {**real(rng), "beta": -1.0} if len(calls) % 2 else real(rng)

    monkeypatch.setattr(load_test, "rank_args", half_bad)
    bad = load_test.run_load(served_app["url"], clients=2, seconds=3, mix={"/rank": 1.0})
    assert bad["/rank"]["requests"] == len(calls) >= 2
    assert bad["errors"] == len(calls) - bad["/rank"]["ok"] >= 1
    assert all("beta" in message for message in bad["first_errors"])
