"""Paired evaluation of finished runs against a base: the study's rows † (the base, no EM) and
‡ (the run, trained jointly, with its own EM settings and prior) on the test split of the app's
world, per seed, computed as the study computes them (emcl/evaluation/protocol.py's extract,
scores and metrics; emcl/study/run.py).

When a run's seed is one of a study's seeds (``checkpoints/study.json``, or another study
found under ``runs/``) and the study's recipe (preset, world, backbone) is the run's, the
study's † and ‡ of that seed stand beside the run's ‡, with the paired differences. With runs
of two or more seeds (one recipe), the paired t-test of ‡ against † (emcl/study/stats.py):
each seed's † is the study's † of that seed when the study covers every seed (the study's
protocol: a base fine-tuned with the same seed), else the evaluated base's. Runs of different
recipes are refused with the differences. The evaluation runs in the background
(``ctx.jobs``, below the searches' priority); asking again returns its progress, then the
result (cached until a checkpoint's files change).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emcl.core.em import EMParams
from emcl.evaluation.protocol import extract, metrics, scores
from emcl.explorer.checkpoints import (
    BASE,
    JOINT,
    CatalogEntry,
    Recipe,
    backbone_name,
    world_words,
)
from emcl.explorer.checkpoints import world_name as world_of
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import KnobError
from emcl.explorer.latest import JobProgress, JobState
from emcl.explorer.switching import catalog, shown, sources
from emcl.model.checkpoint import read_config
from emcl.study.run import DIRECTIONS, METRICS
from emcl.study.stats import paired_t_test
from emcl.study.view import find_studies

Metrics = dict[str, dict[str, float]]  # direction -> metric -> value
# A paired t-test's (t, p) per direction and metric.
Tests = dict[str, dict[str, tuple[float, float]]]
SPLIT = "test"


@dataclass(frozen=True)
class SeedRow:
    """One run: its ‡, the evaluated base's †, and the study's † and ‡ of its seed if known."""

    run: str
    seed: int | None
    joint: Metrics  # ‡
    base: Metrics  # †
    study_base: Metrics | None = None
    study_joint: Metrics | None = None


@dataclass(frozen=True)
class PairEvaluation:
    base: str  # the catalog name of the † model
    recipe: Recipe | None  # the runs' (one recipe)
    rows: tuple[SeedRow, ...]
    study: str | None  # the study beside the runs (None: none compared)
    study_note: str  # why the study's seeds are, or are not, beside the runs
    tests: dict[str, Tests]  # comparison -> t-test per direction and metric
    test_note: str
    videos: int
    seconds: float

    def table(self) -> list[list[Any]]:
        """Rows for a table: label, then t2v and v2t R1, R5, R10, MdR, MnR."""
        out: list[list[Any]] = []
        for r in self.rows:
            s = f"s{r.seed}" if r.seed is not None else "seed ?"
            shown_rows = [(f"{s} ‡ {r.run}", r.joint), (f"{s} † {self.base}", r.base),
                          (f"{s} ‡ − †", _minus(r.joint, r.base))]  # fmt: skip
            if r.study_base is not None and r.study_joint is not None:
                shown_rows += [(f"{s} † study", r.study_base), (f"{s} ‡ study", r.study_joint),
                               (f"{s} ‡ − study †", _minus(r.joint, r.study_base)),
                               (f"{s} ‡ − study ‡", _minus(r.joint, r.study_joint))]  # fmt: skip
            out += [[label, *_values(m)] for label, m in shown_rows]
        for name, test in self.tests.items():
            out.append([f"t ({name})", *(round(test[d][m][0], 2) for d, m in _cells())])
            out.append([f"p ({name})", *(round(test[d][m][1], 4) for d, m in _cells())])
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base, "recipe": self.recipe.to_json() if self.recipe else None,
            "rows": [r.__dict__ for r in self.rows], "study": self.study,
            "study_note": self.study_note, "tests": self.tests, "test_note": self.test_note,
            "videos": self.videos, "split": SPLIT, "seconds": self.seconds,
        }  # fmt: skip


def _cells() -> list[tuple[str, str]]:
    return [(d, m) for d in DIRECTIONS for m in METRICS]


def _values(m: Metrics) -> list[float]:
    return [round(m[d][k], 2) for d, k in _cells()]


def _minus(a: Metrics, b: Metrics) -> Metrics:
    return {d: {k: a[d][k] - b[d][k] for k in METRICS} for d in DIRECTIONS}


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------
def studies(ctx: ServiceContext) -> dict[str, Path]:
    """The studies a run may be set beside, by name: the ones the Study tab offers (the
    shipped one first, then those found under the study folders)."""
    settings = sources(ctx)
    return {shown(p): p for p in find_studies(settings.study_folders, default=settings.study)}


def study_names(ctx: ServiceContext) -> list[str]:
    return list(studies(ctx))


def study_recipe(study: dict[str, Any]) -> Recipe:
    train, world = study.get("train") or {}, study.get("world") or {}
    try:
        world = world_words(world)
    except (KeyError, TypeError):
        world = world_of(train.get("data"))
    init = train.get("init_from") or study.get("pretrained")
    return Recipe(train.get("preset"), world, backbone_name(train.get("model") or {}, init))


def _study_rows(study: dict[str, Any], seed: int | None) -> tuple[Metrics, Metrics] | None:
    """The study's † and ‡ of ``seed`` (None when the study has no such seed)."""
    seeds = study.get("seeds") or []
    if seed not in seeds:
        return None
    i = seeds.index(seed)
    rows = study["rows"]
    pick = lambda name: {d: {m: rows[name][d][m][i] for m in METRICS} for d in DIRECTIONS}  # noqa: E731
    return pick("base"), pick("emcl")


# --------------------------------------------------------------------------------------------
# The request
# --------------------------------------------------------------------------------------------
def _entries(
    ctx: ServiceContext, runs: object, base: object
) -> tuple[list[CatalogEntry], CatalogEntry]:
    """The runs (ok, jointly trained, one recipe, distinct seeds) and the base, by name."""
    names = [runs] if isinstance(runs, str) else list(runs or [])
    if not names:
        raise KnobError("pick one or more jointly trained runs to evaluate")
    entries = {e.name: e for e in catalog(ctx)}
    if base in (None, ""):  # the served base side
        served = ctx.store.switching.pair[0]
        where = Path(served).resolve() if served is not None else None
        base = next((n for n, e in entries.items() if e.path.resolve() == where), None)
    chosen = []
    for name, want in [*((n, JOINT) for n in names), (base, BASE)]:
        entry = entries.get(name) if isinstance(name, str) else None
        if entry is None or not entry.ok or entry.kind != want:
            why = "not in the catalog" if entry is None else entry.reason or f"a {entry.kind}"
            role = "the base (†)" if want == BASE else "a run (‡)"
            raise KnobError(f"{str(name)[:120]!r} cannot be {role}: {why}")
        chosen.append(entry)
    run_entries, base_entry = chosen[:-1], chosen[-1]
    _same_recipe(run_entries)
    seeds = [e.seed for e in run_entries]
    if len(set(seeds)) != len(seeds):
        raise KnobError(f"two runs share a seed ({seeds}): a paired comparison takes one per seed")
    return run_entries, base_entry


def _same_recipe(runs: Sequence[CatalogEntry]) -> None:
    first = runs[0]
    for other in runs[1:]:
        if first.recipe is None or other.recipe is None:
            missing = first.name if first.recipe is None else other.name
            raise KnobError(f"refusing to mix runs: {missing} records no recipe (config.json)")
        diff = first.recipe.differences(other.recipe)
        if diff:
            raise KnobError(
                f"refusing to mix recipes: {first.name} and {other.name} differ in "
                + "; ".join(diff)
            )


def evaluation(
    ctx: ServiceContext, runs: object, base: object = None, study: object = None
) -> PairEvaluation | JobState:
    """The paired evaluation of ``runs`` (catalog names of jointly trained checkpoints, one
    recipe) against ``base`` (a base checkpoint's name; None: the served base side) and
    ``study`` (a name from :func:`studies`; None: checkpoints/study.json). Never waits: the
    result when known, else the background computation's progress (or failure)."""
    settings = sources(ctx)
    if settings.data is None or settings.features_dir is None:
        raise KnobError("evaluating runs needs the app's start-up settings (load_explorer)")
    run_entries, base_entry = _entries(ctx, runs, base)
    known = studies(ctx)
    if study not in (None, "") and study not in known:
        raise KnobError(f"no study named {str(study)[:120]!r}; known: {', '.join(known)}")
    study_path = known.get(str(study)) if study else (known.get(shown(settings.study)))
    stamps = tuple((e.name, str(e.path), _stamp(e.path)) for e in [*run_entries, base_entry])
    key = ("pair-eval", stamps, str(study_path), _stamp_file(study_path), str(settings.data))
    hit = ctx.caches.pair_evals.get(key)
    if hit is not None:
        return hit

    def compute(progress: JobProgress) -> PairEvaluation:
        result = _evaluate(ctx, run_entries, base_entry, study_path, progress)
        return ctx.caches.pair_evals.put(key, result)

    state = ctx.jobs.start(key, compute)
    return ctx.caches.pair_evals.get(key) or state  # it may have finished meanwhile


def _stamp(path: Path) -> tuple:
    return tuple(_stamp_file(path / name) for name in ("config.json", "model.safetensors"))


def _stamp_file(path: Path | None) -> tuple[int, int] | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------------------------
def measure(ctx: ServiceContext, checkpoint: Path, params: EMParams | None) -> tuple[Metrics, int]:
    """The study's row of one checkpoint on the app's test split: EMCL-Net block protocol,
    ``params`` None (†) or the checkpoint's own EM settings and prior (‡); plain metrics."""
    settings = sources(ctx)
    assert settings.data is not None and settings.features_dir is not None
    features = extract(checkpoint, str(settings.data), SPLIT, settings.features_dir,
                       settings.device, progress=False)  # fmt: skip
    result = metrics(scores(features, params), features)
    return {d: dict(result[d]) for d in DIRECTIONS}, int(features.frames.shape[0])


def _evaluate(
    ctx: ServiceContext,
    runs: Sequence[CatalogEntry],
    base: CatalogEntry,
    study_path: Path | None,
    progress: JobProgress,
) -> PairEvaluation:
    start = time.perf_counter()
    total = len(runs) + 1
    progress(0.0, f"† {base.name}: encoding the {SPLIT} split")
    base_row, videos = measure(ctx, base.path, None)
    study, study_note = _study(ctx, runs[0].recipe, study_path)
    rows = []
    for i, run in enumerate(runs, start=1):
        progress(i / total, f"‡ {run.name}: encoding the {SPLIT} split")
        emcl = read_config(run.path)[0].emcl
        assert emcl is not None  # a joint checkpoint (the catalog's kind)
        joint, _ = measure(ctx, run.path, emcl.params())
        pair = _study_rows(study, run.seed) if study is not None else None
        rows.append(SeedRow(run.name, run.seed, joint, base_row, *(pair or (None, None))))
    tests, test_note = _tests(rows)
    progress(1.0, "done")
    return PairEvaluation(
        base=base.name,
        recipe=runs[0].recipe,
        rows=tuple(rows),
        study=shown(study_path) if study is not None and study_path else None,
        study_note=study_note,
        tests=tests,
        test_note=test_note,
        videos=videos,
        seconds=round(time.perf_counter() - start, 1),
    )


def _study(
    ctx: ServiceContext, recipe: Recipe | None, path: Path | None
) -> tuple[dict[str, Any] | None, str]:
    """The study to set beside the runs, or None with the reason."""
    if path is None:
        return None, "no study to compare with"
    try:
        study = json.loads(path.read_text())
        theirs = study_recipe(study)
    except (OSError, ValueError, AttributeError) as error:
        return None, f"{shown(path)} is unreadable ({error})"
    if recipe is None:
        return None, "the runs record no recipe: not comparable with the study"
    diff = recipe.differences(theirs)
    if diff:
        return None, f"not beside {shown(path)}: its recipe differs ({'; '.join(diff)})"
    app_world = world_of(sources(ctx).data)
    if app_world != theirs.world:
        return None, f"not beside {shown(path)}: the app's world ({app_world}) is not the study's"
    # The records name the backbone by its folder, not its weights: a backbone pretrained again
    # (an exported fp16 copy, or a backbone made again) matches by name.
    return study, (
        f"beside {shown(path)} (seeds {study.get('seeds')}), same recipe by name (preset, world, "
        "backbone folder; a backbone pretrained again matches too, so the differences may "
        "include the backbone's)"
    )


def _tests(rows: Sequence[SeedRow]) -> tuple[dict[str, Tests], str]:
    """Paired t-tests across the runs' seeds (two or more)."""
    if len(rows) < 2:
        return {}, "the paired t-test needs runs of two or more seeds (one recipe)"
    covered = all(r.study_base is not None for r in rows)
    reference: Callable[[SeedRow], Metrics] = (
        (lambda r: r.study_base) if covered else (lambda r: r.base)  # type: ignore[return-value]
    )
    comparisons = {"‡ vs †": reference}
    if covered:
        comparisons["‡ vs study ‡"] = lambda r: r.study_joint  # type: ignore[return-value]
    tests = {
        name: {d: {m: paired_t_test([r.joint[d][m] for r in rows], [ref(r)[d][m] for r in rows])
                   for m in METRICS} for d in DIRECTIONS}
        for name, ref in comparisons.items()
    }  # fmt: skip
    which = "the study's † of each seed" if covered else "the evaluated base's †"
    return tests, f"paired t-tests over {len(rows)} seeds; † is {which}"


__all__ = [
    "PairEvaluation",
    "SeedRow",
    "evaluation",
    "measure",
    "studies",
    "study_names",
    "study_recipe",
]
