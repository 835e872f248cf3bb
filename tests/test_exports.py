"""Downloads: the search results and the metrics table as CSV and JSON, in per-session
folders named by a hash, with old folders removed."""

from __future__ import annotations

import csv
import io
import json
import os
import time

import pandas as pd
import pytest

from emcl.explorer.knobs import KnobError, Knobs
from ui import exports

KNOBS = Knobs(mode="inference", beta=4.0, k=7, iters=10, lam=0.1, init="reference", top_k=5)


@pytest.fixture
def root(tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    monkeypatch.setattr(exports, "EXPORTS_ROOT", folder)
    monkeypatch.setattr(exports.session_folder, "__defaults__", (folder,))
    return folder


def read_csv(path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def test_search_export_has_the_numbers_of_rank(explorer, root):
    csv_path, json_path = exports.export_search(explorer, "a red circle", KNOBS, "session-1")
    want = explorer.rank("a red circle", KNOBS).to_json()
    document = json.loads(json_path.read_text())
    assert document["base"] == want["base"] and document["emcl"] == want["emcl"]
    assert document["knobs"] == KNOBS.to_dict()
    rows = read_csv(csv_path)
    header, body = rows[0], rows[1:]
    assert header[:4] == ["query", "mode", "column", "video_id"]
    assert len(body) == 2 * KNOBS.top_k
    by_column = {c: [r for r in body if r[2] == c] for c in ("base", "emcl")}
    for column in ("base", "emcl"):
        ids = [r[header.index("video_id")] for r in by_column[column]]
        scores = [float(r[header.index("score")]) for r in by_column[column]]
        assert ids == [h["video_id"] for h in want[column]]
        assert scores == pytest.approx([h["score"] for h in want[column]], abs=0)
    assert csv_path.parent == json_path.parent and csv_path.parent.parent == root


def test_search_table_keeps_hit_fields_it_does_not_know():
    result = {
        "query": "q", "mode": "inference",
        "base": [{"video_id": "v1", "score": 0.5, "rank": 1, "span": [10.0, 20.0]}],
        "emcl": [{"video_id": "v2", "score": 0.7, "rank": 1, "rank_change": 1}],
    }  # fmt: skip
    headers, rows = exports.search_table(result)
    assert headers[-1] == "span"
    assert rows[0][-1] == [10.0, 20.0] and rows[1][-1] is None
    assert rows[1][headers.index("rank_change")] == 1


def test_table_export_is_the_table_as_shown(root):
    shown = pd.DataFrame(
        [["base", 12.5, 3.0], ["EMCL", 14.0, None]], columns=["model", "t2v R@1", "t2v MdR"]
    )
    csv_path, json_path = exports.export_table(shown, "metrics", "session-1")
    assert read_csv(csv_path) == [
        ["model", "t2v R@1", "t2v MdR"], ["base", "12.5", "3.0"], ["EMCL", "14.0", ""]
    ]  # fmt: skip
    assert json.loads(json_path.read_text()) == {
        "columns": ["model", "t2v R@1", "t2v MdR"],
        "rows": [
            {"model": "base", "t2v R@1": 12.5, "t2v MdR": 3.0},
            {"model": "EMCL", "t2v R@1": 14.0, "t2v MdR": None},
        ],
    }
    with pytest.raises(KnobError, match="nothing to export"):
        exports.export_table(pd.DataFrame(columns=["model"]), "metrics", "session-1")


def test_cells_that_a_spreadsheet_would_run_are_quoted():
    text = exports.csv_text(["a", "b"], [["=HYPERLINK(1)", "+1"], ["-x", 3], ["@cmd", -2.5]])
    assert read_csv_text(text) == [["a", "b"], ["'=HYPERLINK(1)", "'+1"], ["'-x", "3"],
                                   ["'@cmd", "-2.5"]]  # fmt: skip


def read_csv_text(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_sessions_get_their_own_folder_named_by_a_hash(root):
    a = exports.session_folder("session-a")
    b = exports.session_folder("session-b")
    evil = exports.session_folder("../../etc")
    assert a != b and a == exports.session_folder("session-a")
    for folder in (a, b, evil):
        assert folder.parent == root and len(folder.name) == 20
    assert exports.session_folder(None).parent == root


def test_a_second_export_replaces_the_first_and_old_folders_go(root, explorer):
    first = exports.export_search(explorer, "a red circle", KNOBS, "s")
    second = exports.export_search(explorer, "a blue square", KNOBS, "s")
    assert first == second  # same names: the session's files are replaced, not piled up
    assert json.loads(second[1].read_text())["query"] == "a blue square"
    assert sorted(p.name for p in second[0].parent.iterdir()) == [
        "search_results.csv", "search_results.json"
    ]  # fmt: skip
    old = exports.session_folder("old-session")
    stale = time.time() - exports.MAX_AGE_S - 10
    os.utime(old, (stale, stale))
    exports.session_folder("someone-else")
    assert not old.exists() and second[0].exists()
