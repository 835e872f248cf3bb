"""What makes the as-trained table fast, as behaviour: a β change runs no EM, an EM run waits
on nothing (on a GPU), fp32 and fp64 tables agree, and the bench functions the GPU script
calls run at toy sizes (bench/table_bench.py)."""

from __future__ import annotations

import pytest
import torch

import emcl.retrieval.emclnet_table as table_module
from bench.table_bench import synthetic_inputs, table_parity, time_device_search, time_table
from emcl.core.em import EMParams
from emcl.retrieval.emclnet_table import EmclNetTable

PARAMS = EMParams(k=8, iters=4, lam=0.5, beta=3.0, init="data", seed=2)


def test_a_beta_change_runs_no_em(monkeypatch):
    text, frames = synthetic_inputs(70, num_frames=4, dim=16)
    table = EmclNetTable(text, frames)
    terms = table.terms(PARAMS)
    first = terms.scores(1.0)

    def no_em(*args, **kwargs):
        raise AssertionError("a β change must not run the EM")

    monkeypatch.setattr(table_module, "em_responsibilities", no_em)
    for beta in (0.0, 2.0, 7.5):
        scores = terms.scores(beta)
        assert scores.shape == (70, 70) and torch.isfinite(scores).all()
    torch.testing.assert_close(terms.scores(0.0), table.base_scores())
    assert not torch.equal(terms.scores(2.0), first)


def test_fp32_and_fp64_tables_agree_to_a_tenth_of_a_point():
    text, frames = synthetic_inputs(96, num_frames=6, dim=32)
    parity = table_parity(text, frames, params=PARAMS, device="cpu", dtype=torch.float64)
    assert parity["within_0.1_point"] and parity["r1_max_diff_points"] <= 0.1
    assert parity["em"]["max_abs_score_diff"] < 1e-4
    assert parity["no_em"]["cpu_r1"]["t2v"] > 10.0  # the synthetic captions do find their clip


def test_bench_functions_report_what_they_measured():
    text, frames = synthetic_inputs(40, num_frames=3, dim=16)
    timed = time_table(text, frames, params=PARAMS, repeat=2)
    assert timed["device"] == "cpu" and timed["em_change"]["n"] == 2
    assert 0 < timed["em_change"]["min_ms"] <= timed["em_change"]["p95_ms"]
    search = time_device_search(3000, 16, device="cpu", queries=3, shortlist=8, params=PARAMS)
    assert search["query_with_rerank"]["n"] == 3 and search["videos"] == 3000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_em_run_on_a_gpu_never_waits_on_the_host():
    text, frames = synthetic_inputs(200, num_frames=12, dim=64)
    table = EmclNetTable(text.cuda(), frames.cuda())
    # A prior already on the GPU: the reference and data inits copy their K values or columns
    # from the host once per run, before the iterations.
    params, prior = EMParams(k=8, iters=9, init="prior"), torch.linspace(-1, 1, 8).cuda()[None]
    table.terms(params, prior)  # first call: allocator and kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        table.terms(params, prior).scores(params.beta)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_text_terms_by_column_and_rec_ratio_are_the_plain_computation():
    # 70 videos: two full video blocks of 32 and a short last block of 6.
    text, frames = synthetic_inputs(70, num_frames=4, dim=16)
    table = EmclNetTable(text, frames)
    terms = table.terms(PARAMS)
    by_column = terms._text_by_column
    for got, values in zip(by_column, (terms.text_cross, terms.text_rec_sq), strict=True):
        assert torch.equal(got, values[:, table.column_block])  # the gather it replaces
    _, pooled_sq, text_sq = table.pairs
    ratios = torch.cat(
        [(terms.pooled_rec_sq / pooled_sq).flatten(), (terms.text_rec_sq / text_sq).flatten()]
    )
    for beta in (0.5, 3.0):  # the median is kept across β: a β change only scales it
        assert terms.rec_ratio(beta) == beta * float(ratios.median().clamp(min=0).sqrt())
