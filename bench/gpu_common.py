"""What the GPU suite's sections share: timing with device syncs, the machine's facts, the demo
models and a synthetic gallery of the demo's shape (no world rendering: docs/design.md, "GPU
checks" in the project's DESIGN.md).

The synthetic gallery pairs caption features from the demo text encoder with frame features
drawn around them: each video's 12 frames are its caption's direction plus noise, so rankings
have near-ties and R@1 is neither 0 nor 100 (a parity check on chance-level rankings could not
fail).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")
SIZES = ("small", "big", "tiny", "large")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
T = TypeVar("T")
STACKS = ("auto", "project", "opencv", "none")  # indexing's decoding stacks (gpu_index.py)
MOTIONS = ("moves left", "moves right", "spins", "bounces", "grows", "shrinks", "falls")


class SectionTimeout(BaseException):
    """A section ran past its cap (a BaseException: no ``except Exception`` inside the
    measured code may swallow it)."""


@contextlib.contextmanager
def time_cap(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (or when an alarm set
    outside, a section's cap or pytest-timeout's, is due, if sooner); that alarm is put back
    with the time it had left. Python code is interrupted at once, a kernel or C call when it
    returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame) -> None:
        raise SectionTimeout(f"over its {seconds:g} s cap")

    start = time.monotonic()
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    previous = signal.signal(signal.SIGALRM, expire)
    # An outer alarm due sooner still wins (its cap is the tighter one).
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_delay) if outer_delay else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay > 0:
            left = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1
) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def timed_once(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds of one call of ``fn`` (synchronised) and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def until(seconds: float, items: Iterable[T], at_least: int = 2) -> Iterator[T]:
    """``items`` until ``seconds`` have passed (but at least ``at_least`` of them): a loop of
    repeated measurements that fits a section's cap on a slow machine."""
    start = time.perf_counter()
    for count, item in enumerate(items):
        if count >= at_least and time.perf_counter() - start > seconds:
            return
        yield item


def percentiles_ms(seconds: list[float]) -> dict[str, float | int]:
    """p50 / p95 / min / max in milliseconds over ``seconds`` (nearest-rank p95)."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p95_ms": round(p95 * 1e3, 3),
        "min_ms": round(ordered[0] * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def machine_facts(device: torch.device) -> dict[str, object]:
    """The machine a run measured: GPU, torch, CUDA, CPUs, Python."""
    facts: dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": os.environ.get("EMCL_COMMIT", "unknown"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_multiprocessors": props.multi_processor_count,
            "gpu_capability": f"{props.major}.{props.minor}",
        }
    return facts


def captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct demo-like captions (one to two events of a shape), seeded."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        events = [
            f"a {rng.choice(SIZES)} {rng.choice(COLOURS)} {rng.choice(SHAPES)} "
            f"{rng.choice(MOTIONS)}"
            for _ in range(rng.choice((1, 2)))
        ]
        out[" then ".join(events)] = None
    return list(out)


@dataclass(frozen=True)
class SyntheticGallery:
    """Caption features as a model emits them and frame features of the demo's shape."""

    captions: list[str]
    sentences: Tensor  # [N, D] fp32, not normalised (the as-trained protocol sees the norm)
    frames: Tensor  # [N, T, D] fp16, video i is caption i's


def synthetic_frames(sentences: Tensor, num_frames: int, noise: float, seed: int) -> Tensor:
    """``[N, T, D]`` fp16 frames around each caption's direction (noise relative to it)."""
    g = torch.Generator().manual_seed(seed)
    n, d = sentences.shape
    unit = F.normalize(sentences.float(), dim=-1)[:, None]  # [N, 1, D]
    jitter = torch.randn(n, num_frames, d, generator=g) * (noise / d**0.5)
    return (unit + jitter).half()


def synthetic_gallery(encoder, n: int, num_frames: int, noise: float = 1.6) -> SyntheticGallery:
    """``n`` captions encoded by ``encoder`` (an :class:`emcl.model.encoder.Encoder`) and one
    synthetic video per caption."""
    texts = captions(n)
    with torch.inference_mode():
        sentences = encoder.encode_texts(texts)["sentence"].float()
    return SyntheticGallery(texts, sentences, synthetic_frames(sentences, num_frames, noise, 1))


def demo_encoders(device: str):
    """The shipped demo checkpoints (base, EMCL) as encoders on ``device``."""
    from emcl import paths
    from emcl.model.encoder import Encoder

    return (
        Encoder.from_checkpoint(paths.DEMO_BASE_CHECKPOINT, device),
        Encoder.from_checkpoint(paths.DEMO_EMCL_CHECKPOINT, device),
    )


@dataclass
class SuiteRun:
    """One run of the suite: the device under test, toy sizes or not, and what sections share
    (the demo encoders per device: loading them twice would be timed twice)."""

    device: torch.device
    smoke: bool
    options: dict[str, str] = field(default_factory=dict)  # per-section choices from the flags
    cap_s: float = 0.0  # the running section's time cap
    # The running section's results so far: a section fills it as it goes, so one stopped at
    # its cap or by an error still reports what it measured.
    output: dict[str, object] = field(default_factory=dict)
    shared: dict[str, object] = field(default_factory=dict)

    def pick(self, full: object, smoke: object) -> object:
        """``smoke`` at toy sizes, else ``full``."""
        return smoke if self.smoke else full

    @property
    def devices(self) -> list[torch.device]:
        """The device under test, then this machine's CPU when that is another device."""
        cpu = torch.device("cpu")
        return [self.device] if self.device == cpu else [self.device, cpu]

    def encoders(self, device: torch.device):
        """The demo (base, EMCL) encoders on ``device``, loaded once per run."""
        key = f"encoders:{device}"
        if key not in self.shared:
            self.shared[key] = demo_encoders(str(device))
        return self.shared[key]


__all__ = [
    "STACKS",
    "SectionTimeout",
    "SuiteRun",
    "SyntheticGallery",
    "captions",
    "demo_encoders",
    "machine_facts",
    "percentiles_ms",
    "sync",
    "synthetic_frames",
    "synthetic_gallery",
    "time_calls",
    "time_cap",
    "timed_once",
    "until",
]
