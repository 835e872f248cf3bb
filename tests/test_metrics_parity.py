"""The app's as-trained metrics are the evaluation CLI's numbers, and requests coalesce."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
import torch
from helpers import run_in_threads

from emcl.cli.evaluate import main as evaluate_main
from emcl.core.em import EMCL_NET_DEFAULTS
from emcl.explorer import metrics as metrics_service
from emcl.explorer.knobs import Knobs
from emcl.explorer.latest import LatestWins
from emcl.retrieval.emclnet_table import EmclNetTable

METRICS = ("R1", "R5", "R10", "MdR", "MnR")


def close_to(app_row: dict, cli_row: dict, tol: float = 0.1) -> None:
    for direction in ("t2v", "v2t"):
        for key in METRICS:
            assert app_row[direction][key] == pytest.approx(cli_row[direction][key], abs=tol), (
                direction,
                key,
            )


def test_trained_rows_equal_python_m_emcl_evaluate(explorer_inputs, explorer, tmp_path):
    setup = explorer_inputs["setup"]()
    out = tmp_path / "eval.json"
    argv = [
        "--json", str(out),
        "--data", str(explorer_inputs["world"]),
        "--checkpoint", str(explorer_inputs["checkpoints"]["demo-emcl"]),
        "--base-checkpoint", str(explorer_inputs["checkpoints"]["demo-base"]),
        "--cache", str(setup.features_dir),
        "--no-sweeps", "--quiet",
    ]  # fmt: skip
    assert evaluate_main(argv) == 0
    report = json.loads(out.read_text())
    em = EMCL_NET_DEFAULTS  # the CLI's base+emcl row: the reference initialisation
    knobs = Knobs(
        mode="joint", beta=em.beta, k=em.k, iters=em.iters, lam=em.lam, init=em.init, seed=em.seed
    )
    rows = dict(explorer.metrics(knobs).rows)
    close_to(rows["Base"], report["base"])
    close_to(rows["Base + EMCL at inference"], report["base+emcl"])
    joint = dict(explorer.metrics(explorer.defaults("joint")).rows)  # the checkpoint's own EM
    close_to(joint["EMCL checkpoint + EM (joint)"], report["emcl"])


def test_a_beta_change_reuses_the_em_run(explorer):
    knobs = explorer.defaults("joint")
    explorer.metrics(knobs)
    runs = len(explorer.caches.terms)
    moved = explorer.metrics(replace(knobs, beta=1.5))
    assert len(explorer.caches.terms) == runs  # same (K, T, λ, init, seed): no new EM run
    snap = explorer.snapshot
    scores = metrics_service.similarity(explorer.context, snap, snap.base, replace(knobs, beta=1.5))
    fresh = EmclNetTable(snap.base.sentences, snap.base.frames, keep_geometry=False)
    params = replace(knobs, beta=1.5).params()
    torch.testing.assert_close(scores, fresh.scores(params, explorer.prior(knobs)))
    assert not torch.equal(
        scores, metrics_service.similarity(explorer.context, snap, snap.base, knobs)
    )
    assert moved.rec_ratio == pytest.approx(explorer.metrics(knobs).rec_ratio * 1.5 / 3.0)


def test_rec_ratio_is_reported_and_scales_with_beta(explorer):
    knobs = explorer.defaults("joint")
    for protocol in ("trained", "inference"):
        small = explorer.metrics(replace(knobs, beta=1.0), protocol).rec_ratio
        large = explorer.metrics(replace(knobs, beta=4.0), protocol).rec_ratio
        assert small > 0 and large == pytest.approx(4.0 * small, rel=1e-4)
    assert explorer.metrics(replace(knobs, iters=0)).rec_ratio == 0.0


def test_latest_wins_answers_waiting_callers_with_the_newest_request():
    channel: LatestWins[str] = LatestWins()
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow(name: str):
        def compute() -> str:
            ran.append(name)
            if name == "first":
                started.set()
                release.wait(5)
            return name

        return compute

    answers: dict[str, str] = {}

    def ask(name: str) -> None:
        answers[name] = channel.call(slow(name))

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    started.wait(5)
    waiters = [threading.Thread(target=ask, args=(n,)) for n in ("second", "third")]
    for i, thread in enumerate(waiters):
        thread.start()
        time.sleep(0.1 * (i + 1))  # "third" is the newest request
    release.set()
    for thread in [first, *waiters]:
        thread.join(5)
    assert answers == {"first": "first", "second": "third", "third": "third"}
    assert ran == ["first", "third"]  # "second" never ran: it was superseded


def test_latest_wins_hands_an_error_to_its_callers_and_keeps_serving():
    channel: LatestWins[int] = LatestWins()

    def broken() -> int:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        channel.call(broken)
    assert channel.call(lambda: 3) == 3


def test_concurrent_metrics_requests_all_get_an_answer(explorer):
    knobs = explorer.defaults("joint")
    betas = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    results = []
    errors = run_in_threads(
        len(betas), lambda i: results.append(explorer.metrics(replace(knobs, beta=betas[i])))
    )
    assert errors == [] and len(results) == len(betas)
    for result in results:
        assert result.knobs.beta in betas  # each answer says which knobs it was computed for
        row = dict(result.rows)["Base + EMCL at inference"]
        alone = dict(explorer.metrics(result.knobs).rows)["Base + EMCL at inference"]
        assert row == alone
