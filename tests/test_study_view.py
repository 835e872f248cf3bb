"""The Study tab's numbers (emcl/study/view.py) against plain numpy on a synthetic study.json
with known values: means, stds, paired differences, t (and p against Student's t tables),
the conclusion's words, the CSV/JSON exports; malformed files refused with a reason; older
studies shown with what they lack; find_studies."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.study import view as sv
from emcl.study.stats import paired_t_test

SEEDS = [3, 7, 11, 19]
METRICS = ("R1", "R5", "R10", "MdR", "MnR")
COMPARED = {"base+emcl": "base", "emcl": "base", "base+emcl(l2)": "base(l2)"}
SHIFT = {"base": 0.0, "base+emcl": 0.0, "emcl": 0.5, "base(l2)": -4.0, "base+emcl(l2)": -10.0}
CEILING = 64.5
T_05_DF4 = 2.776445105  # Student's t, two-sided 0.05, 4 degrees of freedom (tables)


def np_std(values) -> float:
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def np_t(a, b) -> float:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean() / (d.std(ddof=1) / math.sqrt(len(d))))


def synthetic_study(seed: int = 20) -> dict:
    """A study.json as emcl/study/run.py writes it, from seeded random per-seed values:
    § and ‡ differ from † by noise (plus 0.5 for ‡), base+emcl(l2) is 6 points below base(l2)
    in every seed (a clear drop)."""
    rng = np.random.default_rng(seed)
    n = len(SEEDS)
    base = {d: {m: rng.uniform(15, 25, n).round(1) for m in METRICS} for d in ("t2v", "v2t")}
    rows = {}
    for name, shift in SHIFT.items():
        rows[name] = {
            d: {m: (base[d][m] + shift + rng.normal(0, 0.4, n)).round(2).tolist() for m in METRICS}
            for d in ("t2v", "v2t")
        }
    tests = {
        row: {d: {m: paired_t_test(rows[row][d][m], rows[ref][d][m]) for m in METRICS}
              for d in ("t2v", "v2t")}
        for row, ref in COMPARED.items()
    }  # fmt: skip
    beta = [0.0, 1.0, 2.0, 3.0, 4.0]
    per_seed = {k: rng.uniform(18, 24, (n, len(beta))) for k in ("t2v", "v2t", "s_t2v", "s_v2t")}
    table2 = {"beta": beta, "inverted_softmax": True}
    for key, prefix in (("t2v", ""), ("v2t", ""), ("s_t2v", "base+emcl_"), ("s_v2t", "base+emcl_")):
        name = f"{prefix}{key[-3:]}_R1"
        table2[name] = per_seed[key].mean(axis=0).tolist()
        table2[f"{name}_std"] = per_seed[key].std(axis=0, ddof=1).tolist()
    errors = {
        "base": {"own_clip": 21.5, "another_described_clip": 3.5, "undescribed_clip": 75.0,
                 "wrong_per_miss": {"color": 0.2, "shape": 0.7, "motion": 1.3}},
        "emcl": {"own_clip": 22.0, "another_described_clip": 4.0, "undescribed_clip": 74.0,
                 "wrong_per_miss": {"color": 0.25, "shape": 0.65, "motion": 1.2}},
    }  # fmt: skip
    return {
        "seeds": SEEDS,
        "rows": rows,
        "p_values": {r: {d: {m: t[1] for m, t in ms.items()} for d, ms in ds.items()}
                     for r, ds in tests.items()},
        "t_values": {r: {d: {m: t[0] for m, t in ms.items()} for d, ms in ds.items()}
                     for r, ds in tests.items()},
        "compared_with": dict(COMPARED),
        "table2": table2,
        "top1_errors": errors,
        "ceiling": {"t2v_R1": CEILING},
        "world": {"version": 2, "seed": 0, "n_train": 300, "n_test": 100},
        "train": {"steps": 77},
        "device": {"finetune": "cuda", "evaluation": ["cuda"], "evaluation_gpu": ["NVIDIA H200"]},
        "seconds": {"total_this_run": 600.0},
        "note": "A synthetic study\nfor the tests.",
    }  # fmt: skip


@pytest.fixture
def study() -> dict:
    return synthetic_study()


# ---- the numbers ----------------------------------------------------------------------------
def test_means_and_stds_are_numpys(study):
    view = sv.study_view(study)
    assert view.seeds == tuple(SEEDS)
    assert list(view.rows) == list(SHIFT)  # run.py's row order
    for row, directions in study["rows"].items():
        for d, metrics in directions.items():
            for m, values in metrics.items():
                s = view.rows[row][d][m]
                assert s.values == tuple(values)
                assert s.mean == pytest.approx(float(np.mean(values)), rel=1e-12)
                assert s.std == pytest.approx(np_std(values), rel=1e-12)


def test_differences_t_and_p(study):
    view = sv.study_view(study)
    assert view.notices == ()  # the stored t and p agree with the per-seed values
    assert len(view.comparisons) == len(COMPARED) * 2 * len(METRICS)
    for row, ref in COMPARED.items():
        for d in ("t2v", "v2t"):
            for m in METRICS:
                c = view.comparison(row, d, m)
                a, b = study["rows"][row][d][m], study["rows"][ref][d][m]
                diffs = np.asarray(a) - np.asarray(b)
                assert c.reference == ref
                assert c.differences == pytest.approx(diffs.tolist(), abs=1e-12)
                assert c.mean == pytest.approx(diffs.mean(), abs=1e-12)
                assert c.std == pytest.approx(diffs.std(ddof=1), rel=1e-9)
                assert c.t == pytest.approx(np_t(a, b), rel=1e-9)
                assert c.p == study["p_values"][row][d][m] and not c.t_recomputed
                assert c.significant == (study["p_values"][row][d][m] < 0.05)


def test_the_p_of_a_known_t_is_the_tables_and_the_detectable_difference():
    """Differences with t = 2.776 at 4 degrees of freedom: p = 0.05 (the table's value)."""
    study = synthetic_study()
    m = T_05_DF4 * math.sqrt(0.5)  # diffs m-2 .. m+2 have sd sqrt(2.5): t = m / sqrt(0.5)
    base = [20.0, 21.0, 19.5, 22.0, 20.5]
    study["seeds"] = [0, 1, 2, 3, 4]
    for row in study["rows"]:
        for d in ("t2v", "v2t"):
            study["rows"][row][d] = {"R1": list(base)}
    study["rows"]["emcl"]["t2v"]["R1"] = [
        b + m + k for b, k in zip(base, (-2, -1, 0, 1, 2), strict=True)
    ]
    study["p_values"] = {r: {d: {"R1": 1.0} for d in ("t2v", "v2t")} for r in COMPARED}
    study["p_values"]["emcl"]["t2v"]["R1"] = 0.05
    del study["t_values"]
    view = sv.study_view(study)
    c = view.comparison("emcl", "t2v")
    assert c.t_recomputed and c.t == pytest.approx(T_05_DF4, rel=1e-9)
    assert view.notices == ()  # the table's p = 0.05 matches the recomputed one within 1e-6
    assert sv.critical_t(4) == pytest.approx(T_05_DF4, rel=1e-7)
    assert sv.critical_t(1) == pytest.approx(12.7062047, rel=1e-7)
    assert c.detectable == pytest.approx(T_05_DF4 * math.sqrt(2.5) / math.sqrt(5), rel=1e-7)
    assert c.detectable == pytest.approx(c.mean, rel=1e-7)  # this mean is just at p = 0.05
    identical = view.comparison("base+emcl", "v2t")
    assert identical.differences == (0.0,) * 5 and identical.t == 0.0 and identical.p == 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False)),
        min_size=2,
        max_size=8,
    )
)
def test_any_pairs_differences_and_t_are_numpys(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    study = synthetic_study()
    study["seeds"] = list(range(len(pairs)))
    for row in study["rows"]:
        study["rows"][row] = {d: {"R1": list(b)} for d in ("t2v", "v2t")}
    study["rows"]["emcl"]["t2v"]["R1"] = list(a)
    _, p = paired_t_test(a, b)
    study["p_values"] = {r: {d: {"R1": 1.0} for d in ("t2v", "v2t")} for r in COMPARED}
    study["p_values"]["emcl"]["t2v"]["R1"] = p
    study.pop("t_values")
    c = sv.study_view(study).comparison("emcl", "t2v")
    diffs = np.asarray(a) - np.asarray(b)
    assert c.mean == pytest.approx(diffs.mean(), abs=1e-9)
    assert c.std == pytest.approx(diffs.std(ddof=1), abs=1e-9)
    if diffs.std() > 1e-6:
        assert c.t == pytest.approx(np_t(a, b), rel=1e-6)
    json.dumps(sv.to_json(sv.study_view(study)), allow_nan=False)  # inf t travels as text


def test_p_against_scipy_when_it_is_there(study):
    stats = pytest.importorskip("scipy.stats")
    view = sv.study_view(study)
    for c in view.comparisons:
        a, b = (
            study["rows"][c.row][c.direction][c.metric],
            study["rows"][c.reference][c.direction][c.metric],
        )
        assert c.p == pytest.approx(float(stats.ttest_rel(a, b).pvalue), rel=1e-6, abs=1e-12)


def test_stored_numbers_that_disagree_are_flagged(study):
    study["t_values"]["emcl"]["v2t"]["R1"] += 1.0
    study["p_values"]["emcl"]["t2v"]["R1"] = (
        0.5 if study["p_values"]["emcl"]["t2v"]["R1"] < 0.4 else 0.1
    )
    view = sv.study_view(study)
    assert len(view.notices) == 2
    assert any(n.startswith("t of emcl.v2t.R1") for n in view.notices)
    assert any(n.startswith("p of emcl.t2v.R1") for n in view.notices)
    assert "Check: t of emcl.v2t.R1" in sv.conclusion(view)


def test_table2_and_errors_and_ceiling(study):
    view = sv.study_view(study)
    t2 = study["table2"]
    curves = {(c.model, c.direction): c for c in view.table2}
    assert set(curves) == {(m, d) for m in ("emcl", "base+emcl") for d in ("t2v", "v2t")}
    for (model, d), c in curves.items():
        key = ("" if model == "emcl" else "base+emcl_") + f"{d}_R1"
        assert c.beta == tuple(t2["beta"]) and c.mean == tuple(t2[key])
        assert c.std == tuple(t2[f"{key}_std"])
    assert [e.model for e in view.errors] == ["base", "emcl"]
    assert view.errors[1].shares == {
        "own_clip": 22.0, "another_described_clip": 4.0, "undescribed_clip": 74.0
    }  # fmt: skip
    assert view.errors[0].wrong_per_miss == {"color": 0.2, "shape": 0.7, "motion": 1.3}
    assert view.ceiling == CEILING and view.missing == ()


# ---- words ----------------------------------------------------------------------------------
def test_the_conclusion_is_computed_from_the_data(study):
    view = sv.study_view(study)
    text = sv.conclusion(view)
    for row, ref in COMPARED.items():
        for d in ("t2v", "v2t"):
            a, b = study["rows"][row][d]["R1"], study["rows"][ref][d]["R1"]
            mean = float(np.mean(np.asarray(a) - np.asarray(b)))
            p = study["p_values"][row][d]["R1"]
            shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
            assert f"{d} R@1 {mean:+.2f} points (t = {np_t(a, b):+.2f}, {shown}" in text
    p = study["p_values"]
    assert p["base+emcl(l2)"]["t2v"]["R1"] < 0.05 and p["base+emcl(l2)"]["v2t"]["R1"] < 0.05
    quiet = [r for r in ("base+emcl", "emcl") if all(p[r][d]["R1"] >= 0.05 for d in p[r])]
    assert quiet  # the synthetic study has at least one row without a measurable difference
    names = ", ".join(sv.label(r) for r in quiet)
    assert f"EMCL makes no measurable difference to R@1 for {names} on these seeds" in text
    assert "EMCL measurably lowers R@1 for base + EMCL (L2)." in text
    base = float(np.mean(study["rows"]["base"]["t2v"]["R1"]))
    assert f"The base reaches {base:.1f} % t2v R@1, {100 * base / CEILING:.0f} % of the" in text
    assert "4 seeds (3, 7, 11, 19)" in text and "What these 4 seeds say" in text
    assert "evaluation on cuda (NVIDIA H200)" in text and "took 10.0 min" in text
    assert "A synthetic study for the tests." in text  # the note, on one line


def test_no_difference_says_so_with_the_detectable_size():
    study = synthetic_study()
    for row, ref in COMPARED.items():
        study["rows"][row] = copy.deepcopy(study["rows"][ref])
    study["p_values"] = {r: {d: {"R1": 1.0} for d in ("t2v", "v2t")} for r in COMPARED}
    study.pop("t_values")
    text = sv.conclusion(sv.study_view(study))
    assert "EMCL makes no measurable difference to R@1 for § base + EMCL, ‡ EMCL (joint), " in text
    assert "measurably" not in text.replace("no measurable", "")
    kind, words = sv.verdict(sv.study_view(study), "emcl")
    assert kind == "none" and "±0.00 points" in words


def test_summary_table_rows(study):
    view = sv.study_view(study)
    table = sv.summary_table(view)
    assert [line[0] for line in table] == [sv.label(r) for r in SHIFT]
    assert all(len(line) == len(sv.SUMMARY_HEADERS) for line in table)
    a, b = study["rows"]["emcl"]["v2t"]["R1"], study["rows"]["base"]["v2t"]["R1"]
    line = table[2]
    assert line[2] == f"{np.mean(a):.2f} ± {np_std(a):.2f}"
    assert line[3] == "† base" and line[6] == f"{np.mean(np.subtract(a, b)):+.2f}"
    assert line[8] == f"{100 * np.mean(study['rows']['emcl']['t2v']['R1']) / CEILING:.0f} %"
    assert table[0][3:8] == [""] * 5  # the base is compared with nothing


# ---- exports --------------------------------------------------------------------------------
def test_csv_rows_hold_every_number(study):
    view = sv.study_view(study)
    rows = sv.csv_rows(view)
    assert all(len(r) == len(sv.CSV_HEADERS) for r in rows)
    by = {}
    for q, row, ref, d, m, beta, seed, value in rows:
        by[(q, row, ref, d, m, beta, seed)] = value
    values = study["rows"]["base+emcl(l2)"]["v2t"]["MnR"]
    for seed, v in zip(SEEDS, values, strict=True):
        assert by[("per_seed", "base+emcl(l2)", None, "v2t", "MnR", None, seed)] == v
    assert by[("std", "base+emcl(l2)", None, "v2t", "MnR", None, None)] == pytest.approx(
        np_std(values)
    )
    a, b = study["rows"]["emcl"]["t2v"]["R5"], study["rows"]["base"]["t2v"]["R5"]
    assert by[("difference", "emcl", "base", "t2v", "R5", None, 11)] == pytest.approx(a[2] - b[2])
    assert by[("t", "emcl", "base", "t2v", "R5", None, None)] == pytest.approx(np_t(a, b))
    assert (
        by[("p", "emcl", "base", "t2v", "R5", None, None)] == study["p_values"]["emcl"]["t2v"]["R5"]
    )
    assert (
        by[("table2_std", "base+emcl", None, "v2t", "R1", 3.0, None)]
        == (study["table2"]["base+emcl_v2t_R1_std"][3])
    )
    assert by[("top1_share", "emcl", None, "t2v", "undescribed_clip", None, None)] == 74.0
    assert by[("ceiling", None, None, "t2v", "R1", None, None)] == CEILING
    n_series = 5 * 2 * 5
    n_tests = 3 * 2 * 5
    assert len(rows) == n_series * (4 + 2) + n_tests * (4 + 4) + 4 * 5 * 2 + 2 * 6 + 1


def test_to_json_is_plain_json(study):
    view = sv.study_view(study)
    document = json.loads(json.dumps(sv.to_json(view), allow_nan=False))
    assert document["rows"]["emcl"]["t2v"]["R1"]["values"] == study["rows"]["emcl"]["t2v"]["R1"]
    first = document["comparisons"][0]
    assert (first["row"], first["direction"], first["metric"]) == ("base+emcl", "t2v", "R1")
    assert document["ceiling"] == {"t2v_R1": CEILING}
    assert document["conclusion"] == sv.conclusion(view)
    assert document["provenance"]["steps"] == 77


# ---- older and malformed files --------------------------------------------------------------
def test_an_older_study_shows_what_it_has(study):
    for key in ("t_values", "top1_errors", "ceiling"):
        del study[key]
    for key in [k for k in study["table2"] if k.endswith("_std")]:
        del study["table2"][key]
    view = sv.study_view(study)
    assert view.errors == () and view.ceiling is None
    assert all(c.t_recomputed for c in view.comparisons)
    a, b = study["rows"]["emcl"]["t2v"]["R1"], study["rows"]["base"]["t2v"]["R1"]
    assert view.comparison("emcl", "t2v").t == pytest.approx(np_t(a, b), rel=1e-9)
    assert all(c.std is None for c in view.table2)
    assert len(view.missing) == 4
    text = sv.conclusion(view)
    assert (
        "No ambiguity ceiling recorded" in text and "Not in this study.json: t statistics" in text
    )
    assert "recomputed" in text
    assert all(line[-1] == "" for line in sv.summary_table(view))


def _set(study: dict, path: str, value) -> dict:
    *keys, last = path.split(".")
    node = study
    for key in keys:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return study


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("seeds", KeyError, "no seeds"),
        ("rows", KeyError, "no rows"),
        ("seeds", [1, 1, 2, 3], "distinct seeds"),
        ("seeds", [1], "distinct seeds"),
        ("seeds", ["a", "b"], "seeds: expected a list of integers"),
        ("rows.base", KeyError, "rows: no base row"),
        ("rows.emcl.t2v.R1", [1.0, 2.0], "rows.emcl.t2v.R1: expected 4 values"),
        ("rows.emcl.t2v.R1", [1.0, "2", 3.0, 4.0], "rows.emcl.t2v.R1[1]: expected a number"),
        ("rows.emcl.t2v.R1", [1.0, True, 3.0, 4.0], "rows.emcl.t2v.R1[1]: expected a number"),
        ("rows.emcl.t2v.R1", [1.0, math.nan, 3.0, 4.0], "expected a finite number"),
        ("rows.emcl.v2t", KeyError, "rows.emcl.v2t: expected an object"),
        ("rows.emcl.v2t.R1", KeyError, "rows.emcl.v2t: no R1"),
        ("compared_with.emcl", "nobody", "compared_with: emcl vs 'nobody': no such row"),
        ("p_values.emcl.t2v.R1", 1.5, "p_values.emcl.t2v.R1: 1.5 is not a probability"),
        ("p_values.emcl.t2v.R1", KeyError, "p_values.emcl.t2v.R1: expected a number"),
        ("t_values.emcl.t2v.R1", "big", "t_values.emcl.t2v.R1: expected a number"),
        ("table2.beta", [], "table2.beta: expected a list"),
        ("table2.t2v_R1", [1.0], "table2.t2v_R1: expected 5 values (one per beta)"),
        ("ceiling.t2v_R1", 170.0, "not an R@1"),
        ("top1_errors.emcl.own_clip", None, "top1_errors.emcl.own_clip: expected a number"),
        ("top1_errors.emcl.wrong_per_miss", [], "wrong_per_miss: expected an object"),
    ],
)
def test_malformed_studies_are_refused_with_the_reason(study, path, value, reason):
    with pytest.raises(sv.StudyFileError, match=re.escape(reason)):
        sv.study_view(_set(study, path, value))


def test_unreadable_files_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "study.json"
    path.write_text("{not json")
    with pytest.raises(sv.StudyFileError, match="not JSON"):
        sv.load_study(path)
    path.write_text("[1, 2]")
    with pytest.raises(sv.StudyFileError, match="not a JSON object"):
        sv.load_study(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(sv.StudyFileError, match="cannot read it"):
        sv.load_study(path)
    path.write_text(json.dumps(synthetic_study()))
    assert sv.load_study(path, "mine").source == "mine"
    monkeypatch.setattr(sv, "MAX_BYTES", 100)
    with pytest.raises(sv.StudyFileError, match="too large"):
        sv.load_study(path)
    with pytest.raises(sv.StudyFileError, match="cannot read it"):
        sv.load_study(tmp_path / "gone.json")


def test_the_shipped_study_loads_and_agrees_with_its_summary():
    """checkpoints/study.json: its stored t/p agree with its per-seed values, and the means and
    stds recomputed here equal run.py's summary."""
    view = sv.load_study(sv.DEFAULT_STUDY)
    raw = json.loads(sv.DEFAULT_STUDY.read_text())
    assert view.notices == () and view.missing == ()
    for row, directions in raw["summary"].items():
        for d, metrics in directions.items():
            for m, s in metrics.items():
                assert view.rows[row][d][m].mean == pytest.approx(s["mean"], rel=1e-9)
                assert view.rows[row][d][m].std == pytest.approx(s["std"], rel=1e-9, abs=1e-12)


# ---- finding studies --------------------------------------------------------------------------
def test_find_studies(tmp_path):
    default = tmp_path / "checkpoints" / "study.json"
    runs, other = tmp_path / "runs", tmp_path / "other"
    files = [
        default,
        runs / "study.json",
        runs / "b" / "study.json",
        runs / "a" / "study.json",
        runs / "a" / "deep" / "study.json",  # below MAX_DEPTH
        runs / ".hidden" / "study.json",
        runs / "a" / "eval.json",
        other / "study.json",
    ]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    (other / "link").symlink_to(runs / "a")  # the same file by another way: listed once
    found = sv.find_studies([runs, tmp_path / "missing", other, runs], default=default)
    assert found == [default, runs / "study.json", runs / "a" / "study.json",
                     runs / "b" / "study.json", other / "study.json"]  # fmt: skip
    assert sv.find_studies([runs / "b"], default=None) == [runs / "b" / "study.json"]
    assert sv.find_studies([], default=tmp_path / "none.json") == []
