"""The one prepared GPU script (issue 18, point 5; "GPU checks" in the project's DESIGN.md).

    python -m bench.gpu_suite --json-dir DIR [--device cuda|cpu] [--smoke]

Runs on a bare CUDA machine (torch there; open_clip and its pure-Python needs carried as
wheels: bench/gpu_deps.sh, bench/gpu_run.sh) in at most six minutes, and writes what it
measured, with the machine's facts, as small JSON files in ``--json-dir``:

    gpu_explorer.json  (a) the explorer's as-trained table and search, on the device and on
                           the same machine's CPU (bench/gpu_explorer.py)
    gpu_search.json    (b) exact fp16 search of 1M × 512 with the EMCL re-rank (gpu_search.py)
    gpu_parity.json    (c) CPU/GPU parity of the as-trained table (gpu_parity.py)
    gpu_train.json     (d) the training steps, optimised against plain (gpu_train.py)
    gpu_index.json     (e) indexing 1,000 clips (gpu_index.py)
    gpu_suite.json     every section's status and time, the machine, the whole run

Each section runs under its own time cap (and within the run's budget): one that raises or
runs over records its error, the tail of its traceback and what it had measured by then, and
the others go on. Every file
is rewritten as soon as its section ends, so a run killed from outside keeps what finished.
``--smoke --device cpu`` runs every section at toy sizes in well under a minute (the tests).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.gpu_common import STACKS, SectionTimeout, SuiteRun, machine_facts, time_cap
from emcl.fileio import atomic_write_json
from emcl.runtime import flush_subnormals

RESULTS = Path(__file__).resolve().parent / "results"
SUMMARY = "gpu_suite.json"
BUDGET_S = 330.0  # the whole run, imports aside: under the six minutes asked
TRACEBACK_LINES = 25


@dataclass(frozen=True)
class Section:
    """One section: its file, its cap and its function as ``module:name``, imported when it
    runs (a module that cannot import here fails its section only)."""

    name: str
    file: str
    cap_s: float
    target: str

    def function(self) -> Callable[[SuiteRun], dict]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


SECTIONS: tuple[Section, ...] = (
    Section("explorer", "gpu_explorer.json", 85.0, "bench.gpu_explorer:explorer_section"),
    Section("parity", "gpu_parity.json", 45.0, "bench.gpu_parity:parity_section"),
    Section("search", "gpu_search.json", 40.0, "bench.gpu_search:search_section"),
    Section("train", "gpu_train.json", 110.0, "bench.gpu_train:train_section"),
    Section("index", "gpu_index.json", 45.0, "bench.gpu_index:index_section"),
)


def _error(exc: BaseException) -> dict[str, str]:
    lines = "".join(traceback.format_exception(exc)).splitlines()
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback_tail": "\n".join(lines[-TRACEBACK_LINES:]),
    }


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_section(section: Section, run: SuiteRun, cap_s: float) -> dict:
    """One section under ``cap_s``: its results, or its error; never raises (but Ctrl-C)."""
    start = time.perf_counter()
    record: dict[str, object] = {"section": section.name, "cap_s": round(cap_s, 1)}
    run.cap_s, run.output = cap_s, {}
    try:
        with time_cap(cap_s):
            record["results"] = section.function()(run)
        record["status"] = "ok"
    except SectionTimeout as exc:
        record |= {"status": "timeout", "error": _error(exc), "results": run.output}
    except Exception as exc:  # one section's failure is recorded; the others still run
        record |= {"status": "error", "error": _error(exc), "results": run.output}
    finally:
        _free(run.device)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json-dir", type=Path, default=RESULTS, help="where gpu_*.json go")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (the tests, on a CPU)")
    parser.add_argument("--only", help="comma-separated sections (default: all)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole run's cap")
    parser.add_argument(
        "--index-decoder",
        choices=STACKS,
        default="auto",
        help="indexing's decoding stack (auto: the fullest one there)",
    )
    return parser


def _chosen(only: str | None) -> list[Section]:
    if not only:
        return list(SECTIONS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    known = {s.name: s for s in SECTIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    """Run the sections; 0 when every one ended ``ok``, 1 otherwise, 2 without the device."""
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    args = _parser().parse_args(argv)
    sections = _chosen(args.only)
    device = torch.device(args.device)
    args.json_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {"smoke": args.smoke, "device": args.device, "sections": {}}
    if device.type == "cuda" and not torch.cuda.is_available():
        summary["error"] = "no CUDA device visible: run with --device cpu"
        atomic_write_json(args.json_dir / SUMMARY, summary, indent=2)
        print(summary["error"], file=sys.stderr)
        return 2
    facts = machine_facts(device)
    summary["machine"] = facts
    run = SuiteRun(device, args.smoke, options={"index_decoder": args.index_decoder})
    start = time.perf_counter()
    for section in sections:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 5.0:
            record = {
                "section": section.name,
                "status": "skipped",
                "error": {"message": "no time left in the run's budget"},
            }
        else:
            record = run_section(section, run, min(section.cap_s, left))
        header = {"machine": facts, "smoke": args.smoke, "device": args.device}
        atomic_write_json(args.json_dir / section.file, header | record, indent=2)
        keys = [k for k in ("status", "seconds", "cap_s") if k in record]
        line = {k: record[k] for k in keys} | {"file": section.file}
        if "error" in record:  # the traceback is in the section's file
            line["error"] = record["error"]["message"]
        summary["sections"][section.name] = line
        summary["total_seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_json(args.json_dir / SUMMARY, summary, indent=2)
        print(f"{section.name}: {record['status']} in {record.get('seconds', 0)} s", flush=True)
    ok = all(s["status"] == "ok" for s in summary["sections"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
