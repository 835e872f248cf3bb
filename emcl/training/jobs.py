"""Fine-tunes started from the app: one at a time, in a background process, cancellable, with
their state in files (no Gradio here; the Train tab is ui/tabs/train.py).

A job is the bundled command, ``python -m emcl train --preset demo-v2 --init-from ... --out RUN
--export RUN/export.partial --quiet``, in its own process group (so Cancel reaches every process
it starts: SIGTERM, then SIGKILL after a grace period). Its run folder holds:

- ``job.json``: the request, the user, the pid, start and end times and the status, written with
  the one atomic write (emcl/fileio.py), so it survives the app;
- ``log.jsonl`` and the loop's checkpoints (emcl/training/loop.py), ``train.log`` (its output);
- ``export/``: the finished checkpoint. The command exports to ``export.partial`` and only a clean
  exit renames that to ``export`` (one rename), so a cancelled, crashed or killed job never
  leaves an ``export`` a reader could take for a checkpoint (docs/reliability.md §1).

When the app stops, the running job is stopped with it; on the next start a run still marked
running is ``interrupted`` (never offered as a checkpoint) and can be deleted. One
:class:`TrainJobs` serves one runs folder. Starting a job is refused while another runs and
when the folder's size plus an estimate of one run would exceed the disk budget.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emcl.fileio import atomic_write_json
from emcl.model.checkpoint import CheckpointError, read_config
from emcl.model.config import EMCLConfig, ModelConfig
from emcl.paths import DEMO_PRETRAINED_CHECKPOINT, REPO_ROOT
from emcl.training.job_progress import (
    CANCELLED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    LOG,
    RUNNING,
    JobStatus,
    run_progress,
)
from emcl.training.presets import PRESETS
from emcl.training.pretrain import PRETRAIN_COMMAND

JOB, PARTIAL, EXPORT, OUTPUT = "job.json", "export.partial", "export", "train.log"
PRETRAINED = str(DEMO_PRETRAINED_CHECKPOINT)  # the shipped pretrained backbone
MAKE_PRETRAINED = f"{PRETRAIN_COMMAND} --export checkpoints/{DEMO_PRETRAINED_CHECKPOINT.name}"
# Bytes per parameter of one run, measured on a demo run (tests/test_train_jobs.py): ``best`` and
# ``last`` in fp32 (4 + 4), AdamW's two moments in ``last`` (8), the fp16 export (2).
RUN_BYTES_PER_PARAM = 18
RUN_BYTES_EXTRA = 4 << 20  # configs, logs, the job's output
_DEFAULT_EMCL = EMCLConfig()


class JobRefused(ValueError):
    """A start, cancel or delete that cannot be done; the message says why."""


def _whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (a float with no fraction, as sliders send, is fine)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True)
class TrainRequest:
    """What a user asks for, validated once on construction (each message names the field).

    ``emcl``: train the EMCL layer (EMCL-Net) or the base model; ``k`` … ``init``: the layer's
    training knobs (docs/knobs.md; ignored for the base); ``init_from``: the starting weights, a
    checkpoint folder whose CLIP weights start the model; ``max_steps``: a cap on the steps."""

    init_from: str
    emcl: bool = True
    k: int = _DEFAULT_EMCL.k
    iters: int = _DEFAULT_EMCL.iters
    lam: float = _DEFAULT_EMCL.lam
    beta: float = _DEFAULT_EMCL.beta
    momentum: float = _DEFAULT_EMCL.momentum
    init: str = "prior"
    seed: int = 0
    epochs: int = PRESETS["demo-v2"].epochs
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.init_from, str) or not self.init_from.strip():
            raise ValueError("init_from: pick the starting weights (a checkpoint)")
        if not isinstance(self.emcl, bool):
            raise ValueError(f"emcl must be true or false, got {self.emcl!r}")
        for name, low, high in (("k", -(2**31), 2**31), ("iters", -(2**31), 2**31),
                                ("seed", 0, 2**31 - 1), ("epochs", 1, 1000)):  # fmt: skip
            object.__setattr__(self, name, _whole(name, getattr(self, name), low, high))
        if self.max_steps is not None:
            object.__setattr__(self, "max_steps", _whole("max_steps", self.max_steps, 1, 10**7))
        if self.init not in ("prior", "data"):
            raise ValueError(f"init must be 'prior' or 'data', got {self.init!r}")
        config = self.emcl_layer()  # EMCLConfig checks k, iters, lam, beta and momentum
        for name in ("lam", "beta", "momentum"):
            object.__setattr__(self, name, float(getattr(config, name)))

    def emcl_layer(self) -> EMCLConfig:
        return EMCLConfig(self.k, self.iters, self.lam, self.beta, self.momentum, self.init)

    @property
    def kind(self) -> str:
        return "emcl" if self.emcl else "base"

    def train_flags(self) -> list[str]:
        """The request as ``python -m emcl train`` flags (emcl/cli/train.py)."""
        flags = ["--init-from", self.init_from, "--seed", str(self.seed)]
        flags += ["--epochs", str(self.epochs)]
        if self.max_steps is not None:
            flags += ["--max-steps", str(self.max_steps)]
        if not self.emcl:
            return [*flags, "--no-emcl"]
        return [*flags, "--emcl-k", str(self.k), "--emcl-iters", str(self.iters),
                "--emcl-lam", repr(self.lam), "--emcl-beta", repr(self.beta),
                "--emcl-momentum", repr(self.momentum), "--emcl-init", self.init]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TrainSettings:
    """The server's side of a job: where runs live, the world and frame cache it trains on, the
    disk budget, the device. ``batch_size`` / ``val_videos`` override the preset's (tiny worlds
    in tests); ``grace_s``: how long Cancel waits after SIGTERM before SIGKILL."""

    runs_dir: str
    data: str
    cache_dir: str | None = None
    disk_budget_bytes: int = 2 << 30
    device: str = "auto"
    preset: str = "demo-v2"
    pretrained: str = PRETRAINED
    batch_size: int | None = None
    val_videos: int | None = None
    grace_s: float = 10.0
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}")
        if self.disk_budget_bytes <= 0 or self.grace_s < 0:
            raise ValueError("disk_budget_bytes must be > 0 and grace_s >= 0")

    def model(self, request: TrainRequest) -> ModelConfig:
        """The architecture the request trains (the preset's, with its EMCL layer or none)."""
        model = PRESETS[self.preset].model
        return dataclasses.replace(model, emcl=request.emcl_layer() if request.emcl else None)

    def command(self, request: TrainRequest, run: Path) -> list[str]:
        argv = [self.python, "-m", "emcl", "train", "--preset", self.preset, "--data", self.data,
                "--out", str(run), "--export", str(run / PARTIAL), "--device", self.device,
                "--quiet", *request.train_flags()]  # fmt: skip
        if self.cache_dir is not None:
            argv += ["--cache", self.cache_dir]
        if self.batch_size is not None:
            argv += ["--batch-size", str(self.batch_size)]
        if self.val_videos is not None:
            argv += ["--val-videos", str(self.val_videos)]
        return argv


# --------------------------------------------------------------------------------------------
# Files and processes
# --------------------------------------------------------------------------------------------
def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def read_job(run: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run / JOB).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def write_job(run: Path, record: dict[str, Any]) -> None:
    atomic_write_json(run / JOB, record, indent=1)


def _alive(pid: int | None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but another user's
        return True
    except OverflowError:
        return False
    return True


def _runs_here(pid: int, run: Path) -> bool:
    """The live process ``pid`` is this run's training (its command line names the run folder),
    not some later process that reuses the number. Unverifiable (no /proc): no."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(run).encode() in argv


def signal_group(pid: int, sig: int) -> None:
    """``sig`` to the job's process group (the job leads its own session: pgid == pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop_stray(pid: int, run: Path, grace_s: float) -> bool:
    """Stop a job left running by an app that is gone: SIGTERM, then SIGKILL after the grace
    period. True when it was this run's process."""
    if not (_alive(pid) and _runs_here(pid, run)):
        return False
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_group(pid, signal.SIGKILL)
    return True


def exit_reason(code: int, output: Path) -> str:
    """Why a job failed: its exit status (a signal by name) and the end of its output."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    try:
        lines = [line for line in output.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    detail = (errors or lines or ["no output"])[-1][:500]
    return f"exit {code}: {detail}"


@dataclass
class _Job:
    """The running job: its folder, process and record; the cancel request once there is one."""

    run: Path
    process: subprocess.Popen
    record: dict[str, Any]
    cancel_at: float | None = None  # time.monotonic() of the SIGTERM


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------
class TrainJobs:
    """Start, watch, cancel and clean up the fine-tunes of one runs folder, one at a time.

    Thread-safe: Gradio calls it from many worker threads; a lock makes "is one running? then
    start" one step, so two users pressing Train at once start exactly one job.
    """

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings
        self.runs_dir = Path(settings.runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._params: dict[str, int] = {}  # parameter counts by architecture (the estimate)
        self._recover()
        atexit.register(self.shutdown)  # a job never outlives the app that watches it

    # ---- starting ------------------------------------------------------------------------
    def start(self, request: TrainRequest, user: str | None = None) -> JobStatus:
        """Start ``request`` for ``user``; :class:`JobRefused` says why not (busy, the starting
        weights, the disk budget)."""
        self.check_init(request.init_from)
        need = self.estimate_run_bytes(request)  # outside the lock: may build a model once
        with self._lock:
            if self._job is not None:
                raise JobRefused(f"busy: {self._describe(self._job)}")
            used = folder_size(self.runs_dir)
            budget = self.settings.disk_budget_bytes
            if used + need > budget:
                raise JobRefused(
                    f"not enough disk budget: the runs folder holds {_mb(used)} and a run "
                    f"needs about {_mb(need)}, over the budget of {_mb(budget)}; delete "
                    "finished runs first"
                )
            job = self._launch(request, user)
            self._job = job
            threading.Thread(target=self._watch, args=(job,), daemon=True,
                             name=f"train-job-{job.run.name}").start()  # fmt: skip
        return self.status(job.run.name)

    def check_init(self, path: str) -> None:
        """The starting weights exist and fit the preset's backbone (refused early and clearly
        rather than as a failed job a minute later)."""
        if not os.path.exists(path):
            if os.path.abspath(path) == os.path.abspath(self.settings.pretrained):
                raise JobRefused(
                    f"the pretrained backbone {path} is not there yet: make it with "
                    f"`{MAKE_PRETRAINED}` (48 minutes on 2 CPU cores, from the frame "
                    "stage's runs/demo-pretrain/best)"
                )
            raise JobRefused(f"no checkpoint at {path}")
        try:
            config, _ = read_config(path)
        except CheckpointError as error:
            raise JobRefused(f"the starting weights are not usable: {error}") from None
        backbone = PRESETS[self.settings.preset].model.backbone
        if config.backbone != backbone:
            raise JobRefused(f"{path} is a {config.backbone} checkpoint; training needs {backbone}")

    def estimate_run_bytes(self, request: TrainRequest) -> int:
        """What one run of ``request`` writes: its parameter count times the measured bytes per
        parameter (:data:`RUN_BYTES_PER_PARAM`) plus logs."""
        model = self.settings.model(request)
        key = json.dumps(model.to_dict(), sort_keys=True)
        if key not in self._params:
            from emcl.model.model import EMCLRetrievalModel  # torch + open_clip: only when needed

            built = EMCLRetrievalModel(model, load_pretrained=False)
            self._params[key] = sum(t.numel() for t in built.state_dict().values())
        return self._params[key] * RUN_BYTES_PER_PARAM + RUN_BYTES_EXTRA

    def _launch(self, request: TrainRequest, user: str | None) -> _Job:
        run = self._new_run(request)
        command = self.settings.command(request, run)
        record = {"run": run.name, "status": RUNNING, "user": user, "request": request.to_dict(),
                  "command": command, "pid": None, "started": time.time(), "ended": None,
                  "exit_code": None, "message": ""}  # fmt: skip
        write_job(run, record)
        try:
            with open(run / OUTPUT, "ab") as output:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,  # its own process group: Cancel reaches all of it
                )  # fmt: skip
        except OSError as error:
            write_job(run, dict(record, status=FAILED, ended=time.time(), message=str(error)))
            raise JobRefused(f"could not start the training: {error}") from None
        with contextlib.suppress(OSError):  # below the page's requests (reliability.md §4)
            os.setpriority(os.PRIO_PROCESS, process.pid, 10)
        record["pid"] = process.pid
        write_job(run, record)
        return _Job(run, process, record)

    def _new_run(self, request: TrainRequest) -> Path:
        """A fresh run folder with a generated name (never a name typed by a user)."""
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{request.kind}-s{request.seed}"
        for n in range(1, 1000):
            run = self.runs_dir / (stem if n == 1 else f"{stem}-{n}")
            with contextlib.suppress(FileExistsError):
                run.mkdir()
                return run
        raise JobRefused(f"too many runs named {stem}")

    # ---- watching ------------------------------------------------------------------------
    def _watch(self, job: _Job) -> None:
        """Wait for the job (SIGKILL once a cancel's grace period is over), then record how it
        ended and publish its export."""
        code: int | None = None
        while code is None:
            try:
                code = job.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                cancel_at = job.cancel_at
                if cancel_at is not None and time.monotonic() - cancel_at >= self.settings.grace_s:
                    signal_group(job.process.pid, signal.SIGKILL)
        signal_group(job.process.pid, signal.SIGKILL)  # anything it started and left behind
        self._end(job, code)

    def _end(self, job: _Job, code: int) -> None:
        """Record the end once (the watcher and :meth:`shutdown` may both get here)."""
        with self._lock:
            if self._job is not job:
                return
            try:
                self._finish(job, code)
            finally:  # whatever happened, the next job may start
                self._job = None

    def _finish(self, job: _Job, code: int) -> None:
        run, record = job.run, job.record
        partial = run / PARTIAL
        if record.get("stopped_by_app"):
            status, message = INTERRUPTED, "the app stopped while it ran"
        elif job.cancel_at is not None:
            status, message = CANCELLED, f"cancelled by {record.get('cancelled_by') or 'a user'}"
        elif code == 0 and partial.is_dir():
            status, message = _publish(partial, run / EXPORT)
        elif code == 0:
            status, message = FAILED, "the training ended without an export"
        else:
            status, message = FAILED, exit_reason(code, run / OUTPUT)
        shutil.rmtree(partial, ignore_errors=True)
        record.update(status=status, message=message, exit_code=code, ended=time.time())
        write_job(run, record)

    def current(self) -> JobStatus | None:
        """The running job, if any."""
        job = self._job
        return self.status(job.run.name) if job is not None else None

    def latest(self) -> JobStatus | None:
        """The running job, else the run started last."""
        runs = self.list_runs()
        return next((r for r in runs if r.running), runs[0] if runs else None)

    def status(self, name: str) -> JobStatus:
        run = self._run_dir(name)
        record = read_job(run)
        if record is None:
            raise JobRefused(f"no run {name!r}")
        state = record.get("status", INTERRUPTED)
        job = self._job
        if state == RUNNING and (job is None or job.run != run):
            state = self._stranded(run, record)
        export = run / EXPORT
        return JobStatus(
            run=run.name, status=state, user=record.get("user"), request=record["request"],
            started=float(record.get("started", 0.0)), ended=record.get("ended"),
            message=record.get("message", ""),
            export=str(export) if state == FINISHED and export.is_dir() else None,
            size_bytes=folder_size(run), progress=run_progress(run),
        )  # fmt: skip

    def _describe(self, job: _Job) -> str:
        return self.status(job.run.name).summary()

    # ---- stopping ------------------------------------------------------------------------
    def cancel(self, user: str | None = None) -> JobStatus:
        """SIGTERM to the running job's process group; the watcher sends SIGKILL after the grace
        period and records it as cancelled (no export is published)."""
        with self._lock:
            job = self._job
            if job is None:
                raise JobRefused("no training is running")
            _check_owner(job.record, user, "cancel")
            if job.cancel_at is None:
                job.record["cancelled_by"] = user
                job.cancel_at = time.monotonic()
                signal_group(job.process.pid, signal.SIGTERM)
        return self.status(job.run.name)

    def shutdown(self) -> None:
        """Stop the running job (the app is exiting: nothing would publish its export); it is
        recorded as interrupted."""
        job = self._job
        if job is None:
            return
        job.record["stopped_by_app"] = True
        job.cancel_at = job.cancel_at or time.monotonic()
        signal_group(job.process.pid, signal.SIGTERM)
        try:
            code = job.process.wait(timeout=self.settings.grace_s)
        except subprocess.TimeoutExpired:
            signal_group(job.process.pid, signal.SIGKILL)
            code = job.process.wait()
        self._end(job, code)

    # ---- runs ----------------------------------------------------------------------------
    def list_runs(self) -> list[JobStatus]:
        """Every job's run folder, newest first."""
        runs = [p for p in self.runs_dir.iterdir() if p.is_dir() and (p / JOB).is_file()]
        found = []
        for run in runs:
            with contextlib.suppress(JobRefused, KeyError, OSError):
                found.append(self.status(run.name))
        return sorted(found, key=lambda s: s.started, reverse=True)

    def checkpoints(self) -> list[tuple[str, str]]:
        """(label, folder) of each finished run's export, for the checkpoint pickers."""
        kinds = {True: "EMCL", False: "base"}
        return [(f"{s.run} ({kinds[bool(s.request.get('emcl'))]})", s.export)
                for s in self.list_runs() if s.export is not None]  # fmt: skip

    def delete_run(self, name: str, user: str | None = None) -> None:
        """Delete a run that is not running (finished, failed, cancelled or interrupted)."""
        with self._lock:
            status = self.status(name)
            if status.running:
                raise JobRefused(f"{name} is running: cancel it first")
            _check_owner({"user": status.user, "run": name}, user, "delete")
            shutil.rmtree(self._run_dir(name))

    def _run_dir(self, name: str) -> Path:
        """The folder of run ``name``: a job folder directly under the runs folder, never a
        path a request could steer elsewhere."""
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise JobRefused(f"no run {name!r}")
        run = self.runs_dir / name
        if not (run / JOB).is_file():
            raise JobRefused(f"no run {name!r}")
        return run

    def _stranded(self, run: Path, record: dict[str, Any]) -> str:
        """The state of a run marked running that this runner does not watch: still running
        under another runner of this process (tests), finished if its export was published,
        else interrupted."""
        if (run / EXPORT).is_dir():
            return FINISHED
        pid = record.get("pid")
        return RUNNING if _alive(pid) and _runs_here(pid, run) else INTERRUPTED

    def _recover(self) -> None:
        """On start: runs the last app left marked running. A published export is finished;
        a process still running there (its app is gone, so nothing would publish its export)
        is stopped; the rest is interrupted. Half-written exports are removed."""
        for run in sorted(self.runs_dir.iterdir()):
            record = read_job(run) if run.is_dir() else None
            if record is None or record.get("status") != RUNNING:
                continue
            pid = record.get("pid")
            if isinstance(pid, int) and _child_of_this_process(pid):
                continue  # another runner of this process watches it
            if (run / EXPORT).is_dir():
                record.update(status=FINISHED, message="")
            else:
                stopped = isinstance(pid, int) and _stop_stray(pid, run, self.settings.grace_s)
                why = "the app stopped while it ran" + (
                    "; its process was stopped" if stopped else ""
                )
                record.update(status=INTERRUPTED, message=why)
            shutil.rmtree(run / PARTIAL, ignore_errors=True)
            record["ended"] = record.get("ended") or time.time()
            write_job(run, record)


def _publish(partial: Path, export: Path) -> tuple[str, str]:
    """Rename the complete export into place: the one step that makes the checkpoint visible."""
    try:
        os.rename(partial, export)
    except OSError as error:
        return FAILED, f"could not publish the export: {error}"
    return FINISHED, ""


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _check_owner(record: dict[str, Any], user: str | None, action: str) -> None:
    """With logins (a user name), only the user who started a run may cancel or delete it."""
    owner = record.get("user")
    if user is not None and owner is not None and owner != user:
        raise JobRefused(f"{record.get('run')} was started by {owner}: only they can {action} it")


def _child_of_this_process(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()


__all__ = [
    "CANCELLED",
    "EXPORT",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "JOB",
    "LOG",
    "MAKE_PRETRAINED",
    "PARTIAL",
    "PRETRAINED",
    "RUNNING",
    "RUN_BYTES_PER_PARAM",
    "JobRefused",
    "JobStatus",
    "TrainJobs",
    "TrainRequest",
    "TrainSettings",
    "exit_reason",
    "folder_size",
    "read_job",
    "signal_group",
    "write_job",
]
