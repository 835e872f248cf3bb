"""A training run's progress read from its ``log.jsonl``: steps done of the planned total, an ETA,
the loss curve and the validation R@1 curve (the Train tab's view of a job, emcl/training/jobs.py).

The loop (emcl/training/loop.py) appends one JSON record per line: a ``plan`` record when it starts
(after the data are loaded: ``total_steps``, ``steps_per_epoch``, the wall ``time``), a train
record every ``log_every`` steps (``loss``) and a validation record (``val``). Logs written before
the plan record existed read as well: their curves are there, only the total and the ETA are not.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = "log.jsonl"
RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED = (
    "running", "finished", "failed", "cancelled", "interrupted",
)  # fmt: skip


@dataclass(frozen=True)
class Progress:
    """Where a run stands. ``fraction`` and ``eta_s`` are None until the plan record and the
    first logged step are there (the data are still being prepared)."""

    step: int = 0
    total_steps: int | None = None
    fraction: float | None = None
    eta_s: float | None = None
    losses: tuple[tuple[int, float], ...] = ()  # (step, training loss)
    val_r1: tuple[tuple[int, float], ...] = ()  # (step, validation text-to-video R@1 in %)

    @property
    def planned(self) -> bool:
        """The loop has started (its data are loaded and its plan is logged)."""
        return self.total_steps is not None


@dataclass(frozen=True)
class JobStatus:
    """One run as the tab shows it: its record (job.json) and its progress (log.jsonl)."""

    run: str
    status: str
    user: str | None
    request: dict[str, Any]
    started: float
    ended: float | None = None
    message: str = ""
    export: str | None = None  # the finished checkpoint (only when status is finished)
    size_bytes: int = 0
    progress: Progress = field(default_factory=Progress)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def elapsed_s(self) -> float:
        return (self.ended or time.time()) - self.started

    def summary(self) -> str:
        """One line: who trains what, how far, the ETA (or how it ended)."""
        who = self.user or "someone"
        if not self.running:
            note = f": {self.message}" if self.message else ""
            if self.status == FINISHED and self.progress.val_r1:
                note = f", validation R@1 {self.progress.val_r1[-1][1]:.1f}"
            return f"{self.run}: {self.status} ({who}){note}"
        p = self.progress
        if not p.planned:
            return f"{who} is training {self.run}: preparing the data, ETA unknown"
        share = f"step {p.step}/{p.total_steps} ({100 * (p.fraction or 0):.0f} %)"
        return f"{who} is training {self.run}: {share}, ETA {format_duration(p.eta_s)}"


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``; a line being appended right now (no newline yet, or
    not valid JSON) is left for the next read, not an error."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.split("\n")[:-1]:  # the part after the last newline may be half written
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def progress_of(records: list[dict[str, Any]], log_time: float, now: float) -> Progress:
    """Progress from ``records``; ``log_time``: when the last record was written (the log's
    mtime), ``now``: the clock to count the ETA down with.

    ETA: the wall seconds per step since the last plan record (validation included, so the
    remaining validations are priced in) times the steps left, less the time since the last
    record: ``(log_time - plan_time) / (step - plan_step) * (total - step) - (now - log_time)``.
    """
    plan_index = max((i for i, r in enumerate(records) if "plan" in r), default=None)
    losses: dict[int, float] = {}
    val: dict[int, float] = {}
    for record in records:  # a resumed run repeats steps: the later record wins
        if "loss" in record:
            losses[int(record["step"])] = float(record["loss"])
        if "val" in record:
            val[int(record["step"])] = float(record["val"]["t2v"]["R1"])
    step = max([*losses, *val], default=0)
    curves = {"losses": tuple(sorted(losses.items())), "val_r1": tuple(sorted(val.items()))}
    if plan_index is None:
        return Progress(step=step, **curves)
    plan = records[plan_index]
    total = int(plan["plan"]["total_steps"])
    start, started = int(plan.get("step", 0)), float(plan.get("time", log_time))
    after = [int(r["step"]) for r in records[plan_index + 1 :] if "loss" in r or "val" in r]
    step = max(after, default=start)
    eta = None
    if step > start:
        per_step = max(log_time - started, 0.0) / (step - start)
        eta = max(per_step * (total - step) - max(now - log_time, 0.0), 0.0)
    fraction = min(step / total, 1.0) if total > 0 else 1.0
    return Progress(step=step, total_steps=total, fraction=fraction, eta_s=eta, **curves)


def run_progress(run: str | os.PathLike, now: float | None = None) -> Progress:
    """:func:`progress_of` for the run folder ``run``."""
    path = Path(run) / LOG
    try:
        log_time = path.stat().st_mtime
    except FileNotFoundError:
        return Progress()
    return progress_of(read_log(path), log_time, time.time() if now is None else now)


def format_duration(seconds: float | None) -> str:
    """``"1 h 05 min"``, ``"4 min 10 s"``, ``"12 s"``; ``"unknown"`` without an estimate."""
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "LOG",
    "RUNNING",
    "JobStatus",
    "Progress",
    "format_duration",
    "progress_of",
    "read_log",
    "run_progress",
]
