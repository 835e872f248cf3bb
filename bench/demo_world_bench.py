"""Demo world build time, guarded-decode throughput and gallery cache timings, in one run.

    python -m bench.demo_world_bench [--world DIR] [--clips 1000] [--checkpoint DIR]

Without ``--world`` the default world (2000 + 1000 clips) is built in a temp folder and timed.
The gallery part uses the model from ``--checkpoint`` if given, else a fixed random projection
of 8x8 colour means, which measures decoding and caching only (no model cost).
"""

from __future__ import annotations

import argparse
import shutil
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emcl.data.datasets import VideoRecord, read_msrvtt
from emcl.data.gallery import build_gallery, load_gallery
from emcl.data.world import build_world
from emcl.video.decoder import DecodeRequest, DecoderPool, decode_decord
from emcl.video.probe import Limits, probe


class ProjectionEncoder:
    """8x8 colour means through a fixed random matrix: near-zero model cost."""

    fingerprint = "bench-projection-v1"
    image_size = 112

    def __init__(self, dim: int = 256):
        self.w = torch.randn(192, dim, generator=torch.Generator().manual_seed(0))

    def encode_videos(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(frames).float() / 255  # [B, T, H, W, 3]
        b, t, h, w, _ = x.shape
        x = F.adaptive_avg_pool2d(x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w), 8)
        f = F.normalize(x.reshape(b, t, 192) @ self.w, dim=-1)
        return {"frames": f, "video": F.normalize(f.mean(1), dim=-1)}


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:7.1f} clips/s  ({seconds:6.2f} s for {n})"


def bench_decode(paths: list[Path]) -> None:
    print(f"\n== decode {len(paths)} clips, 12 frames, short side 112 ==")
    t0 = time.perf_counter()
    for p in paths[:40]:
        req = DecodeRequest(str(p), 12, 112)
        decode_decord(req, probe(str(p), Limits(probe="pyav")))
    print("unguarded, in process (decord)       ", rate(40, time.perf_counter() - t0))
    t0 = time.perf_counter()
    for p in paths[:40]:
        with DecoderPool(1) as pool:
            pool.decode(p, 12, 112)
    print("one child process per file (ffprobe) ", rate(40, time.perf_counter() - t0))
    for workers, probe_kind in ((1, "ffprobe"), (2, "ffprobe"), (1, "pyav"), (2, "pyav")):
        with DecoderPool(workers, Limits(probe=probe_kind)) as pool:
            list(pool.imap(paths[:workers], 12, 112))  # start the children
            t0 = time.perf_counter()
            n = sum(1 for r in pool.imap(paths, 12, 112) if not isinstance(r, Exception))
            label = f"pool, {workers} worker(s), probe={probe_kind}"
            print(f"{label:37s}", rate(n, time.perf_counter() - t0))


def corrupt_files(folder: Path, good: Path) -> list[VideoRecord]:
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("meeting notes, not a video\n" * 40)
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    long = bytearray(data)
    i = long.index(b"mvhd")
    (ts,) = struct.unpack(">I", long[i + 16 : i + 20])
    long[i + 20 : i + 24] = struct.pack(">I", ts * 36000)
    (folder / "ten_hours.mp4").write_bytes(bytes(long))
    names = ("empty", "notes", "cut", "ten_hours")
    return [VideoRecord(f"bad_{n}", folder / f"{n}.mp4", [], "test") for n in names] + [
        VideoRecord("bad_gone", folder / "gone.mp4", [], "test")
    ]


def bench_gallery(records: list[VideoRecord], encoder, cache: Path) -> None:
    print(f"\n== gallery: {len(records)} records, encoder {type(encoder).__name__} ==")
    t0 = time.perf_counter()
    g = build_gallery(records, encoder, cache, progress=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_gallery(records, encoder, cache, progress=False)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    size = encoder.image_size
    loaded = load_gallery(cache, encoder.fingerprint, num_frames=12, size=size)
    reload = time.perf_counter() - t0
    print(f"cold build  {cold:6.2f} s  ({len(g) / cold:.1f} clips/s)")
    print(f"warm build  {warm:6.2f} s  (stat every file, no decoding)")
    print(f"load_gallery {reload:5.2f} s  ({len(loaded)} videos, no file checks)")
    print("\n" + str(g.report))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, default=None, help="existing demo world (skip build)")
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--checkpoint", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="emcl_bench_"))
    try:
        world = a.world
        if world is None:
            world = tmp / "world"
            t0 = time.perf_counter()
            meta = build_world(world)
            print(f"default world (2000 + 1000 clips, {meta['workers']} workers): "
                  f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        test = read_msrvtt(world, "test")[: a.clips]
        bench_decode([r.path for r in test])
        if a.checkpoint:
            from emcl.model.encoder import Encoder

            encoder = Encoder.from_checkpoint(a.checkpoint, device="cpu")
        else:
            encoder = ProjectionEncoder()
        bench_gallery(test + corrupt_files(tmp / "bad", test[0].path), encoder, tmp / "cache")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
