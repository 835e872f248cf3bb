"""Process-wide settings every entry point applies once, before torch starts its threads."""

from __future__ import annotations

import torch


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
    return torch.set_flush_denormal(True)
