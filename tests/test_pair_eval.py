"""Paired evaluation of runs against a base: the † and ‡ rows equal the evaluation protocol's
own computation, the study's seeds stand beside them with the paired differences and t-tests,
and runs of different recipes are refused with the reason."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from test_checkpoint_catalog import tiny_checkpoint

import emcl.explorer.setup as explorer_setup
from emcl.evaluation.protocol import extract, metrics, scores
from emcl.explorer.knobs import KnobError
from emcl.explorer.latest import JobState
from emcl.explorer.pair_eval import PairEvaluation
from emcl.explorer.setup import load_explorer
from emcl.model.checkpoint import read_config
from emcl.model.config import EMCLConfig
from emcl.study.run import DIRECTIONS, METRICS
from emcl.study.stats import paired_t_test

JOINT = EMCLConfig(k=16, beta=2.0)


@pytest.fixture(scope="module")
def inputs(explorer_inputs, tmp_path_factory) -> dict:
    """Two runs of one recipe (seeds 0 and 1, trained on the app's world), one of another
    preset, and a study of that recipe with seeds 0 and 1."""
    root = tmp_path_factory.mktemp("pair-eval")
    world = explorer_inputs["world"]
    runs = root / "runs"
    same = {"data": str(world)}
    paths = {
        "s0": tiny_checkpoint(runs / "run-s0", 101, JOINT, {**same, "seed": 0}),
        "s1": tiny_checkpoint(runs / "run-s1", 102, JOINT, {**same, "seed": 1}),
        "other": tiny_checkpoint(runs / "other", 103, JOINT, {**same, "seed": 2, "preset": "demo"}),
    }
    record = json.loads((world / "world.json").read_text())

    def values(offset: float) -> dict:
        return {d: {m: [10.0 + offset, 12.0 + 2 * offset] for m in METRICS} for d in DIRECTIONS}

    study = {
        "seeds": [0, 1],
        "rows": {"base": values(0.0), "emcl": values(1.5)},
        "train": {"preset": "demo-v2", "data": "/elsewhere/world", "seed": "per run",
                  "model": read_config(paths["s0"])[0].to_dict(),
                  "init_from": "/elsewhere/runs/demo-pretrain/best"},
        "world": {k: record[k] for k in ("version", "seed", "n_train", "n_test")},
    }  # fmt: skip
    (root / "study.json").write_text(json.dumps(study))
    setup = dataclasses.replace(explorer_inputs["setup"](), checkpoint_dirs=(runs,))
    return {**explorer_inputs, "paths": paths, "study": root / "study.json", "setup": setup,
            "root": root}  # fmt: skip


def explorer_with_study(inputs, study: Path, monkeypatch):
    real = explorer_setup.model_sources
    monkeypatch.setattr(
        explorer_setup, "model_sources", lambda s: dataclasses.replace(real(s), study=study)
    )
    return load_explorer(inputs["setup"])


def finished(explorer, *args, timeout: float = 600) -> PairEvaluation:
    end = time.monotonic() + timeout
    while isinstance(result := explorer.evaluate_pair(*args), JobState):
        assert result.error is None, result.error
        assert time.monotonic() < end, result
        time.sleep(0.1)
    return result


def reference(checkpoint: Path, world: Path, cache: Path, joint: bool) -> dict:
    """The study's row computed directly with emcl/evaluation/protocol.py (own cache)."""
    features = extract(checkpoint, str(world), "test", cache, "cpu", progress=False)
    params = read_config(checkpoint)[0].emcl.params() if joint else None
    result = metrics(scores(features, params), features)
    return {d: result[d] for d in DIRECTIONS}


def close(a: dict, b: dict) -> bool:
    return all(abs(a[d][m] - b[d][m]) < 1e-6 for d in DIRECTIONS for m in METRICS)


def test_runs_beside_the_base_and_the_study(inputs, monkeypatch):
    explorer = explorer_with_study(inputs, inputs["study"], monkeypatch)
    names = {e.path.name: e.name for e in explorer.checkpoint_catalog()}
    base = next(e.name for e in explorer.checkpoint_catalog()
                if e.path.resolve() == inputs["checkpoints"]["demo-base"].resolve())  # fmt: skip
    study = str(inputs["study"])
    assert study in explorer.studies()
    result = finished(explorer, [names["run-s0"], names["run-s1"]], base, study)

    cache, world = inputs["root"] / "reference-cache", inputs["world"]
    dagger = reference(inputs["checkpoints"]["demo-base"], world, cache, joint=False)
    ddagger = [reference(inputs["paths"][s], world, cache, joint=True) for s in ("s0", "s1")]
    assert [r.seed for r in result.rows] == [0, 1] and result.videos == 80
    for row, mine in zip(result.rows, ddagger, strict=True):
        assert close(row.joint, mine) and close(row.base, dagger)
    saved = json.loads(inputs["study"].read_text())["rows"]
    for i, row in enumerate(result.rows):
        assert row.study_base == {d: {m: saved["base"][d][m][i] for m in METRICS}
                                  for d in DIRECTIONS}  # fmt: skip
        assert row.study_joint["t2v"]["R1"] == saved["emcl"]["t2v"]["R1"][i]
    assert "same recipe" in result.study_note

    # The paired t-test: ‡ of each run against the study's † of its seed.
    t, p = paired_t_test([m["t2v"]["R1"] for m in ddagger], saved["base"]["t2v"]["R1"])
    assert result.tests["‡ vs †"]["t2v"]["R1"] == pytest.approx((t, p))
    assert "‡ vs study ‡" in result.tests and "2 seeds" in result.test_note
    table = {row[0]: row[1:] for row in result.table()}
    first = "s0 ‡ − study †"
    assert table[first][0] == pytest.approx(ddagger[0]["t2v"]["R1"] - saved["base"]["t2v"]["R1"][0],
                                            abs=0.01)  # fmt: skip
    assert table["s1 ‡ − †"][5] == pytest.approx(ddagger[1]["v2t"]["R1"] - dagger["v2t"]["R1"],
                                                 abs=0.01)  # fmt: skip
    assert "t (‡ vs †)" in table and "p (‡ vs study ‡)" in table
    assert explorer.evaluate_pair([names["run-s0"], names["run-s1"]], base, study) is result


def test_recipes_are_not_mixed(inputs, monkeypatch):
    explorer = explorer_with_study(inputs, inputs["study"], monkeypatch)
    names = {e.path.name: e.name for e in explorer.checkpoint_catalog()}
    with pytest.raises(KnobError, match=r"refusing to mix recipes.*preset demo-v2 vs demo"):
        explorer.evaluate_pair([names["run-s0"], names["other"]])
    with pytest.raises(KnobError, match="cannot be the base"):
        explorer.evaluate_pair([names["run-s0"]], names["run-s1"])
    with pytest.raises(KnobError, match="no study named"):
        explorer.evaluate_pair([names["run-s0"]], None, "/etc/passwd")


def test_a_study_of_another_recipe_is_not_set_beside(inputs, monkeypatch):
    study = json.loads(inputs["study"].read_text())
    study["train"]["preset"] = "demo"
    other = inputs["root"] / "other-study.json"
    other.write_text(json.dumps(study))
    explorer = explorer_with_study(inputs, other, monkeypatch)
    names = {e.path.name: e.name for e in explorer.checkpoint_catalog()}
    result = finished(explorer, [names["run-s0"]])  # against the served base
    assert "recipe differs" in result.study_note and "preset demo-v2 vs demo" in result.study_note
    assert result.rows[0].study_base is None and result.tests == {}
    assert "two or more seeds" in result.test_note
    assert not any("study" in row[0] for row in result.table())


def test_the_studies_offered_are_the_study_tabs(tmp_path):
    from types import SimpleNamespace

    from emcl.explorer.checkpoints import ModelSources
    from emcl.explorer.pair_eval import studies
    from emcl.study.view import find_studies

    shipped = tmp_path / "study.json"
    shipped.write_text("{}")
    given = tmp_path / "given" / "run-a"
    given.mkdir(parents=True)
    (given / "study.json").write_text("{}")
    (tmp_path / "given" / ".hidden").mkdir()
    (tmp_path / "given" / ".hidden" / "study.json").write_text("{}")
    folders = (tmp_path / "given", tmp_path / "absent")
    sources = ModelSources(study=shipped, study_folders=folders)
    offered = studies(SimpleNamespace(models=sources))
    assert list(offered.values()) == [shipped, given / "study.json"]
    assert list(offered.values()) == find_studies(folders, default=shipped)  # the Study tab's
