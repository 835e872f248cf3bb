"""The one GPU script (bench/gpu_suite.py) at toy sizes on the CPU, in-process: every section
writes its file with measured numbers; a section that raises or runs past its cap is recorded
and the others still run."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_parity, gpu_search, gpu_suite
from bench.gpu_common import STACKS, SectionTimeout, time_cap


def numbers(value: object) -> list[float]:
    """Every int or float (not bool) inside a JSON value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    items = value.values() if isinstance(value, dict) else value
    return [x for item in items for x in numbers(item)]


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("gpu-suite")
    return folder, gpu_suite.main(["--smoke", "--device", "cpu", "--json-dir", str(folder)])


def test_smoke_runs_every_section_and_writes_its_numbers(smoke):
    folder, code = smoke
    summary = read(folder, gpu_suite.SUMMARY)
    assert code == 0, summary
    assert list(summary["sections"]) == [s.name for s in gpu_suite.SECTIONS]
    assert summary["machine"]["cpu_count"] >= 1
    assert summary["machine"]["torch"] == torch.__version__
    assert len(list(folder.glob("gpu_*.json"))) == len(gpu_suite.SECTIONS) + 1 <= 6
    for section in gpu_suite.SECTIONS:
        record = read(folder, section.file)
        assert record["status"] == "ok", record.get("error")
        assert record["machine"] == summary["machine"]
        values = numbers(record["results"])
        assert len(values) >= 5 and all(math.isfinite(v) for v in values), section.name


def test_smoke_figures_are_the_ones_asked_for(smoke):
    folder, _ = smoke
    explorer = read(folder, "gpu_explorer.json")["results"]["cpu"]
    for key in ("metrics_em_change", "metrics_beta_change", "search_free_text", "align"):
        assert explorer[key]["p50_ms"] > 0, key
    assert explorer["table_alone"]["em_change"]["n"] >= 1
    search = read(folder, "gpu_search.json")["results"]
    assert search["query_with_rerank"]["p95_ms"] >= search["query_with_rerank"]["p50_ms"] > 0
    assert 0.9 <= search["fp16_top64_overlap_with_fp32"] <= 1.0
    parity = read(folder, "gpu_parity.json")["results"]
    assert parity["fp32_within_0.1_point"] is True  # CPU against CPU: the same numbers
    assert 0 < parity["table"]["fp32"]["em"]["cpu_r1"]["t2v"] < 100  # rankings a change can flip
    assert 0 < parity["extraction"]["cpu_fp32"]["em"]["t2v"]["R1"] < 100
    train = read(folder, "gpu_train.json")["results"]
    for model in ("vit", "demo"):
        runs = train[model]["runs"]
        assert set(runs) == {"plain", "optimised"}
        assert all(r["step_seconds"] > 0 and r["flop_per_step"] > 0 for r in runs.values())
        assert len(runs["plain"]["losses"]) == len(runs["optimised"]["losses"]) >= 2
    logits = train["logits_with_em"]
    assert logits["em_rows"] == train["vit"]["batch"] ** 2 + train["vit"]["batch"]
    index = read(folder, "gpu_index.json")["results"]
    assert index["stack"] in STACKS and index["measured"]
    assert index["vit_frame_embedding"]["frames_per_s"] > 0


def test_a_section_that_raises_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
    def planted(run):
        raise RuntimeError("a planted failure")

    monkeypatch.setattr(gpu_search, "search_section", planted)
    monkeypatch.setattr(gpu_parity, "parity_section", lambda run: {"value": 1.5})
    args = ["--smoke", "--device", "cpu", "--json-dir", str(tmp_path), "--only", "search,parity"]
    assert gpu_suite.main(args) == 1
    failed = read(tmp_path, "gpu_search.json")
    assert failed["status"] == "error" and failed["error"]["type"] == "RuntimeError"
    assert "a planted failure" in failed["error"]["traceback_tail"]
    assert "in planted" in failed["error"]["traceback_tail"]
    assert read(tmp_path, "gpu_parity.json")["results"] == {"value": 1.5}
    statuses = {k: v["status"] for k, v in read(tmp_path, gpu_suite.SUMMARY)["sections"].items()}
    assert statuses == {"search": "error", "parity": "ok"}


def test_a_section_past_its_cap_is_stopped_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_search, "search_section", lambda run: time.sleep(60))
    short = [dataclasses.replace(s, cap_s=0.3) if s.name == "search" else s
             for s in gpu_suite.SECTIONS]  # fmt: skip
    monkeypatch.setattr(gpu_suite, "SECTIONS", tuple(short))
    start = time.perf_counter()
    code = gpu_suite.main(["--device", "cpu", "--json-dir", str(tmp_path), "--only", "search"])
    assert code == 1 and time.perf_counter() - start < 10
    record = read(tmp_path, "gpu_search.json")
    assert record["status"] == "timeout" and record["cap_s"] == 0.3


def test_a_cap_gives_back_the_alarm_it_found():
    before, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if it set one
    with time_cap(30):
        with pytest.raises(SectionTimeout), time_cap(0.2):
            time.sleep(5)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left <= 30
    after, _ = signal.getitimer(signal.ITIMER_REAL)
    assert after == 0 if before == 0 else before - 5 < after <= before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where CUDA is absent")
def test_cuda_where_there_is_none_says_so(tmp_path, capsys):
    assert gpu_suite.main(["--device", "cuda", "--json-dir", str(tmp_path)]) == 2
    assert "no CUDA device" in read(tmp_path, gpu_suite.SUMMARY)["error"]
    assert "--device cpu" in capsys.readouterr().err


def test_unknown_device_or_section_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gpu_suite.main(["--device", "tpu", "--json-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown section"):
        gpu_suite.main(["--device", "cpu", "--json-dir", str(tmp_path), "--only", "warp"])
