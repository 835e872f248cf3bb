"""The one sweep engine (emcl/evaluation/sweep.py) against a plain loop written here, with
EMParams (the evaluation) and Knobs (the app) as the setting, and its JSON form."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from emcl.core.em import EMParams
from emcl.core.protocols import INFERENCE, TRAINED
from emcl.evaluation.sweep import Curve, Sweep, run_sweep
from emcl.explorer.knobs import Knobs
from emcl.retrieval.blocks import similarity_matrix
from emcl.retrieval.metrics import retrieval_metrics

GEN = torch.Generator().manual_seed(11)
TEXT = torch.randn(24, 16, generator=GEN)
FRAMES = TEXT[:, None, :] + 4.0 * torch.randn(24, 4, 16, generator=GEN)  # caption i: video i
VIDEOS = torch.nn.functional.normalize(FRAMES.mean(dim=1), dim=-1)
SETTING = EMParams(k=4, iters=3, lam=0.05, beta=2.0, init="data", seed=5)


def trained(params: EMParams | None) -> dict:
    sim = similarity_matrix(TEXT, frames=FRAMES, params=params, protocol=TRAINED, block_texts=8,
                            block_videos=8)  # fmt: skip
    return retrieval_metrics(sim)


def inference(params: EMParams | None) -> dict:
    text = torch.nn.functional.normalize(TEXT, dim=-1)
    sim = similarity_matrix(text, videos=VIDEOS, params=params, protocol=INFERENCE)
    return retrieval_metrics(sim)


def test_run_sweep_equals_a_plain_loop_over_the_values():
    values = [1, 2, 5, 8]
    calls: list[tuple[float, str]] = []
    sweep = run_sweep(
        "k",
        values,
        {"trained": Curve(SETTING, trained, "base"), "inference": Curve(SETTING, inference)},
        lambda share, text: calls.append((share, text)),
    )
    by_hand_trained, by_hand_inference = [], []
    for k in values:
        params = EMParams(k=k, iters=3, lam=0.05, beta=2.0, init="data", seed=5)
        by_hand_trained.append(trained(params))
        by_hand_inference.append(inference(params))
    assert sweep.knob == "k" and sweep.values == [1.0, 2.0, 5.0, 8.0]
    assert sweep.series == {"trained": by_hand_trained, "inference": by_hand_inference}
    assert sweep.reference == {"base": trained(None)}  # the inference curve has none
    assert by_hand_trained[0] != by_hand_trained[-1]  # the knob matters at this setting
    assert by_hand_inference[0] != by_hand_inference[-1]
    # curve by curve: the first curve fills the first half of the bar
    assert calls == [((n + i / 4) / 2, f"k = {k}") for n in range(2) for i, k in enumerate(values)]


def test_a_curve_measured_beside_equals_the_plain_loop():
    """With ``beside`` the second curve runs on another thread, all its values in one job; the
    series are the plain loop's and only the first curve reports progress."""
    values = [1, 2, 5, 8]
    threads: dict[str, set[str]] = {"trained": set(), "inference": set()}

    def on_thread(label, measure):
        def run(params):
            threads[label].add(threading.current_thread().name)
            return measure(params)

        return run

    calls: list[tuple[float, str]] = []
    curves = {
        "trained": Curve(SETTING, on_thread("trained", trained), "base"),
        "inference": Curve(SETTING, on_thread("inference", inference)),
    }
    with ThreadPoolExecutor(1, "beside") as pool:
        sweep = run_sweep("k", values, curves, lambda *call: calls.append(call), pool.submit)
    plain = run_sweep("k", values, {"trained": Curve(SETTING, trained, "base"),
                                    "inference": Curve(SETTING, inference)})  # fmt: skip
    assert sweep == plain
    assert threads["trained"] == {threading.current_thread().name}
    assert len(threads["inference"]) == 1 and threads["inference"].pop().startswith("beside")
    assert calls == [(i / 4, f"k = {k}") for i, k in enumerate(values)]


def test_knobs_sweep_like_their_emparams():
    knobs = Knobs(mode="inference", em=SETTING, context="gallery", top_k=3)
    seen: list[Knobs] = []

    def measure(point: Knobs | None) -> dict:
        seen.append(point)
        return inference(None if point is None else point.em)

    sweep = run_sweep("lam", [0.01, 0.1, 1.0], {"app": Curve(knobs, measure, "no EM")})
    plain = run_sweep("lam", [0.01, 0.1, 1.0], {"app": Curve(SETTING, inference, "no EM")})
    assert sweep == plain
    assert [p.lam for p in seen[:-1]] == [0.01, 0.1, 1.0] and seen[-1] is None
    assert all(p.context == "gallery" and p.top_k == 3 and p.k == 4 for p in seen[:-1])


def test_whole_number_knobs_are_sent_as_int_and_the_json_form_round_trips():
    got: list[object] = []
    sweep = run_sweep("iters", [0.0, 2.0], {"x": Curve(SETTING, lambda p: got.append(p) or {})})
    assert [p.iters for p in got] == [0, 2] and all(isinstance(p.iters, int) for p in got)
    assert sweep.reference == {}
    full = run_sweep("beta", [0.0, 3.0], {"m": Curve(SETTING, trained, "base")})
    assert Sweep.from_json(json.loads(json.dumps(full.to_json()))) == full
