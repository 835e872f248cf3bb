"""GPU check for the reference-scale setting, run by hand on a lent GPU (no downloads needed):

    python bench/gpu_check.py                      # CUDA, ViT-B-32 with random weights
    python bench/gpu_check.py --smoke --device cpu # tiny sizes, for the test suite

Times, with ViT-B-32 random weights (the timings do not depend on the weights' values):
1. frame-embedding throughput under fp16 autocast (frames/s, inference);
2. one training step at batch 128 x 12 frames with AMP: encode, seqTransf, EMCL-Net logits with
   the EM on the global-batch matrix (128 * 128 + 128 = 16,512 rows x 512), symmetric InfoNCE,
   backward, optimiser step;
3. the EM on a 1K x 1K evaluation in the block protocol (emcl/retrieval/blocks.py
   ``similarity_matrix``: EMCL-Net 32 x 32 blocks and the inference module's 64 x 64 blocks).
Prints one JSON line with the figures and the device name. Finishes in well under 4 minutes on an
H100; if the training step runs out of memory it is retried with gradient checkpointing.

A GPU machine without open_clip (and no internet): bundle the pure-Python dependencies here, carry
the folder along and point the script at it (it is appended to ``sys.path``, so packages already
installed there win):

    python bench/gpu_check.py --bundle .cache/gpu_deps        # here: copies open_clip, ftfy, ...
    python bench/gpu_check.py --deps .cache/gpu_deps          # there
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

# What open_clip (and emcl) import that a bare CUDA image may lack; all importable from a folder.
BUNDLE = ("open_clip", "ftfy", "wcwidth", "regex", "huggingface_hub", "safetensors", "tqdm",
          "filelock", "fsspec", "yaml", "_yaml", "requests", "urllib3", "idna", "certifi",
          "charset_normalizer", "typing_extensions", "packaging")  # fmt: skip


def bundle(target: Path) -> None:
    """Copy the installed :data:`BUNDLE` packages to ``target`` (for ``--deps`` elsewhere)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        source = Path(spec.origin)
        if source.name == "__init__.py":
            shutil.copytree(source.parent, target / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / source.name)


if "--deps" in sys.argv[:-1]:  # before the imports below need them
    sys.path.append(str(Path(sys.argv[sys.argv.index("--deps") + 1]).resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from emcl.core.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS, EMParams  # noqa: E402
from emcl.core.protocols import INFERENCE, PROTOCOLS, TRAINED  # noqa: E402
from emcl.model.config import DEMO_BACKBONE, ModelConfig  # noqa: E402
from emcl.model.loss import contrastive_loss  # noqa: E402
from emcl.model.model import EMCLRetrievalModel  # noqa: E402
from emcl.retrieval.blocks import similarity_matrix  # noqa: E402
from emcl.retrieval.index import GalleryIndex  # noqa: E402
from emcl.retrieval.ranking import rank_query  # noqa: E402
from emcl.training.loop import step_loss  # noqa: E402
from emcl.training.optim import build_optimizer  # noqa: E402
from emcl.training.presets import PRESETS  # noqa: E402

FULL = {"backbone": "ViT-B-32", "batch": 128, "frames": 12, "n_eval": 1000, "embed_frames": 3072}
SMOKE = {"backbone": DEMO_BACKBONE, "batch": 4, "frames": 2, "n_eval": 32, "embed_frames": 16}


def timed(
    fn: Callable[[], object], device: torch.device, repeat: int = 3, warmup: int = 1
) -> float:
    """Median seconds of ``fn`` (CUDA synchronised)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def parity(text: torch.Tensor, frames: torch.Tensor, device: torch.device) -> dict:
    """The same block-protocol matrices and one ranking on ``device`` and on the CPU.

    Uses the symmetry-breaking ``data`` init: the reference init's split depends on float
    rounding at sharp temperatures, so only a stable setting can be compared across devices.
    """
    params = EMParams(k=16, iters=9, lam=0.1, beta=3.0, init="data", seed=0)
    videos = frames.mean(dim=1)
    out: dict = {}
    for protocol in PROTOCOLS:
        kwargs = {"frames": frames} if protocol == TRAINED else {"videos": videos}
        here = similarity_matrix(text, params=params, protocol=protocol, **kwargs)
        cpu_kwargs = {key: value.cpu() for key, value in kwargs.items()}
        there = similarity_matrix(text.cpu(), params=params, protocol=protocol, **cpu_kwargs)
        out[f"{protocol}_max_abs_diff"] = float((here.cpu() - there).abs().max())
    ids = [f"v{i}" for i in range(len(videos))]
    on_device = rank_query(text[0], GalleryIndex.build(ids, videos), params, context="gallery")
    on_cpu = rank_query(
        text[0].cpu(), GalleryIndex.build(ids, videos.cpu()), params, context="gallery"
    )
    out["rank_same_top10"] = [h.video_id for h in on_device.emcl] == [
        h.video_id for h in on_cpu.emcl
    ]
    return out


def frame_embed(
    model: EMCLRetrievalModel, sizes: dict, device: torch.device, amp: torch.dtype | None
) -> dict:
    """Frame-embedding throughput (inference, fp16 autocast on CUDA)."""
    n, frames, size = sizes["embed_frames"], sizes["frames"], model.image_size
    pixels = torch.randn(n // frames, frames, 3, size, size, device=device)
    model.eval()

    def embed() -> None:
        autocast = torch.autocast(device.type, dtype=amp, enabled=amp is not None)
        with torch.inference_mode(), autocast:
            model.encode_frames(pixels)

    seconds = timed(embed, device)
    return {"frames": n, "seconds": round(seconds, 4), "frames_per_s": round(n / seconds, 1)}


def train_step(
    model: EMCLRetrievalModel, sizes: dict, device: torch.device, amp: torch.dtype | None
) -> dict:
    """One training step at the reference batch, AMP, EM on the global-batch matrix."""
    batch, frames, size = sizes["batch"], sizes["frames"], model.image_size
    model.train()
    optimizer = build_optimizer(model, PRESETS["msrvtt"])
    scaler = torch.amp.GradScaler(device.type, enabled=amp is not None)
    ids = torch.randint(1, 49000, (batch, model.config.max_words), device=device)
    ids[:, -1] = 49407  # EOT
    clip_pixels = torch.randn(batch, frames, 3, size, size, device=device)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = step_loss(model, model, ids, clip_pixels, mask, 1, amp)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    checkpointing = False
    try:
        step_seconds = timed(step, device, repeat=3)
    except torch.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        model.clip.set_grad_checkpointing(True)
        checkpointing = True
        step_seconds = timed(step, device, repeat=3)
    with torch.no_grad():  # the EMCL-Net logits alone (EM included), in fp32 as in training
        text, video, scale = model(ids, clip_pixels, mask)
        logits_seconds = timed(lambda: model.logits(text, video, mask), device)
        loss = contrastive_loss(model.logits(text, video, mask), scale)
    report = {
        "batch": batch,
        "frames": frames,
        "em_rows": batch * batch + batch,
        "amp": str(amp),
        "grad_checkpointing": checkpointing,
        "seconds": round(step_seconds, 4),
        "logits_with_em_seconds": round(logits_seconds, 4),
        "loss_finite": bool(torch.isfinite(loss)),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    optimizer.zero_grad(set_to_none=True)
    optimizer.state.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return report


def em_block(model: EMCLRetrievalModel, sizes: dict, device: torch.device) -> tuple[dict, dict]:
    """The EM on a 1K x 1K evaluation (block protocol, all blocks batched), parity with CPU."""
    m, frames, d = sizes["n_eval"], sizes["frames"], model.embed_dim
    gen = torch.Generator(device="cpu").manual_seed(0)
    text = torch.randn(m, d, generator=gen).to(device)
    frame_feats = torch.randn(m, frames, d, generator=gen).to(device)
    videos = frame_feats.mean(dim=1)
    report: dict = {"texts": m, "videos": m, "dim": d}
    settings = ((TRAINED, EMCL_NET_DEFAULTS), (INFERENCE, INFERENCE_MODULE_DEFAULTS))
    for protocol, params in settings:

        def run(protocol=protocol, params=params) -> torch.Tensor:
            return similarity_matrix(
                text,
                videos=videos if protocol == INFERENCE else None,
                frames=frame_feats if protocol == TRAINED else None,
                params=params,
                protocol=protocol,
            )

        seconds = timed(run, device, repeat=3)
        report[protocol] = {"seconds": round(seconds, 4), "finite": bool(run().isfinite().all())}
    return report, parity(text[:128], frame_feats[:128], device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test)")
    parser.add_argument("--deps", help="folder of extra packages (made by --bundle)")
    parser.add_argument("--bundle", help="copy open_clip and its pure-Python deps here, exit")
    args = parser.parse_args(argv)
    if args.bundle:
        bundle(Path(args.bundle))
        print(f"bundled {', '.join(BUNDLE)} into {args.bundle}")
        return 0
    sizes = SMOKE if args.smoke else FULL
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible; use --device cpu --smoke", file=sys.stderr)
        return 1
    t_start = time.perf_counter()
    torch.manual_seed(0)
    amp = torch.float16 if device.type == "cuda" else None
    cfg = ModelConfig(backbone=sizes["backbone"], num_frames=sizes["frames"])
    model = EMCLRetrievalModel(cfg).to(device)
    report: dict = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "backbone": cfg.backbone,
        "smoke": args.smoke,
    }
    report["frame_embed"] = frame_embed(model, sizes, device, amp)
    report["train_step"] = train_step(model, sizes, device, amp)
    report["em_block_1k"], report["parity_with_cpu"] = em_block(model, sizes, device)
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
