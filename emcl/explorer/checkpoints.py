"""The checkpoint catalog: every checkpoint the Models tab offers, and every folder it refuses,
with the reason (no Gradio here).

Where it looks (:class:`ModelSources`): the shipped folder ``checkpoints/`` (demo-base,
demo-emcl, demo-pretrain-video when present), the runs trained from the page
(``<cache root>/runs/<run>/export``), the command line's runs (``<repo>/runs/**/export`` and
``runs/*/best``) and the folders given at start (``--checkpoint-dir``). A run folder whose
``export`` is not complete (weights, config and summary) is still training, not a checkpoint.
Every folder found is checked as loading checks it (emcl/model/checkpoint.py's
``check_checkpoint``: pickles, missing, truncated or modified files, the format, every key and
shape), so what the catalog offers loads, and what it refuses says why. The checks hash the
weights; their outcome is cached per file size and mtime, so a refresh rehashes only what
changed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emcl import paths
from emcl.data.datasets import VideoRecord
from emcl.explorer.cache import LRU
from emcl.explorer.latest import JobProgress
from emcl.explorer.store import ModelPair
from emcl.model.checkpoint import CONFIG, PICKLE_SUFFIXES, WEIGHTS, check_checkpoint
from emcl.model.config import ModelConfig

SHIPPED, RUN, FOLDER = "shipped", "run", "folder"
BASE, JOINT = "base", "joint EMCL"
NONE = "none"  # the EMCL side "none": EMCL at inference on the base model
# Builds the encoders and galleries of a pair over these records (emcl/explorer/setup.py).
PairBuilder = Callable[[Path, Path | None, Sequence[VideoRecord], JobProgress], ModelPair]


@dataclass(frozen=True)
class ModelSources:
    """Where the catalog looks, how a pair is built, and what a pair is evaluated on."""

    shipped: Path = paths.CHECKPOINTS
    runs_dir: Path | None = None  # the page's runs: <cache root>/runs
    repo_runs: Path | None = None  # the command line's runs: <repo>/runs
    folders: tuple[Path, ...] = ()  # --checkpoint-dir
    base: Path | None = None  # the start-up pair's checkpoints
    emcl: Path | None = None
    build: PairBuilder | None = None  # None: switching is off (an Explorer built by hand)
    data: Path | None = None  # the app's data: pair evaluations use its test split
    features_dir: Path | None = None  # the gallery feature cache evaluations share
    device: str = "auto"
    study: Path = paths.CHECKPOINTS / "study.json"  # the study offered first
    study_folders: tuple[Path, ...] = ()  # where more studies are found (the Study tab's)


@dataclass(frozen=True)
class Recipe:
    """What makes two runs comparable seed by seed: the preset, the world, the backbone."""

    preset: str | None
    world: str | None
    backbone: str | None

    def differences(self, other: Recipe) -> list[str]:
        """``"preset demo-v2 vs demo"`` for each field that differs."""
        return [
            f"{name} {getattr(self, name)} vs {getattr(other, name)}"
            for name in ("preset", "world", "backbone")
            if getattr(self, name) != getattr(other, name)
        ]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CatalogEntry:
    """One folder found: a checkpoint (``reason`` None) or a refusal with its reason."""

    name: str  # unique in the catalog; what the page and the API pick by
    path: Path
    source: str  # shipped | run | folder
    kind: str | None = None  # base | joint EMCL (None: refused)
    em: dict[str, Any] | None = None  # the EMCL layer's settings (joint checkpoints)
    seed: int | None = None
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe: Recipe | None = None
    reason: str | None = None  # why it is refused

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def label(self) -> str:
        """The picker's words: name, kind, seed and the EM settings."""
        if not self.ok:
            return f"{self.name}: refused ({self.reason})"
        parts = [self.name, self.kind or ""]
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.em:
            parts.append(f"K {self.em['k']}, {self.em['iters']} it, β {self.em['beta']:g}")
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "path": str(self.path),
            "source": self.source, "kind": self.kind, "em": self.em, "seed": self.seed,
            "summary": self.summary, "recipe": self.recipe.to_json() if self.recipe else None,
            "ok": self.ok, "reason": self.reason,
        }  # fmt: skip


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------
def world_name(data: object) -> str | None:
    """A world's identity: its ``world.json`` (version, clips, seed) when readable, else a demo
    world's by its folder name (a run trained on another machine), else the folder's name."""
    if not data:
        return None
    folder = Path(str(data))
    try:
        world = json.loads((folder / "world.json").read_text())
        return world_words(world)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for demo in paths.DEMO_WORLDS.values():
        if demo.folder == folder.name:
            return world_words(dataclasses.asdict(demo))
    return folder.name


def world_words(world: dict[str, Any]) -> str:
    return (
        f"world v{world['version']} ({world['n_train']} + {world['n_test']} clips, "
        f"seed {world['seed']})"
    )


def backbone_name(model: dict[str, Any], init_from: object) -> str:
    """The architecture and where its weights started: ``emcl-demo-tiny seqTransf×2 from
    demo-pretrain-video``. The pretraining run is named by its folder
    (``runs/demo-pretrain-video/best``, an exported copy ``checkpoints/demo-pretrain-video`` and
    the same run on another machine compare equal), since the records keep the path, not the
    weights' hash."""
    arch = f"{model.get('backbone')} {model.get('temporal')}×{model.get('temporal_layers')}"
    if init_from:
        parts = [p for p in Path(str(init_from)).parts if p not in ("best", "export", "last")]
        return f"{arch} from {parts[-1] if parts else init_from}"
    return f"{arch} from {model.get('pretrained') or 'scratch'}"


def recipe_of(train: object) -> Recipe | None:
    """The recipe of a training record (``config.json``'s ``info.train``, a study's
    ``train``); None without one."""
    if not isinstance(train, dict) or not isinstance(train.get("model"), dict):
        return None
    return Recipe(
        preset=train.get("preset"),
        world=world_name(train.get("data")),
        backbone=backbone_name(train["model"], train.get("init_from")),
    )


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------
def _complete_export(export: Path) -> bool:
    return all((export / name).is_file() for name in (WEIGHTS, CONFIG, "summary.json"))


def _subdirs(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _looks_like_checkpoint(folder: Path) -> bool:
    return any(
        p.is_file() and (p.name in (WEIGHTS, CONFIG) or p.suffix.lower() in PICKLE_SUFFIXES)
        for p in folder.iterdir()
    )


def _found(sources: ModelSources) -> list[tuple[str, str, Path]]:
    """(source, name, folder) of every candidate, in the order the pickers list them."""
    found = [(SHIPPED, d.name, d) for d in _subdirs(sources.shipped)]
    found += [(RUN, f"run {d.name}", d / "export") for d in _subdirs(sources.runs_dir)
              if _complete_export(d / "export")]  # fmt: skip
    repo = sources.repo_runs
    if repo is not None and repo.is_dir():
        exports = sorted({*repo.glob("*/export"), *repo.glob("*/*/export")})
        for folder in [e for e in exports if _complete_export(e)] + sorted(repo.glob("*/best")):
            if folder.is_dir():
                found.append((RUN, "runs/" + folder.relative_to(repo).as_posix(), folder))
    for folder in sources.folders:
        if folder.is_dir() and not _looks_like_checkpoint(folder):
            found += [(FOLDER, f"{folder.name}/{d.name}", d) for d in _subdirs(folder)]
        else:
            found.append((FOLDER, folder.name, folder))
    return found


def _stamp(path: Path) -> tuple:
    """What a cached check depends on: the files' sizes and mtimes."""
    stamp = []
    for name in (CONFIG, WEIGHTS):
        try:
            st = (path / name).stat()
            stamp.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def _summary(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """A few figures of the run: steps, the validation t2v R@1, the training time."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    val = info.get("val") if isinstance(info.get("val"), dict) else {}
    r1 = summary.get("best_val_t2v_R1", (val.get("t2v") or {}).get("R1"))
    shown = {"steps": summary.get("steps", info.get("step")), "val_t2v_R1": r1,
             "wall_seconds": summary.get("wall_seconds")}  # fmt: skip
    return {k: v for k, v in shown.items() if v is not None}


def check(source: str, name: str, path: Path) -> CatalogEntry:
    """The entry of one folder: the checkpoint's kind, EM settings, seed, summary and recipe,
    or the refusal with its reason."""
    if not path.is_dir():
        return CatalogEntry(name, path, source, reason=f"no folder at {path}")
    try:
        config, info = check_checkpoint(path)
    except Exception as error:  # any failure is a refusal with its reason
        return CatalogEntry(name, path, source, reason=str(error) or type(error).__name__)
    train = info.get("train") if isinstance(info.get("train"), dict) else {}
    seed = train.get("seed")
    return CatalogEntry(
        name,
        path,
        source,
        kind=_kind(config),
        em=dataclasses.asdict(config.emcl) if config.emcl is not None else None,
        seed=seed if isinstance(seed, int) else None,
        summary=_summary(path, info),
        recipe=recipe_of(train),
    )


def _kind(config: ModelConfig) -> str:
    return BASE if config.emcl is None else JOINT


def scan(sources: ModelSources, cache: LRU | None = None) -> list[CatalogEntry]:
    """Every checkpoint and refused folder, names made unique; ``cache`` keeps each check
    until the folder's files change."""
    entries, names = [], set()
    for source, name, path in _found(sources):
        unique, n = name, 2
        while unique in names:
            unique, n = f"{name} ({n})", n + 1
        names.add(unique)
        if cache is None:
            entry = check(source, unique, path)
        else:
            key = (str(path.resolve()), _stamp(path))
            entry = cache.get_or_compute(key, lambda s=source, u=unique, p=path: check(s, u, p))
        entries.append(dataclasses.replace(entry, name=unique, source=source, path=path))
    return entries


__all__ = [
    "BASE",
    "FOLDER",
    "JOINT",
    "NONE",
    "RUN",
    "SHIPPED",
    "CatalogEntry",
    "ModelSources",
    "PairBuilder",
    "Recipe",
    "backbone_name",
    "check",
    "recipe_of",
    "scan",
    "world_name",
    "world_words",
]
