"""Process-wide settings every entry point applies once, before torch starts its threads, and
the CPUs this process may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


def flush_subnormals() -> bool:
    """Treat subnormal floats as zero on this CPU (FTZ/DAZ); False where the CPU cannot.

    The EM's softmaxes put entries far below their row's maximum under 1.2e-38 (fp32's smallest
    normal), and their products with small features land there too. Such values change no sum
    the EM, the pooling or the scores form, but on x86 CPUs every operation that reads or makes
    one takes a microcode assist: on a 2-core Xeon one model's EM run over the demo's as-trained
    table took 17 s instead of 0.4 s on one thread (docs/benchmarks.md §3). The mode is per
    thread and a new thread inherits its creator's, so calling this first covers torch's worker
    threads and every thread started later. GPUs are not affected.
    """
    import torch  # here, not at the top: decoder children import this module without torch

    return torch.set_flush_denormal(True)
