"""GPU suite, section ``explorer``: the explorer service's as-trained table and search on the
device under test and on the same machine's CPU, in one run (issue 18, point 3).

Per device: the demo checkpoints over a synthetic gallery of the demo's shape (1,000 videos ×
12 frames × D 128, one caption each; bench/gpu_common.py), then what the page calls: the
as-trained Metrics table after K/T/λ/init/seed changes and after β changes, searches (a bank
caption, answered from the table, and free text) and one Subspaces alignment; and the EMCL
checkpoint's table engine timed alone on the device, where the service may keep its features
elsewhere. On the device under test also: the reference 1K × 1K evaluation at D = 512 in both
protocols.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from bench.gpu_common import (
    SuiteRun,
    captions,
    percentiles_ms,
    synthetic_gallery,
    time_calls,
    timed_once,
    until,
)
from bench.table_bench import time_table
from emcl.core.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS
from emcl.core.protocols import INFERENCE, TRAINED
from emcl.data.datasets import VideoRecord
from emcl.data.gallery import Gallery, GalleryReport
from emcl.model.model import mean_video
from emcl.retrieval.blocks import similarity_matrix

# One K/T/λ/init/seed change each (a new EM run, never a cached one), then β changes alone.
EM_CHANGES = (
    {"iters": 10},
    {"lam": 0.5},
    {"init": "reference"},
    {"init": "data", "seed": 1},
    {"init": "data", "seed": 1, "k": 16},
    {"iters": 8},
)
BETAS = (2.0, 2.5, 3.5, 4.0, 5.0)
SERIES_S = 5.0  # a series of repeated calls stops after this long (at least two calls)


def _gallery(encoder, name: str, n: int, num_frames: int) -> Gallery:
    """A gallery of ``n`` synthetic videos whose captions ``encoder`` embeds (module doc)."""
    synthetic = synthetic_gallery(encoder, n, num_frames)
    ids = [f"synthetic{i:05d}" for i in range(n)]
    records = [
        VideoRecord(v, Path(f"synthetic/{v}.mp4"), [c], "test")
        for v, c in zip(ids, synthetic.captions, strict=True)
    ]
    return Gallery(
        video_ids=ids,
        records=records,
        frame_embeddings=synthetic.frames,
        video_embeddings=mean_video(synthetic.frames).half(),
        report=GalleryReport(total=n, extracted=n),
        fingerprint=f"synthetic-{name}-{encoder.fingerprint}",
        settings={"synthetic": True},
    )


def _explorer(run: SuiteRun, device: torch.device, n: int):
    from emcl.explorer.service import Explorer  # imports faiss (emcl/retrieval/ann.py)

    base, emcl = run.encoders(device)
    frames = 12
    galleries = [_gallery(e, name, n, frames) for e, name in ((base, "base"), (emcl, "emcl"))]
    return Explorer(base, galleries[0], emcl, galleries[1])


def _timed(calls, device: torch.device, seconds: float) -> list[float]:
    """Seconds of each call in ``calls`` (thunks) until ``seconds`` have passed (at least 2)."""
    return [timed_once(call, device)[0] for call in until(seconds, calls)]


def _metrics_times(explorer, device: torch.device, smoke: bool, out: dict) -> None:
    """The as-trained table as the Metrics tab asks for it, into ``out`` as it goes."""
    knobs = explorer.defaults("joint")
    out["knobs"] = knobs.to_dict()
    out["table_build_s"] = round(timed_once(explorer.warm_up, device)[0], 4)
    first_s, table = timed_once(lambda: explorer.metrics(knobs), device)
    out["metrics_first_s"] = round(first_s, 4)
    out["rows_at_defaults"] = dict(table.rows)
    changes = EM_CHANGES[:2] if smoke else EM_CHANGES
    calls = [lambda c=c: explorer.metrics(replace(knobs, **c)) for c in changes]
    em_times = _timed(calls, device, SERIES_S)
    out["metrics_em_change"] = percentiles_ms(em_times) | {"changes": changes[: len(em_times)]}
    point = replace(knobs, **changes[len(em_times) - 1])  # its EM run is cached: β alone
    calls = [lambda b=b: explorer.metrics(replace(point, beta=b)) for b in BETAS]
    out["metrics_beta_change"] = percentiles_ms(_timed(calls[: 2 if smoke else None], device, 5))


def _search_times(explorer, device: torch.device, smoke: bool, out: dict) -> None:
    """Searches (a bank caption, free text) and one alignment, into ``out`` as it goes."""
    knobs = explorer.defaults("joint")
    bank = list(explorer.snapshot.captions)
    n = 3 if smoke else 20
    queries = bank[:: max(1, len(bank) // n)][:n]
    explorer.rank(queries[-1], knobs)  # warm-up
    calls = [lambda q=q: explorer.rank(q, knobs) for q in queries]
    out["search_bank_caption"] = percentiles_ms(_timed(calls, device, SERIES_S))
    free = [c for c in captions(2 * n + 1, seed=7) if c not in set(bank)][:n]
    calls = [lambda q=q: explorer.rank(q, knobs) for q in free]
    out["search_free_text"] = percentiles_ms(_timed(calls, device, SERIES_S))
    out["search_em_run"] = getattr(explorer.rank(free[0], knobs), "em_run", None)
    video = explorer.snapshot.caption_video[0]
    calls = [lambda: explorer.align(video, bank[0], knobs, words="tokens")] * n
    out["align"] = percentiles_ms(_timed(calls, device, SERIES_S))


def _table_alone(explorer, device: torch.device, smoke: bool) -> dict:
    """The EMCL checkpoint's as-trained table engine on ``device``: build, EM change, β change
    (bench/table_bench.py's timing, on this gallery's features)."""
    view = explorer.snapshot.emcl
    return time_table(
        view.sentences.to(device),
        view.frames.float(),
        params=explorer.defaults("joint").params(),
        prior=view.prior,
        temperature=view.encoder.config.frame_temp,
        repeat=2 if smoke else 5,
    )


def reference_evaluation(device: torch.device, n: int, dim: int, repeat: int) -> dict:
    """The reference 1K × 1K evaluation with EMCL at ViT-B/32's D = 512, 12 frames, random
    features, in both protocols' blocks (``python -m emcl evaluate``'s computation)."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(n, dim, generator=g).to(device)
    frames = torch.randn(n, 12, dim, generator=g).to(device)
    settings = {
        TRAINED: (EMCL_NET_DEFAULTS, {"frames": frames}),
        INFERENCE: (INFERENCE_MODULE_DEFAULTS, {"videos": frames.mean(dim=1)}),
    }
    out: dict[str, object] = {"texts": n, "videos": n, "dim": dim}
    for protocol, (params, inputs) in settings.items():

        def score(params=params, inputs=inputs, protocol=protocol) -> torch.Tensor:
            return similarity_matrix(text, params=params, protocol=protocol, **inputs)

        out[protocol] = percentiles_ms(time_calls(score, device, repeat))
        out[f"{protocol}_finite"] = bool(score().isfinite().all())
    return out


def _where(explorer) -> dict[str, str]:
    """Where the service keeps what the table and search read."""
    view = explorer.snapshot.emcl
    return {
        "sentences": str(view.sentences.device),
        "frames": str(view.frames.device),
        "index": str(view.index.embeddings.device),
    }


def explorer_section(run: SuiteRun) -> dict:
    """Section (a): the service on each device (module doc)."""
    n = run.pick(1000, 64)
    out = run.output
    out |= {"videos": n, "captions": n, "frames": 12, "dim": 128}
    dim, repeat = run.pick((512, 3), (32, 1))
    out["reference_evaluation"] = reference_evaluation(run.device, n, dim, repeat)
    for device in run.devices:
        setup_s, explorer = timed_once(lambda d=device: _explorer(run, d, n), device)
        part = out[device.type] = {"setup_s": round(setup_s, 3), "features_on": _where(explorer)}
        _metrics_times(explorer, device, run.smoke, part)
        _search_times(explorer, device, run.smoke, part)
        part["table_alone"] = _table_alone(explorer, device, run.smoke)
    if len(run.devices) > 1:
        rows = [out[d.type]["rows_at_defaults"] for d in run.devices]
        out["max_abs_metric_difference"] = max(
            abs(rows[0][label][d][m] - rows[1][label][d][m])
            for label in rows[0]
            for d in ("t2v", "v2t")
            for m in rows[0][label][d]
        )
    return out


__all__ = ["explorer_section"]
