"""The Study tab (ui/tabs/study.py, ui/study_plots.py): it builds inside a page, its handlers
return figures whose traces hold the study's numbers (checked against numpy on the synthetic
study of test_study_view.py), refused files leave the tab working, only offered studies are
read, and the CSV/JSON export and ``/study`` carry the same numbers."""

from __future__ import annotations

import csv
import io
import json

import gradio as gr
import numpy as np
import pytest
from test_study_view import CEILING, COMPARED, SEEDS, np_std, synthetic_study

from emcl.study import view as sv
from ui import exports, study_plots
from ui.tabs import study as tab_module


@pytest.fixture
def runs(tmp_path):
    """A runs folder with one valid synthetic study and one malformed one."""
    folder = tmp_path / "runs"
    (folder / "mine").mkdir(parents=True)
    (folder / "mine" / "study.json").write_text(json.dumps(synthetic_study()))
    bad = synthetic_study()
    bad["rows"]["emcl"]["t2v"]["R1"] = bad["rows"]["emcl"]["t2v"]["R1"][:2]
    (folder / "bad").mkdir()
    (folder / "bad" / "study.json").write_text(json.dumps(bad))
    return folder


@pytest.fixture
def sources(runs):
    return lambda: [runs]


def name_of(runs, which: str) -> str:
    return tab_module.shown_name(runs / which / "study.json")


def traces(fig, **meta) -> list:
    return [t for t in fig.data if t.meta and all(t.meta.get(k) == v for k, v in meta.items())]


def one(fig, **meta):
    found = traces(fig, **meta)
    assert len(found) == 1, (meta, len(found))
    return found[0]


# ---- the page ------------------------------------------------------------------------------
def test_the_tab_builds_and_wires_inside_a_page(sources, runs):
    with gr.Blocks() as demo:
        with gr.Tabs():
            tab = tab_module.build(sources)
        tab_module.wire(tab, sources)
    assert isinstance(tab.tab, gr.Tab) and isinstance(tab.r1_plot, gr.Plot)
    names = [name for name, _ in tab.source.choices]
    assert names[0] == "checkpoints/study.json"  # the shipped study comes first
    assert name_of(runs, "mine") in names and name_of(runs, "bad") in names
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    assert "study" in fns
    show = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "show")
    status, _, _, r1, *_ = show(name_of(runs, "mine"))
    assert status.startswith(f"**{name_of(runs, 'mine')}**: 4 seeds")
    study = synthetic_study()
    assert one(r1, kind="seeds", row="emcl", direction="v2t").y == tuple(
        study["rows"]["emcl"]["v2t"]["R1"]
    )
    answer = fns["study"].fn(name_of(runs, "mine"))
    assert answer["seeds"] == SEEDS and name_of(runs, "mine") in answer["offered"]
    assert answer == json.loads(json.dumps(answer, allow_nan=False))
    with pytest.raises(gr.Error, match="cannot be shown"):
        fns["study"].fn(name_of(runs, "bad"))
    with pytest.raises(gr.Error, match="not one of the studies offered"):
        fns["study"].fn("/etc/passwd")


# ---- the figures hold the numbers -----------------------------------------------------------
def test_r1_figure_points_means_and_ceiling(sources, runs):
    _, conclusion, table, r1, *_ = tab_module.draw(name_of(runs, "mine"), sources)
    study = synthetic_study()
    for row, directions in study["rows"].items():
        for d in ("t2v", "v2t"):
            values = directions[d]["R1"]
            seeds = one(r1, kind="seeds", row=row, direction=d)
            assert seeds.y == tuple(values)
            assert [c[0] for c in seeds.customdata] == SEEDS  # the hover names the seed
            mean = one(r1, kind="mean", row=row, direction=d)
            assert mean.y[0] == pytest.approx(np.mean(values), rel=1e-12)
            assert mean.error_y.array[0] == pytest.approx(np_std(values), rel=1e-12)
            assert mean.xaxis == ("x" if d == "t2v" else "x2")
    ceiling = one(r1, kind="ceiling")
    assert ceiling.y == (CEILING, CEILING) and ceiling.xaxis == "x"  # on t2v only
    assert "EMCL measurably lowers R@1 for base + EMCL (L2)" in conclusion
    assert len(table) == 5


def test_differences_figure_has_each_seeds_difference_and_the_test(sources, runs):
    figure = tab_module.draw(name_of(runs, "mine"), sources)[4]
    study = synthetic_study()
    for row, ref in COMPARED.items():
        for d in ("t2v", "v2t"):
            a = np.asarray(study["rows"][row][d]["R1"])
            b = np.asarray(study["rows"][ref][d]["R1"])
            points = one(figure, kind="differences", row=row, direction=d)
            assert points.y == pytest.approx((a - b).tolist(), abs=1e-12)
            mean = one(figure, kind="mean", row=row, direction=d)
            assert mean.y[0] == pytest.approx((a - b).mean(), abs=1e-12)
            assert mean.error_y.array[0] == pytest.approx((a - b).std(ddof=1), rel=1e-9)
            p = study["p_values"][row][d]["R1"]
            shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
            assert mean.text == (shown,)
            t = (a - b).mean() / ((a - b).std(ddof=1) / np.sqrt(len(a)))
            assert f"t = {t:+.2f}, {shown}" in mean.hovertemplate


def test_beta_figure_is_table2_with_its_spread(sources, runs):
    figure = tab_module.draw(name_of(runs, "mine"), sources)[5]
    t2 = synthetic_study()["table2"]
    for model, prefix in (("emcl", ""), ("base+emcl", "base+emcl_")):
        for d in ("t2v", "v2t"):
            curve = one(figure, kind="table2", model=model, direction=d)
            assert curve.y == tuple(t2[f"{prefix}{d}_R1"])
            assert tuple(curve.error_y.array) == tuple(t2[f"{prefix}{d}_R1_std"])
            assert [c[0] for c in curve.customdata] == t2["beta"]
            assert np.allclose(np.subtract(curve.x, t2["beta"]), curve.x[0] - t2["beta"][0])
            assert abs(curve.x[0]) <= study_plots.BETA_SHIFT  # only nudged apart


def test_errors_figure_shares_stack_to_100(sources, runs):
    figure = tab_module.draw(name_of(runs, "mine"), sources)[6]
    errors = synthetic_study()["top1_errors"]
    bases = np.zeros(2)
    for share in sv.SHARES:
        bar = one(figure, kind="share", share=share)
        assert bar.x == tuple(errors[m][share] for m in ("base", "emcl"))
        assert bar.base == pytest.approx(bases.tolist())
        bases += bar.x
    assert bases == pytest.approx([100.0, 100.0])
    wrong = one(figure, kind="wrong_per_miss", model="emcl")
    assert dict(zip(wrong.x, wrong.y, strict=True)) == errors["emcl"]["wrong_per_miss"]


def test_an_older_study_draws_what_it_has(tmp_path):
    study = synthetic_study()
    for key in ("top1_errors", "ceiling", "t_values"):
        del study[key]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.json").write_text(json.dumps(study))
    status, conclusion, _, r1, diffs, _, errors = tab_module.draw(
        tab_module.shown_name(tmp_path / "old" / "study.json"), lambda: [tmp_path]
    )
    assert "not in this study (older run): t statistics" in status
    assert traces(r1, kind="ceiling") == [] and "no ambiguity ceiling" in r1.layout.title.text
    assert errors.data == () and "no top-1 error breakdown" in errors.layout.annotations[0].text
    assert len(traces(diffs, kind="mean")) == 6 and "No ambiguity ceiling" in conclusion


# ---- refusals, picker, exports ---------------------------------------------------------------
def test_a_refused_study_says_why_and_the_tab_keeps_working(sources, runs):
    status, conclusion, table, *figures = tab_module.draw(name_of(runs, "bad"), sources)
    assert status.startswith("**Refused:**")
    assert "rows.emcl.t2v.R1: expected 4 values (one per seed), got 2" in status
    assert conclusion == "" and table == [] and all(f.data == () for f in figures)
    assert tab_module.draw("../../etc/passwd", sources)[0] == (
        "**Refused:** '../../etc/passwd' is not one of the studies offered"
    )
    status = tab_module.draw(name_of(runs, "mine"), sources)[0]
    assert status.startswith(f"**{name_of(runs, 'mine')}**")


def test_rescan_finds_new_studies_and_keeps_the_choice(sources, runs):
    update, status, *_ = tab_module.rescan(name_of(runs, "mine"), sources)
    assert update["value"] == name_of(runs, "mine") and "**Refused" not in status
    (runs / "later").mkdir()
    (runs / "later" / "study.json").write_text(json.dumps(synthetic_study(5)))
    update, *_ = tab_module.rescan("gone", sources)
    assert name_of(runs, "later") in update["choices"]
    assert update["value"] == update["choices"][0] == "checkpoints/study.json"
    assert tab_module.load("", sources).source == "checkpoints/study.json"


def test_export_writes_every_number(sources, runs, tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    monkeypatch.setattr(exports, "EXPORTS_ROOT", folder)
    monkeypatch.setattr(exports.session_folder, "__defaults__", (folder,))
    csv_path, json_path = tab_module.export(name_of(runs, "mine"), sources, "session-9")
    assert csv_path.parent.parent == folder and csv_path.name == "study.csv"
    view = sv.load_study(runs / "mine" / "study.json", name_of(runs, "mine"))
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(sv.to_json(view)))
    parsed = list(csv.reader(io.StringIO(csv_path.read_text())))
    assert parsed[0] == sv.CSV_HEADERS and len(parsed) == len(sv.csv_rows(view)) + 1
    study = synthetic_study()
    mean = next(r for r in parsed if r[:5] == ["mean", "emcl", "", "t2v", "R1"])
    assert float(mean[-1]) == pytest.approx(np.mean(study["rows"]["emcl"]["t2v"]["R1"]))
    p = next(r for r in parsed if r[:5] == ["p", "base+emcl(l2)", "base(l2)", "v2t", "R1"])
    assert float(p[-1]) == study["p_values"]["base+emcl(l2)"]["v2t"]["R1"]
    with pytest.raises(sv.StudyFileError):
        tab_module.export(name_of(runs, "bad"), sources, "session-9")
