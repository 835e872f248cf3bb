"""emcl/runtime.py: subnormal floats flush to zero in every thread of a process that asked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    """
    import sys, threading
    import torch
    from emcl.runtime import flush_subnormals
    if sys.argv[1] == "flush":
        assert flush_subnormals()
    torch.set_num_threads(2)
    tiny = torch.full((1 << 16,), 1e-39)  # subnormal in fp32
    seen = {}
    def probe(name):  # one large op (torch's worker threads share it) and one scalar
        seen[name] = (int((tiny * 1.0).count_nonzero()), float(tiny[:1] * 1.0))
    probe("main")
    worker = threading.Thread(target=probe, args=("thread",))
    worker.start()
    worker.join()
    print(seen["main"][0], seen["main"][1], seen["thread"][0], seen["thread"][1])
    """
)


def _probe(mode: str) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return [float(v) for v in done.stdout.split()]


def test_flush_reaches_torch_threads_and_later_threads() -> None:
    if _probe("flush") != [0, 0.0, 0, 0.0]:
        pytest.fail("subnormals survived in some thread after flush_subnormals()")


def test_without_flush_subnormals_survive() -> None:
    # The probe can fail: IEEE arithmetic keeps the values when nobody asked.
    count, value, _, _ = _probe("keep")
    assert count == 1 << 16 and value > 0.0


def test_explorer_workers_flush_while_the_caller_keeps_ieee() -> None:
    import torch

    from emcl.explorer.latest import Worker

    def tiny_times_one() -> float:
        return float(torch.tensor([1e-39]) * 1.0)

    assert tiny_times_one() > 0.0  # this (test) thread: IEEE
    assert Worker("flush-probe", threads=None).run(tiny_times_one) == 0.0


def test_the_command_line_flushes_before_its_command(monkeypatch, capsys) -> None:
    import emcl.__main__ as entry
    import emcl.runtime

    calls: list[int] = []
    monkeypatch.setattr(emcl.runtime, "flush_subnormals", lambda: calls.append(1) or True)
    assert entry.main(["knobs"]) == 0
    assert calls == [1] and capsys.readouterr().out
