"""A study's numbers for the Study tab: load and check a ``study.json`` (emcl/study/run.py's
``aggregate`` plus its provenance), the per-seed points, the paired differences, the words of
the conclusion and the rows of the CSV export. Pure Python: no Gradio, no torch.

Units: R@K in % (of captions or videos), MdR/MnR 1-based ranks; a difference of two R@K is in
percentage points. Every mean and std shown is recomputed here from the per-seed values (sample
std, ddof 1, as emcl/study/stats.py); t and p are study.json's own (checked against a
recomputation, which stands in for t where an older study has no ``t_values``).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emcl.paths import CHECKPOINTS
from emcl.study.stats import mean_std, paired_t_test, t_two_sided_p

DEFAULT_STUDY = CHECKPOINTS / "study.json"
STUDY_FILE = "study.json"
MAX_DEPTH = 2  # DIR/study.json and DIR/*/study.json: a --study folder, or a runs folder's runs
MAX_BYTES = 8 << 20  # a five-seed study.json is about 20 KB; anything near this is not one
ALPHA = 0.05  # the significance level of the conclusion
DIRECTIONS = ("t2v", "v2t")
METRICS = ("R1", "R5", "R10", "MdR", "MnR")
ROW_ORDER = ("base", "base+emcl", "emcl", "base(l2)", "base+emcl(l2)")  # run.py's ROWS
LABELS = {  # short, for axes; the symbols are the supplement's (checkpoints/REPORT.md)
    "base": "† base",
    "base+emcl": "§ base + EMCL",
    "emcl": "‡ EMCL (joint)",
    "base(l2)": "base (L2)",
    "base+emcl(l2)": "base + EMCL (L2)",
}
TABLE2_PREFIX = {"emcl": "", "base+emcl": "base+emcl_"}  # model -> its keys' prefix in table2
SHARES = ("own_clip", "another_described_clip", "undescribed_clip")  # top1_errors, % captions
REQUIRED = ("seeds", "rows", "compared_with", "p_values", "table2")
OPTIONAL = {  # key -> what the tab lacks without it
    "t_values": "t statistics (recomputed here from the per-seed values)",
    "top1_errors": "the top-1 error breakdown",
    "ceiling": "the ambiguity ceiling",
}
TOLERANCE = 1e-6  # stored vs recomputed t and p (both double precision from the same values)


class StudyFileError(ValueError):
    """A study.json that cannot be shown; the message says which key and why."""


def label(row: str) -> str:
    return LABELS.get(row, row)


# --------------------------------------------------------------------------------------------
# The typed view
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """One row's metric in one direction: per-seed values (in ``StudyView.seeds`` order)."""

    values: tuple[float, ...]  # [n_seeds]
    mean: float
    std: float  # sample std (ddof 1)


@dataclass(frozen=True)
class Comparison:
    """``row`` − ``reference`` per seed for one direction and metric, with study.json's test."""

    row: str
    reference: str
    direction: str
    metric: str
    differences: tuple[float, ...]  # [n_seeds], percentage points for R@K
    mean: float
    std: float
    t: float  # study.json's t_values, or recomputed (t_recomputed) when it has none
    p: float  # study.json's two-sided p of the paired t-test
    t_recomputed: bool
    detectable: float  # |mean difference| that would reach p < ALPHA with this spread

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


@dataclass(frozen=True)
class BetaCurve:
    """Table 2 for one model and direction: R@1 (%) against beta, inverted softmax."""

    model: str
    direction: str
    beta: tuple[float, ...]  # [n_beta]
    mean: tuple[float, ...]  # [n_beta], mean over seeds
    std: tuple[float, ...] | None  # [n_beta]; None: an older study without the spread


@dataclass(frozen=True)
class ErrorBreakdown:
    """Where one model's t2v top-1 clips come from (mean over seeds, emcl/study/errors.py)."""

    model: str
    shares: dict[str, float]  # SHARES -> % of captions
    wrong_per_miss: dict[str, float]  # attribute -> stated events it gets wrong per miss


@dataclass(frozen=True)
class StudyView:
    """Everything the Study tab draws, from one study.json."""

    source: str  # the file as offered in the picker
    seeds: tuple[int, ...]
    rows: dict[str, dict[str, dict[str, Series]]]  # row -> direction -> metric -> Series
    comparisons: tuple[Comparison, ...]  # compared_with order, then direction, then metric
    table2: tuple[BetaCurve, ...]
    errors: tuple[ErrorBreakdown, ...]
    ceiling: float | None  # t2v R@1 (%) no model can beat on this world; None: not recorded
    provenance: dict[str, Any] = field(default_factory=dict)  # note, device, seconds, world
    missing: tuple[str, ...] = ()  # what an older study lacks, in words
    notices: tuple[str, ...] = ()  # stored numbers that disagree with their recomputation

    def comparison(self, row: str, direction: str, metric: str = "R1") -> Comparison:
        return next(
            c
            for c in self.comparisons
            if (c.row, c.direction, c.metric) == (row, direction, metric)
        )

    def compared_rows(self) -> list[str]:
        return list(dict.fromkeys(c.row for c in self.comparisons))


# --------------------------------------------------------------------------------------------
# Finding and loading
# --------------------------------------------------------------------------------------------
def find_studies(folders: Iterable[Path], default: Path | None = DEFAULT_STUDY) -> list[Path]:
    """``default`` (when it exists), then each folder's ``study.json`` and its subfolders'
    (MAX_DEPTH levels: ``DIR/study.json``, then ``DIR/*/study.json`` sorted by name); hidden
    folders are skipped and a file reached twice (a folder given twice, a link) is listed
    once."""
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen and path.is_file():
            seen.add(key)
            found.append(path)

    if default is not None:
        add(Path(default))
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        patterns = ["/".join(["*"] * level + [STUDY_FILE]) for level in range(MAX_DEPTH)]
        for path in (p for pattern in patterns for p in sorted(folder.glob(pattern))):
            if not any(part.startswith(".") for part in path.relative_to(folder).parts):
                add(path)
    return found


def read_study(path: Path) -> dict[str, Any]:
    """The JSON object of a study.json, or StudyFileError (unreadable, too large, not JSON)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise StudyFileError(f"{size} bytes is too large for a study.json")
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise StudyFileError(f"cannot read it: {error}") from None
    except json.JSONDecodeError as error:
        raise StudyFileError(f"not JSON ({error})") from None
    if not isinstance(document, dict):
        raise StudyFileError("not a JSON object")
    return document


def load_study(path: Path, source: str | None = None) -> StudyView:
    """Read and check ``path``; StudyFileError names the first problem."""
    return study_view(read_study(Path(path)), source or str(path))


def study_view(study: dict[str, Any], source: str = "study.json") -> StudyView:
    """The view of a parsed study.json (see :func:`load_study`)."""
    absent = [k for k in REQUIRED if k not in study]
    if absent:
        raise StudyFileError(f"no {', '.join(absent)}: not a study.json of `python -m emcl study`")
    seeds = _seeds(study["seeds"])
    rows = _rows(study["rows"], len(seeds))
    comparisons, notices = _comparisons(study, rows)
    ceiling = study.get("ceiling")
    ceiling_r1 = None
    if ceiling is not None:
        ceiling_r1 = _number(_dict(ceiling, "ceiling").get("t2v_R1"), "ceiling.t2v_R1", True)
        if ceiling_r1 is not None and not 0.0 < ceiling_r1 <= 100.0:
            raise StudyFileError(f"ceiling.t2v_R1: {ceiling_r1} is not an R@1 in (0, 100] %")
    missing = [what for key, what in OPTIONAL.items() if not study.get(key)]
    if study.get("ceiling") and ceiling_r1 is None:
        missing.append(OPTIONAL["ceiling"])
    table2, spread_missing = _table2(study["table2"])
    if spread_missing:
        missing.append("Table 2's spread over seeds (means only)")
    provenance = {k: study.get(k) for k in ("note", "device", "seconds", "world", "pretrained")}
    train = study.get("train")
    provenance["steps"] = train.get("steps") if isinstance(train, dict) else None
    return StudyView(
        source=source,
        seeds=seeds,
        rows=rows,
        comparisons=comparisons,
        table2=table2,
        errors=_errors(study.get("top1_errors") or {}),
        ceiling=ceiling_r1,
        provenance=provenance,
        missing=tuple(missing),
        notices=tuple(notices),
    )


# ---- checks ---------------------------------------------------------------------------------
def _dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise StudyFileError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _number(value: Any, where: str, optional: bool = False, finite: bool = True) -> Any:
    """A JSON number (not a bool); ``finite=False`` lets ±inf through (a t of equal diffs)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StudyFileError(f"{where}: expected a number, got {value!r:.40}")
    if math.isnan(value) or (finite and math.isinf(value)):
        raise StudyFileError(f"{where}: expected a finite number, got {value}")
    return float(value)


def _numbers(value: Any, where: str, n: int | None = None, each: str = "seed") -> tuple[float, ...]:
    """A non-empty list of finite numbers; ``n`` of them (one per ``each``) when given."""
    if not isinstance(value, list) or not value:
        raise StudyFileError(f"{where}: expected a list of numbers")
    if n is not None and len(value) != n:
        raise StudyFileError(f"{where}: expected {n} values (one per {each}), got {len(value)}")
    return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))


def _seeds(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in value
    ):
        raise StudyFileError("seeds: expected a list of integers")
    if len(set(value)) < 2 or len(set(value)) != len(value):
        raise StudyFileError(f"seeds: need two or more distinct seeds, got {value}")
    return tuple(value)


def _rows(value: Any, n: int) -> dict[str, dict[str, dict[str, Series]]]:
    """row -> direction -> metric -> Series; both directions' R@1 are required, the other
    metrics are kept where present."""
    rows: dict[str, dict[str, dict[str, Series]]] = {}
    named = _dict(value, "rows")
    order = [r for r in ROW_ORDER if r in named] + sorted(r for r in named if r not in ROW_ORDER)
    for name in order:
        directions = _dict(named[name], f"rows.{name}")
        rows[name] = {}
        for d in DIRECTIONS:
            metrics = _dict(directions.get(d), f"rows.{name}.{d}")
            if "R1" not in metrics:
                raise StudyFileError(f"rows.{name}.{d}: no R1")
            rows[name][d] = {}
            for m in (m for m in METRICS if m in metrics):
                values = _numbers(metrics[m], f"rows.{name}.{d}.{m}", n)
                rows[name][d][m] = Series(values, *mean_std(values))
    if "base" not in rows:
        raise StudyFileError("rows: no base row")
    return rows


def _stored(study: dict, key: str, row: str, d: str, m: str) -> Any:
    """study[key][row][d][m], or None where an older study lacks a level."""
    level: Any = study.get(key)
    for name in (row, d, m):
        if not isinstance(level, dict) or name not in level:
            return None
        level = level[name]
    return level


def _comparisons(study: dict, rows: dict) -> tuple[tuple[Comparison, ...], list[str]]:
    """Every compared row, direction and metric present in both rows (p is required for R@1,
    kept where present for the others), and the notices of stored t/p that disagree."""
    compared = _dict(study["compared_with"], "compared_with")
    out: list[Comparison] = []
    notices: list[str] = []
    for row, reference in compared.items():
        if row not in rows or reference not in rows:
            raise StudyFileError(f"compared_with: {row} vs {reference!r}: no such row")
        for d in DIRECTIONS:
            for m in (m for m in METRICS if m in rows[row][d] and m in rows[reference][d]):
                a, b = rows[row][d][m].values, rows[reference][d][m].values
                found = _comparison(study, (row, reference, d, m), a, b, notices)
                out += [found] if found is not None else []
    return tuple(out), notices


def _comparison(
    study: dict,
    key: tuple[str, str, str, str],
    a: Sequence[float],
    b: Sequence[float],
    notices: list[str],
) -> Comparison | None:
    """One paired comparison ``a`` − ``b`` (per seed) with study.json's p and t."""
    row, reference, d, m = key
    where = f"{row}.{d}.{m}"
    p = _number(_stored(study, "p_values", row, d, m), f"p_values.{where}", m != "R1")
    if p is None:
        return None
    if not 0.0 <= p <= 1.0:
        raise StudyFileError(f"p_values.{where}: {p} is not a probability")
    stored_t = _stored(study, "t_values", row, d, m)
    stored_t = _number(stored_t, f"t_values.{where}", optional=True, finite=False)
    t, p_here = paired_t_test(a, b)
    for name, mine, theirs in (("t", t, stored_t), ("p", p_here, p)):
        if theirs is not None and not _close(mine, theirs):
            notices.append(
                f"{name} of {where} in the file ({theirs:.6g}) differs from its "
                f"per-seed values' ({mine:.6g})"
            )
    diffs = tuple(x - y for x, y in zip(a, b, strict=True))
    mean, std = mean_std(diffs)
    detectable = critical_t(len(diffs) - 1) * std / math.sqrt(len(diffs))
    chosen_t = t if stored_t is None else stored_t
    return Comparison(
        row, reference, d, m, diffs, mean, std, chosen_t, p, stored_t is None, detectable
    )


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


@functools.lru_cache(maxsize=64)  # one per seed count: 200 bisection steps each
def critical_t(df: int, alpha: float = ALPHA) -> float:
    """The |t| at which a two-sided test with ``df`` degrees of freedom reaches p = alpha
    (bisection on emcl/study/stats.py's p: p falls as |t| grows)."""
    low, high = 0.0, 1e4  # df = 1, alpha = 0.05: 12.7; far below the bracket's top
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided_p(middle, df) > alpha else (low, middle)
    return (low + high) / 2


def _table2(value: Any) -> tuple[tuple[BetaCurve, ...], bool]:
    """Table 2's curves (‡ and § where present) and whether any lacks its spread."""
    table = _dict(value, "table2")
    beta = _numbers(table.get("beta"), "table2.beta")
    curves: list[BetaCurve] = []
    spread_missing = False
    for model, prefix in TABLE2_PREFIX.items():
        for d in DIRECTIONS:
            key = f"{prefix}{d}_R1"
            if key not in table:
                continue
            std = table.get(f"{key}_std")
            spread_missing |= std is None
            curves.append(
                BetaCurve(
                    model,
                    d,
                    beta,
                    _numbers(table[key], f"table2.{key}", len(beta), "beta"),
                    None if std is None else _numbers(std, f"table2.{key}_std", len(beta), "beta"),
                )
            )
    if not curves:
        raise StudyFileError("table2: no R@1 curve (t2v_R1, v2t_R1, base+emcl_t2v_R1, ...)")
    return tuple(curves), spread_missing


def _errors(value: Any) -> tuple[ErrorBreakdown, ...]:
    out = []
    for model, e in _dict(value, "top1_errors").items():
        e = _dict(e, f"top1_errors.{model}")
        shares = {s: _number(e.get(s), f"top1_errors.{model}.{s}") for s in SHARES}
        wrong = _dict(e.get("wrong_per_miss"), f"top1_errors.{model}.wrong_per_miss")
        out.append(
            ErrorBreakdown(
                model,
                shares,
                {
                    a: _number(v, f"top1_errors.{model}.wrong_per_miss.{a}")
                    for a, v in wrong.items()
                },
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------
def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_equation(p: float) -> str:
    """``p = 0.405`` or ``p < 0.001`` (REPORT.md's rounding)."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def t_text(t: float) -> str:
    return f"{t:+.2f}" if math.isfinite(t) else ("+∞" if t > 0 else "−∞")


def _direction_words(c: Comparison) -> str:
    word = "significant" if c.significant else "not significant"
    recomputed = ", recomputed" if c.t_recomputed else ""
    return (
        f"{c.direction} R@1 {c.mean:+.2f} points (t = {t_text(c.t)}{recomputed}, "
        f"{p_equation(c.p)}, {word})"
    )


def verdict(view: StudyView, row: str) -> tuple[str, str]:
    """(kind, words) of what the R@1 tests say about ``row`` against its reference; kind is
    ``none``, ``higher``, ``lower`` or ``mixed``."""
    tests = [view.comparison(row, d) for d in DIRECTIONS]
    up = [c.direction for c in tests if c.significant and c.mean > 0]
    down = [c.direction for c in tests if c.significant and c.mean < 0]
    if not up and not down:
        widest = max(c.detectable for c in tests)
        return "none", (
            f"no measurable difference; with this spread over {len(view.seeds)} seeds a "
            f"mean difference of about ±{widest:.2f} points would be needed to reach "
            f"p < {ALPHA:g}"
        )
    parts = [f"measurably higher in {' and '.join(up)}"] if up else []
    parts += [f"measurably lower in {' and '.join(down)}"] if down else []
    kind = "mixed" if up and down else ("higher" if up else "lower")
    return kind, ", ".join(parts)


SUMMARY_WORDS = {
    "none": "EMCL makes no measurable difference to R@1 for {rows} on these seeds.",
    "higher": "EMCL measurably raises R@1 for {rows}.",
    "lower": "EMCL measurably lowers R@1 for {rows}.",
    "mixed": "EMCL measurably raises R@1 in one direction and lowers it in the other for {rows}.",
}


def conclusion(view: StudyView) -> str:
    """The tab's conclusion in Markdown, every number from ``view``."""
    n = len(view.seeds)
    lines = [
        f"**What these {n} seeds say** (two-sided paired t-tests on R@1, one per row and "
        f"direction, at {ALPHA:g}, not corrected for multiple tests)",
        "",
    ]
    kinds: dict[str, list[str]] = {kind: [] for kind in SUMMARY_WORDS}
    for row in view.compared_rows():
        reference = view.comparison(row, "t2v").reference
        kind, said = verdict(view, row)
        kinds[kind].append(label(row))
        lines.append(
            f"- **{label(row)}** vs {label(reference)}: "
            + "; ".join(_direction_words(view.comparison(row, d)) for d in DIRECTIONS)
            + f": {said}."
        )
    lines += [
        f"- **{words.format(rows=', '.join(kinds[kind]))}**"
        for kind, words in SUMMARY_WORDS.items()
        if kinds[kind]
    ]
    lines += _ceiling_lines(view) + _provenance_lines(view)
    if view.missing:
        lines.append(f"- Not in this study.json: {'; '.join(view.missing)}.")
    lines += [f"- Check: {notice}." for notice in view.notices]
    return "\n".join(lines)


def _ceiling_lines(view: StudyView) -> list[str]:
    if view.ceiling is None:
        return ["- No ambiguity ceiling recorded: R@1 cannot be set against it."]
    shares = [
        f"{label(r)} {100 * view.rows[r]['t2v']['R1'].mean / view.ceiling:.0f} %" for r in view.rows
    ]
    base = view.rows["base"]["t2v"]["R1"].mean
    return [
        f"- The base reaches {base:.1f} % t2v R@1, {100 * base / view.ceiling:.0f} % of the "
        f"ambiguity ceiling ({view.ceiling:g} %, the best any model can reach on these "
        f"captions); as shares of it: {', '.join(shares)}."
    ]


def _joined(value: Any) -> str:
    """A device record's value (a list per seed in run.py) as text; None/"None": none."""
    values = value if isinstance(value, list) else [value]
    shown = [str(v) for v in values if v is not None and str(v) not in ("None", "unrecorded")]
    return ", ".join(shown)


def _provenance_lines(view: StudyView) -> list[str]:
    p = view.provenance
    seeds = ", ".join(map(str, view.seeds))
    lines = [f"- Source: `{view.source}`; {len(view.seeds)} seeds ({seeds})."]
    device = p.get("device")
    if isinstance(device, dict):
        gpu = _joined(device.get("evaluation_gpu"))
        lines.append(
            f"- Device: fine-tunes on {_joined(device.get('finetune')) or 'unrecorded'}, "
            f"evaluation on {_joined(device.get('evaluation')) or 'unrecorded'}"
            + (f" ({gpu})." if gpu else ".")
        )
    seconds = p.get("seconds")
    total = seconds.get("total_this_run") if isinstance(seconds, dict) else None
    if isinstance(total, int | float) and not isinstance(total, bool):
        lines.append(f"- The study command took {total / 60:.1f} min (its last run).")
    note = p.get("note")
    if isinstance(note, str) and note.strip():
        lines.append("- Recorded with it: " + " ".join(note.split()))  # one list item
    return lines


# --------------------------------------------------------------------------------------------
# Tables and exports
# --------------------------------------------------------------------------------------------
SUMMARY_HEADERS = [
    "row",
    "t2v R@1 (%)",
    "v2t R@1 (%)",
    "vs",
    "Δ t2v R@1",
    "p t2v",
    "Δ v2t R@1",
    "p v2t",
    "t2v R@1 / ceiling",
]
CSV_HEADERS = ["quantity", "row", "reference", "direction", "metric", "beta", "seed", "value"]


def summary_table(view: StudyView) -> list[list[Any]]:
    """One line per row: R@1 mean ± std, its paired difference and p, share of the ceiling."""
    compared = {c.row: c.reference for c in view.comparisons}
    out = []
    for row, directions in view.rows.items():
        r1 = {d: directions[d]["R1"] for d in DIRECTIONS}
        line = [label(row)] + [f"{r1[d].mean:.2f} ± {r1[d].std:.2f}" for d in DIRECTIONS]
        if row in compared:
            tests = [view.comparison(row, d) for d in DIRECTIONS]
            line += [label(compared[row])]
            line += [x for c in tests for x in (f"{c.mean:+.2f}", p_text(c.p))]
        else:
            line += [""] * 5
        share = None if view.ceiling is None else 100 * r1["t2v"].mean / view.ceiling
        out.append([*line, "" if share is None else f"{share:.0f} %"])
    return out


def csv_rows(view: StudyView) -> list[list[Any]]:
    """Every number of the view in long form (CSV_HEADERS); empty cells are None."""
    out: list[list[Any]] = []
    for row, directions in view.rows.items():
        for d, metrics in directions.items():
            for m, s in metrics.items():
                out += [
                    ["per_seed", row, None, d, m, None, seed, v]
                    for seed, v in zip(view.seeds, s.values, strict=True)
                ]
                out += [
                    ["mean", row, None, d, m, None, None, s.mean],
                    ["std", row, None, d, m, None, None, s.std],
                ]
    for c in view.comparisons:
        key = [c.row, c.reference, c.direction, c.metric, None]
        out += [
            ["difference", *key, seed, v] for seed, v in zip(view.seeds, c.differences, strict=True)
        ]
        out += [
            [q, *key, None, v]
            for q, v in (
                ("mean_difference", c.mean),
                ("std_difference", c.std),
                ("t", c.t),
                ("p", c.p),
            )
        ]
    for curve in view.table2:
        for i, b in enumerate(curve.beta):
            key = [curve.model, None, curve.direction, "R1", b, None]
            out.append(["table2_mean", *key, curve.mean[i]])
            if curve.std is not None:
                out.append(["table2_std", *key, curve.std[i]])
    for e in view.errors:
        out += [["top1_share", e.model, None, "t2v", s, None, None, v] for s, v in e.shares.items()]
        out += [
            ["wrong_per_miss", e.model, None, "t2v", a, None, None, v]
            for a, v in e.wrong_per_miss.items()
        ]
    if view.ceiling is not None:
        out.append(["ceiling", None, None, "t2v", "R1", None, None, view.ceiling])
    return out


def _plain(value: float) -> float | str:
    """JSON has no infinity: ±inf (a t of identical non-zero differences) as text."""
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def to_json(view: StudyView) -> dict[str, Any]:
    """The view's numbers as plain JSON (the ``/study`` endpoint and the JSON download)."""
    return {
        "source": view.source,
        "seeds": list(view.seeds),
        "rows": {
            r: {
                d: {
                    m: {"values": list(s.values), "mean": s.mean, "std": s.std}
                    for m, s in ms.items()
                }
                for d, ms in ds.items()
            }
            for r, ds in view.rows.items()
        },
        "comparisons": [
            {
                "row": c.row,
                "reference": c.reference,
                "direction": c.direction,
                "metric": c.metric,
                "differences": list(c.differences),
                "mean": c.mean,
                "std": c.std,
                "t": _plain(c.t),
                "p": c.p,
                "t_recomputed": c.t_recomputed,
                "significant": c.significant,
                "detectable": c.detectable,
            }
            for c in view.comparisons
        ],
        "table2": [
            {
                "model": c.model,
                "direction": c.direction,
                "beta": list(c.beta),
                "mean": list(c.mean),
                "std": None if c.std is None else list(c.std),
            }
            for c in view.table2
        ],
        "top1_errors": {
            e.model: e.shares | {"wrong_per_miss": e.wrong_per_miss} for e in view.errors
        },
        "ceiling": {"t2v_R1": view.ceiling},
        "provenance": view.provenance,
        "missing": list(view.missing),
        "notices": list(view.notices),
        "conclusion": conclusion(view),
    }


__all__ = [
    "ALPHA",
    "CSV_HEADERS",
    "DEFAULT_STUDY",
    "SUMMARY_HEADERS",
    "BetaCurve",
    "Comparison",
    "ErrorBreakdown",
    "Series",
    "StudyFileError",
    "StudyView",
    "conclusion",
    "critical_t",
    "csv_rows",
    "find_studies",
    "label",
    "load_study",
    "read_study",
    "study_view",
    "summary_table",
    "to_json",
    "verdict",
]
