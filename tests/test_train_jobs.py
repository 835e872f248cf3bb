"""The job runner behind the Train tab (emcl/training/jobs.py, job_progress.py): real training
subprocesses on a tiny world, cancel, a killed job, a job whose app died, the disk budget, two
starts at once, bad requests, and progress/ETA against a plain reference."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from emcl.model.checkpoint import load_checkpoint, save_checkpoint
from emcl.model.config import DEMO_BACKBONE, ModelConfig
from emcl.model.model import EMCLRetrievalModel
from emcl.training.job_progress import format_duration, progress_of, read_log
from emcl.training.jobs import (
    EXPORT,
    JOB,
    MAKE_PRETRAINED,
    PARTIAL,
    JobRefused,
    TrainJobs,
    TrainRequest,
    TrainSettings,
    folder_size,
)

DEAD_PID = 999_999_999  # above any pid_max: never a live process


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory) -> Path:
    """Random starting weights of the demo backbone (what --init-from takes)."""
    config = ModelConfig(backbone=DEMO_BACKBONE, temporal_layers=2, emcl=None)
    return save_checkpoint(EMCLRetrievalModel(config), tmp_path_factory.mktemp("init") / "ckpt")


@pytest.fixture(scope="module")
def frame_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("frames")  # shared: the clips are decoded once


def settings(runs: Path, world: Path, cache: Path, **changes) -> TrainSettings:
    base = dict(
        runs_dir=str(runs),
        data=str(world),
        cache_dir=str(cache),
        device="cpu",
        batch_size=4,
        val_videos=2,
        grace_s=3.0,
        pretrained=str(runs.parent / "none"),
    )
    return TrainSettings(**{**base, **changes})


def wait_for(condition, timeout: float = 120.0, what: str = "the job") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def files_of(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()}


# --------------------------------------------------------------------------------------------
# Progress and ETA (pure)
# --------------------------------------------------------------------------------------------
def test_progress_and_eta_match_a_plain_reference():
    t0 = 1_000.0
    records = [
        {"step": 0, "time": t0, "plan": {"total_steps": 100, "steps_per_epoch": 25}},
        {"step": 10, "loss": 3.0},
        {"step": 20, "loss": 2.5},
        {"step": 25, "val": {"t2v": {"R1": 12.5}}},
    ]
    log_time, now = t0 + 50.0, t0 + 60.0  # 25 steps in 50 s; the last record 10 s ago
    p = progress_of(records, log_time, now)
    per_step = (log_time - t0) / 25  # the reference: 2 s a step, validation included
    assert p.step == 25 and p.total_steps == 100 and p.planned
    assert p.fraction == pytest.approx(25 / 100)
    assert p.eta_s == pytest.approx(per_step * (100 - 25) - (now - log_time))  # 140 s
    assert p.losses == ((10, 3.0), (20, 2.5)) and p.val_r1 == ((25, 12.5),)
    assert progress_of(records, log_time, now + 1e6).eta_s == 0.0  # never negative
    assert format_duration(140) == "2 min 20 s" and format_duration(None) == "unknown"
    assert format_duration(3725) == "1 h 02 min" and format_duration(9.6) == "10 s"


def test_a_log_without_a_plan_record_and_a_half_written_line_still_read(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 10, "loss": 1.5}\n{"step": 10, "val": {"t2v": {"R1": 4.0}}}\n{"st')
    records = read_log(log)
    assert len(records) == 2  # the line being appended is left for the next read
    p = progress_of(records, 0.0, 0.0)
    assert (p.step, p.total_steps, p.fraction, p.eta_s) == (10, None, None, None)
    assert p.losses == ((10, 1.5),) and p.val_r1 == ((10, 4.0),)
    assert read_log(tmp_path / "missing.jsonl") == []


# --------------------------------------------------------------------------------------------
# Requests and refusals (no process started)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 0}, "k must be an integer in [1, "),
        ({"k": -3}, "k must be an integer"),
        ({"iters": 2.5}, "iters must be a whole number"),
        ({"lam": 0.0}, "lam must be a finite number"),
        ({"momentum": 1.5}, "momentum must be a finite number in [0, 1]"),
        ({"init": "reference"}, "init must be 'prior' or 'data', got 'reference'"),
        ({"max_steps": -1}, "max_steps must be a whole number in [1,"),
        ({"max_steps": 0}, "max_steps must be a whole number in [1,"),
        ({"epochs": 0}, "epochs must be a whole number in [1, 1000]"),
        ({"seed": -1}, "seed must be a whole number"),
        ({"init_from": " "}, "init_from: pick the starting weights"),
        ({"emcl": "yes"}, "emcl must be true or false"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(change, message):
    with pytest.raises(ValueError) as caught:
        TrainRequest(**{"init_from": "/some/ckpt", **change})
    assert message in str(caught.value)


def test_a_request_takes_whole_floats_from_the_page_and_round_trips():
    request = TrainRequest(init_from="/c", k=8.0, iters=3.0, seed=2.0, epochs=1.0, max_steps=2.0)
    assert (request.k, request.iters, request.seed, request.max_steps) == (8, 3, 2, 2)
    assert isinstance(request.k, int) and TrainRequest.from_dict(request.to_dict()) == request
    assert "--no-emcl" in TrainRequest(init_from="/c", emcl=False).train_flags()


def test_starting_weights_are_checked_before_anything_starts(tmp_path, init_checkpoint):
    runs = tmp_path / "runs"
    jobs = TrainJobs(settings(runs, tmp_path, tmp_path, pretrained=str(tmp_path / "pre")))
    with pytest.raises(JobRefused) as missing_backbone:
        jobs.start(TrainRequest(init_from=str(tmp_path / "pre")))
    assert "not there yet" in str(missing_backbone.value)
    assert MAKE_PRETRAINED in str(missing_backbone.value)
    with pytest.raises(JobRefused, match="no checkpoint at"):
        jobs.start(TrainRequest(init_from=str(tmp_path / "nowhere")))
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((init_checkpoint / "config.json").read_text())
    config["model"]["backbone"] = "ViT-B-32"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(JobRefused, match="is a ViT-B-32 checkpoint; training needs"):
        jobs.start(TrainRequest(init_from=str(other)))
    assert list(runs.iterdir()) == []  # nothing was created


def test_a_full_disk_budget_is_refused_with_the_sizes(tmp_path, init_checkpoint):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "old-file.bin").write_bytes(b"x" * 3_000_000)
    jobs = TrainJobs(settings(runs, tmp_path, tmp_path, disk_budget_bytes=100_000_000))
    request = TrainRequest(init_from=str(init_checkpoint))
    with pytest.raises(JobRefused) as caught:
        jobs.start(request)
    need = jobs.estimate_run_bytes(request)
    message = str(caught.value)
    assert "not enough disk budget" in message and "3.0 MB" in message
    assert f"{need / 1e6:,.1f} MB" in message and "100.0 MB" in message
    assert sorted(p.name for p in runs.iterdir()) == ["old-file.bin"]


# --------------------------------------------------------------------------------------------
# Runs left by an app that died
# --------------------------------------------------------------------------------------------
def _stranded_run(runs: Path, name: str, *, export: str | None) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    record = {
        "run": name,
        "status": "running",
        "user": "alice",
        "pid": DEAD_PID,
        "started": time.time(),
        "request": TrainRequest(init_from="/c").to_dict(),
    }
    (run / JOB).write_text(json.dumps(record))
    if export is not None:
        (run / export).mkdir()
        (run / export / "model.safetensors").write_bytes(b"half")
    return run


def test_a_job_whose_process_vanished_while_the_app_was_down_is_interrupted(tmp_path):
    runs = tmp_path / "runs"
    half = _stranded_run(runs, "a-half-export", export=PARTIAL)
    bare = _stranded_run(runs, "b-no-export", export=None)
    published = _stranded_run(runs, "c-published", export=EXPORT)  # renamed, then the app died
    jobs = TrainJobs(settings(runs, tmp_path, tmp_path))
    states = {s.run: s for s in jobs.list_runs()}
    assert states[half.name].status == states[bare.name].status == "interrupted"
    assert "the app stopped while it ran" in states[half.name].message
    assert states[half.name].export is None and not (half / PARTIAL).exists()
    assert states[published.name].status == "finished"
    assert jobs.checkpoints() == [(f"{published.name} (EMCL)", str(published / EXPORT))]
    assert json.loads((bare / JOB).read_text())["status"] == "interrupted"  # rewritten on disk
    assert jobs.current() is None
    with pytest.raises(JobRefused, match="only they can delete"):
        jobs.delete_run(half.name, "mallory")
    jobs.delete_run(half.name, "alice")
    assert not half.exists()
    for bad in ("..", "", "b-no-export/../c-published", str(bare)):
        with pytest.raises(JobRefused, match="no run"):
            jobs.delete_run(bad)
    assert bare.exists() and published.exists()


# --------------------------------------------------------------------------------------------
# Real training subprocesses
# --------------------------------------------------------------------------------------------
def test_two_starts_at_once_start_one_job_that_publishes_a_loadable_checkpoint(
    tmp_path, tiny_world, frame_cache, init_checkpoint
):
    runs = tmp_path / "runs"
    jobs = TrainJobs(settings(runs, tiny_world, frame_cache))
    request = TrainRequest(init_from=str(init_checkpoint), k=8, iters=3, max_steps=2)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def press_train(user: str) -> None:
        barrier.wait()
        try:
            outcomes[user] = jobs.start(request, user)
        except JobRefused as refused:
            outcomes[user] = refused

    threads = [threading.Thread(target=press_train, args=(u,)) for u in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refusals = [o for o in outcomes.values() if isinstance(o, JobRefused)]
    started = [o for o in outcomes.values() if not isinstance(o, JobRefused)]
    assert len(refusals) == 1 and len(started) == 1
    winner = started[0]
    assert str(refusals[0]).startswith(f"busy: {winner.user} is training {winner.run}")
    assert "ETA" in str(refusals[0])
    assert [p.name for p in runs.iterdir()] == [winner.run]
    with pytest.raises(JobRefused, match="only they can cancel"):
        jobs.cancel("mallory")

    wait_for(lambda: jobs.current() is None)
    status = jobs.status(winner.run)
    run = runs / winner.run
    assert status.status == "finished", (status.message, (run / "train.log").read_text()[-2000:])
    assert status.export == str(run / EXPORT) and PARTIAL not in files_of(run)
    assert status.progress.fraction == 1.0 and status.progress.total_steps == 2
    assert status.progress.losses and status.progress.val_r1
    model = load_checkpoint(run / EXPORT)
    assert model.config.emcl.k == 8 and model.config.emcl.iters == 3  # the knobs reached it
    record = json.loads((run / JOB).read_text())
    assert record["status"] == "finished" and record["exit_code"] == 0
    assert record["request"] == request.to_dict() and record["user"] == winner.user
    assert jobs.checkpoints() == [(f"{winner.run} (EMCL)", str(run / EXPORT))]
    # The disk estimate, measured: one run's folder is within it, and not far below it.
    size, need = folder_size(run), jobs.estimate_run_bytes(request)
    assert size <= need <= 1.1 * size, (size, need)
    jobs.delete_run(winner.run, winner.user)
    assert list(runs.iterdir()) == []


def test_cancel_mid_run_leaves_no_checkpoint(tmp_path, tiny_world, frame_cache, init_checkpoint):
    runs = tmp_path / "runs"
    jobs = TrainJobs(settings(runs, tiny_world, frame_cache))
    status = jobs.start(TrainRequest(init_from=str(init_checkpoint), epochs=1000), "alice")
    wait_for(lambda: jobs.status(status.run).progress.planned, what="the training loop")
    with pytest.raises(JobRefused, match="only they can cancel"):
        jobs.cancel("bob")
    jobs.cancel("alice")
    wait_for(lambda: jobs.current() is None, timeout=30)
    after = jobs.status(status.run)
    assert after.status == "cancelled" and after.message == "cancelled by alice"
    assert after.export is None and not {EXPORT, PARTIAL} & files_of(runs / status.run)
    assert jobs.checkpoints() == []
    with pytest.raises(JobRefused, match="no training is running"):
        jobs.cancel("alice")


def test_a_killed_job_fails_without_a_checkpoint(
    tmp_path, tiny_world, frame_cache, init_checkpoint
):
    runs = tmp_path / "runs"
    jobs = TrainJobs(settings(runs, tiny_world, frame_cache))
    status = jobs.start(TrainRequest(init_from=str(init_checkpoint), max_steps=2), "alice")
    pid = json.loads((runs / status.run / JOB).read_text())["pid"]
    os.kill(pid, signal.SIGKILL)  # the out-of-memory killer, say
    wait_for(lambda: jobs.current() is None, timeout=30)
    after = jobs.status(status.run)
    assert after.status == "failed" and after.message == "killed by SIGKILL"
    assert not {EXPORT, PARTIAL} & files_of(runs / status.run)
    assert jobs.checkpoints() == []
    jobs.delete_run(status.run, "alice")  # a failed run can be deleted; a running one cannot


def test_the_app_stopping_stops_its_job_as_interrupted(
    tmp_path, tiny_world, frame_cache, init_checkpoint
):
    runs = tmp_path / "runs"
    jobs = TrainJobs(settings(runs, tiny_world, frame_cache))
    status = jobs.start(TrainRequest(init_from=str(init_checkpoint), max_steps=2), "alice")
    with pytest.raises(JobRefused, match="is running: cancel it first"):
        jobs.delete_run(status.run, "alice")
    jobs.shutdown()  # what atexit runs
    after = jobs.status(status.run)
    assert after.status == "interrupted" and jobs.current() is None
    assert not {EXPORT, PARTIAL} & files_of(runs / status.run)
