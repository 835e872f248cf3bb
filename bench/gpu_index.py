"""GPU suite, section ``index``: indexing 1,000 demo-like clips with the GPU (issue 18, point 3:
≤ 10 s, decoding in parallel across the cores, the backbone batched on the GPU).

Which decoding stack the machine has decides what is measured, and the JSON says which:

- ``project``: PyAV is there, so the clips are written as H.264 and indexed by
  ``build_gallery`` itself (guarded decoder pool, cache writes), end to end;
- ``opencv``: only OpenCV decodes (the bare CUDA machines: no PyAV, decord or ffprobe). The
  clips are written as MPEG-4 with OpenCV and decoded by a pool of one process per core
  (bench/gpu_decode.py); timed apart and pipelined with the demo model's encoder, batched on
  the device. The project's guarded decoder and its cache writes are not measured;
- ``none``: no decoder: the batched backbone alone on synthetic decoded frames.

Beside it, the backbone at CLIP's scale: ViT-B/32 (random weights) frame embeddings per
second under the gallery encoder's autocast, the figure the path to 100M videos is sized with
(docs/design.md, "Galleries of millions").
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.gpu_common import STACKS, SuiteRun, percentiles_ms, time_calls, timed_once
from bench.gpu_decode import decode_clip, demo_like_frames, write_clip
from bench.gpu_parity import smooth_clips
from emcl.model.config import DEMO_BACKBONE, ModelConfig
from emcl.model.model import EMCLRetrievalModel

BATCH = 256  # clips per encoder call


def stack_facts() -> dict[str, bool]:
    """Which decoding pieces this machine has."""
    has = {m: importlib.util.find_spec(m) is not None for m in ("av", "decord", "cv2")}
    return has | {"ffprobe": shutil.which("ffprobe") is not None}


def pick_stack(choice: str) -> str:
    """The stack to measure: ``choice``, or with ``auto`` the fullest one here."""
    if choice not in STACKS:
        raise ValueError(f"index decoder must be one of {STACKS}, got {choice!r}")
    if choice != "auto":
        return choice
    facts = stack_facts()
    return "project" if facts["av"] else "opencv" if facts["cv2"] else "none"


def _encode(encoder, clips: np.ndarray) -> None:
    encoder.encode_videos(clips, batch_size=BATCH)


def _project(run: SuiteRun, n: int, folder: Path) -> dict:
    from emcl.data.datasets import VideoRecord
    from emcl.data.gallery import build_gallery
    from emcl.video.writing import write_video

    paths = [folder / f"clip{i:05d}.mp4" for i in range(n)]
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # not timed
        list(pool.map(lambda i: write_video(paths[i], demo_like_frames(i), 12), range(n)))
    records = [VideoRecord(p.stem, p, [], "test") for p in paths]
    _, encoder = run.encoders(run.device)
    seconds, gallery = timed_once(
        lambda: build_gallery(records, encoder, folder / "cache", progress=False), run.device
    )
    return {
        "index_s": round(seconds, 3),
        "clips_per_s": round(n / seconds, 1),
        "indexed": gallery.report.indexed,
        "skipped": len(gallery.report.skipped),
        "measured": ["build_gallery end to end: guarded decode, batched encoder, cache writes"],
        "not_measured": [],
    }


def _opencv(run: SuiteRun, n: int, folder: Path, out: dict) -> None:
    _, encoder = run.encoders(run.device)
    paths = [str(folder / f"clip{i:05d}.mp4") for i in range(n)]
    workers = os.cpu_count() or 1
    out["workers"] = workers
    out["measured"] = [
        "OpenCV decode of MPEG-4 clips in a pool of one process per core",
        "the demo model's encoder batched on the device (Encoder.encode_videos)",
        "both pipelined: decoded clips feed encoder batches as they arrive",
    ]
    out["not_measured"] = ["the project's guarded decoder (it needs PyAV, or decord and ffprobe)",
                           "H.264 decoding", "gallery cache writes and file hashing"]  # fmt: skip
    # forkserver: one fresh process imports the suite, then each worker forks from it (no
    # CUDA state inherited, and not one torch import per core as with spawn).
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(write_clip, [(p, i) for i, p in enumerate(paths)], chunksize=4)  # not timed
        serial = [timed_once(lambda p=p: decode_clip(p), run.device)[0] for p in paths[:20]]
        out["decode_one_clip_one_core"] = percentiles_ms(serial)
        decode_s, decoded = timed_once(lambda: pool.map(decode_clip, paths, 4), run.device)
        out["decode_parallel_s"] = round(decode_s, 3)
        clips = np.stack(decoded)
        _encode(encoder, clips[:BATCH])  # warm-up
        out["encode_batched_s"] = round(
            timed_once(lambda: _encode(encoder, clips), run.device)[0], 3
        )

        def pipelined() -> None:
            batch = []
            for clip in pool.imap(decode_clip, paths, chunksize=4):
                batch.append(clip)
                if len(batch) == BATCH:
                    _encode(encoder, np.stack(batch))
                    batch = []
            if batch:
                _encode(encoder, np.stack(batch))

        index_s, _ = timed_once(pipelined, run.device)
    out["index_s"] = round(index_s, 3)
    out["clips_per_s"] = round(n / index_s, 1)


def _backbone(run: SuiteRun, n: int) -> dict:
    _, encoder = run.encoders(run.device)
    clips = smooth_clips(n, 12, 128).numpy()
    _encode(encoder, clips[:BATCH])  # warm-up
    encode_s, _ = timed_once(lambda: _encode(encoder, clips), run.device)
    return {
        "encode_batched_s": round(encode_s, 3),
        "clips_per_s": round(n / encode_s, 1),
        "measured": ["the demo model's encoder batched on the device, synthetic decoded frames"],
        "not_measured": ["decoding (no decoder on this machine)", "gallery cache writes"],
    }


def vit_frame_embedding(run: SuiteRun) -> dict:
    """Frames per second through ViT-B/32 (the demo backbone at toy sizes), inference."""
    backbone, n = run.pick(("ViT-B-32", 3072), (DEMO_BACKBONE, 24))
    model = EMCLRetrievalModel(ModelConfig(backbone=backbone)).to(run.device).eval()
    size = model.image_size
    pixels = torch.randn(n // 12, 12, 3, size, size, device=run.device)
    # The gallery encoder's default precision: bf16 autocast on a GPU, fp32 on the CPU
    # (emcl/model/encoder.py).
    amp = torch.bfloat16 if run.device.type == "cuda" else None

    def embed() -> None:
        with torch.inference_mode(), torch.autocast(run.device.type, amp, enabled=bool(amp)):
            model.encode_frames(pixels)

    times = time_calls(embed, run.device, repeat=3)
    seconds = sorted(times)[1]
    return {
        "backbone": backbone,
        "frames": n,
        "autocast": str(amp),
        "seconds": round(seconds, 4),
        "frames_per_s": round(n / seconds, 1),
    }


def index_section(run: SuiteRun) -> dict:
    """Section (e): indexing with the decoding stack this machine has (module doc)."""
    n = run.pick(1000, 8)
    chosen = pick_stack(run.options.get("index_decoder", "auto"))
    out = run.output
    out |= {
        "clips": n,
        "frames_per_clip": 12,
        "stack": chosen,
        "stack_facts": stack_facts(),
        "cpu_count": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="gpu-suite-index-") as tmp:
        if chosen == "project":
            out |= _project(run, n, Path(tmp))
        elif chosen == "opencv":
            _opencv(run, n, Path(tmp), out)
        else:
            out |= _backbone(run, n)
    out["vit_frame_embedding"] = vit_frame_embedding(run)
    if run.device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**30, 2)
    return out


__all__ = ["index_section", "pick_stack", "stack_facts"]
