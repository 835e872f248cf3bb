"""The lab's two waits, timed through the services the Train and Models tabs call: a demo
fine-tune started as from the page (the pretrained backbone, the tab's defaults), then a switch
of the EMCL side to the finished run.

    python -m bench.lab_bench [--device cpu] [--max-steps N] [--json bench/results/lab_cpu.json]

Loads the app's explorer (the demo world and checkpoints, from the cache), starts one job with
the app's training settings (emcl/training/jobs.py), polls it as the tab does and records when
its data were ready (the plan record), its steps, its ETA at 25 % and its validation R@1; then
switches the EMCL side to the run (emcl/explorer/switching.py) and records how long the new
pair took to serve, and a search's latency while the switch was running.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from emcl import paths
from emcl.explorer.setup import Setup, load_explorer
from emcl.runtime import flush_subnormals
from emcl.training.jobs import TrainJobs, TrainRequest, TrainSettings

POLL_S = 1.0


def train_once(jobs: TrainJobs, request: TrainRequest) -> dict:
    """Start one job and poll it to its end; the times and figures it went through."""
    begun = time.perf_counter()
    status = jobs.start(request, "bench")
    planned_at = eta_at_quarter = quarter_at = None
    while status.running:
        time.sleep(POLL_S)
        status = jobs.status(status.run)
        p = status.progress
        now = time.perf_counter() - begun
        if planned_at is None and p.planned:
            planned_at = now
        if eta_at_quarter is None and p.fraction is not None and p.fraction >= 0.25:
            eta_at_quarter, quarter_at = p.eta_s, now
    wall = time.perf_counter() - begun
    return {
        "run": status.run,
        "status": status.status,
        "message": status.message,
        "wall_s": round(wall, 1),
        "data_ready_s": None if planned_at is None else round(planned_at, 1),
        "steps": status.progress.step,
        "total_steps": status.progress.total_steps,
        "eta_at_25pct_s": None if eta_at_quarter is None else round(eta_at_quarter, 1),
        "actual_rest_after_25pct_s": None if quarter_at is None else round(wall - quarter_at, 1),
        "val_t2v_R1": [list(v) for v in status.progress.val_r1],
        "run_bytes": status.size_bytes,
        "estimated_run_bytes": jobs.estimate_run_bytes(request),
    }


def switch_once(explorer, base_path: Path, run_name: str) -> dict:
    """Switch the EMCL side to ``run_name`` (a catalog name), the base side staying the served
    ``base_path``; time it and the searches answered meanwhile."""
    catalog = explorer.checkpoint_catalog()
    base = next(e.name for e in catalog if Path(e.path).resolve() == base_path.resolve())
    knobs = explorer.defaults("inference")
    begun = time.perf_counter()
    explorer.switch_models(base, run_name)
    search_ms = []
    while (status := explorer.switch_status()).running:
        t = time.perf_counter()
        explorer.rank("a red circle moves to the left", knobs)
        search_ms.append((time.perf_counter() - t) * 1000)
        time.sleep(POLL_S)
    return {
        "wall_s": round(time.perf_counter() - begun, 1),
        "error": status.error,
        "served": status.emcl,
        "searches_during_switch": len(search_ms),
        "search_ms_max_during_switch": round(max(search_ms), 1) if search_ms else None,
        "trained_k_after": explorer.trained.k if explorer.trained else None,
    }


def main() -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-steps", type=int, default=None, help="cap the fine-tune (a quick run)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/lab_cpu.json"))
    args = ap.parse_args()
    setup = Setup(
        base_checkpoint=paths.DEMO_BASE_CHECKPOINT,
        checkpoint=paths.DEMO_EMCL_CHECKPOINT,
        device=args.device,
    )
    explorer = load_explorer(setup)
    settings = TrainSettings(
        runs_dir=str(setup.runs_dir), data=str(setup.data_root), device=args.device
    )
    jobs = TrainJobs(settings)
    request = TrainRequest(init_from=settings.pretrained, max_steps=args.max_steps)
    print(f"training {request} …", flush=True)
    trained = train_once(jobs, request)
    print(json.dumps(trained, indent=1), flush=True)
    switched = None
    if trained["status"] == "finished":
        name = next(e.name for e in explorer.checkpoint_catalog() if trained["run"] in e.name)
        switched = switch_once(explorer, Path(setup.base_checkpoint), name)
        print(json.dumps(switched, indent=1), flush=True)
    result = {"device": args.device, "train": trained, "switch": switched}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
