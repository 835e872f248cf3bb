"""The five-seed study: per seed a base and an EMCL fine-tune from one pretrained backbone, the
evaluation rows on the test split, and the aggregate with paired t-tests (``study.json``).

Per seed both fine-tunes use the ``demo-v2`` preset with the same seed, so they start from the
same backbone and the same new-module weights and see the same batches; the only difference is
the EMCL layer. Both are taken at a fixed step count (``select="last"``). Everything is
resumable: a finished fine-tune (its exported ``summary.json``) and a finished evaluation
(``eval/s<seed>.json``) are kept; an unfinished fine-tune continues from its ``last`` state.

Rows (emcl/evaluation/protocol.py's scores and metrics; test split, one caption per clip):
``base`` (†), ``base+emcl`` (§, EMCL-Net knobs at inference only), ``emcl`` (‡, trained jointly,
its own knobs and prior), and the ablation ``base(l2)`` / ``base+emcl(l2)``: the inference-module
protocol (mean-pooled L2-normalised features, its own knobs). Table 2: the joint model (and
base+emcl) with beta in 0..4, inverted softmax.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emcl.core.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS
from emcl.core.protocols import INFERENCE, TRAINED
from emcl.data.world import ensure_world
from emcl.evaluation.protocol import Features, extract, metrics, scores
from emcl.fileio import atomic_write_json
from emcl.model.checkpoint import read_config
from emcl.model.config import EMCLConfig
from emcl.model.model import EMCLRetrievalModel
from emcl.paths import DEMO_WORLDS, REPO_ROOT
from emcl.study.errors import top1_errors, world_truth
from emcl.study.stats import mean_std, paired_t_test
from emcl.training.presets import PRESETS, TrainConfig
from emcl.training.pretrain import make_command

METRICS = ("R1", "R5", "R10", "MdR", "MnR")
DIRECTIONS = ("t2v", "v2t")
ROWS = ("base", "base+emcl", "emcl", "base(l2)", "base+emcl(l2)")
COMPARED = {"base+emcl": "base", "emcl": "base", "base+emcl(l2)": "base(l2)"}  # row -> reference
BETAS = (0.0, 1.0, 2.0, 3.0, 4.0)
KINDS = ("base", "emcl")


class StudyError(ValueError):
    """Bad study input; the message says what to do."""


@dataclass(frozen=True)
class StudyConfig:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    out: str = "runs/study"
    preset: str = "demo-v2"
    pretrained: str | None = None  # default: the preset's init_from
    world_size: tuple[int, int, int] = (  # world v2: train (incl. 10 % val), test, seed
        DEMO_WORLDS[2].n_train, DEMO_WORLDS[2].n_test, DEMO_WORLDS[2].seed
    )  # fmt: skip
    world_dir: str | None = None  # default: the preset's data folder
    device: str = "auto"
    jobs: int = 1  # fine-tunes at once (> 1: subprocesses)
    cache_dir: str | None = None  # frame cache (default: under the cache root)
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (tests)

    def __post_init__(self) -> None:
        if len(set(self.seeds)) < 2:
            raise StudyError(
                f"the study's paired t-tests need at least two seeds, got {list(self.seeds)} "
                "(use --seeds 5, the supplement's protocol)"
            )
        if self.preset not in PRESETS:
            raise StudyError(f"unknown preset {self.preset!r}")

    def train_config(self, seed: int, kind: str) -> TrainConfig:
        base = PRESETS[self.preset]
        model = base.model if kind == "emcl" else dataclasses.replace(base.model, emcl=None)
        if kind == "emcl" and model.emcl is None:
            model = dataclasses.replace(model, emcl=EMCLConfig())
        return dataclasses.replace(base, model=model, seed=seed, data=self.world(),
                                   init_from=self.backbone(), preset=self.preset,
                                   **self.overrides)  # fmt: skip

    def world(self) -> str:
        return self.world_dir or PRESETS[self.preset].data

    def backbone(self) -> str:
        path = self.pretrained or PRESETS[self.preset].init_from
        if path is None:
            raise StudyError(f"preset {self.preset} names no pretrained backbone: pass one")
        return path

    def run_dir(self, seed: int, kind: str) -> Path:
        return Path(self.out) / f"s{seed}-{kind}"


# --------------------------------------------------------------------------------------------
# The recipe: what every run of one study folder shares
# --------------------------------------------------------------------------------------------
RECIPE = "recipe.json"


def recipe(cfg: StudyConfig) -> dict[str, Any]:
    """What makes the study's runs comparable: the preset's training config (seed and kind
    aside), the backbone (by its weights' hash, so a moved folder still matches and a re-made
    one does not), the world and the overrides."""
    backbone = Path(cfg.backbone())
    config = backbone / "config.json"
    digest = json.loads(config.read_text()).get("weights_sha256") if config.is_file() else None
    train = cfg.train_config(cfg.seeds[0], "emcl").to_dict()
    for varying in ("seed", "init_from", "data"):
        train.pop(varying)
    return {"train": train, "backbone_sha256": digest, "world_size": list(cfg.world_size),
            "overrides": cfg.overrides}  # fmt: skip


def _differences(mine: Any, theirs: Any, path: str = "") -> list[str]:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        keys = sorted(set(mine) | set(theirs))
        return [d for k in keys for d in _differences(mine.get(k), theirs.get(k), f"{path}.{k}")]
    return [] if mine == theirs else [f"{path.lstrip('.')}: {theirs!r} there, {mine!r} here"]


def check_recipe(cfg: StudyConfig) -> None:
    """Record the recipe in a new study folder; refuse to resume one made with another (its
    runs would be mixed with these in one t-test)."""
    path = Path(cfg.out) / RECIPE
    mine = json.loads(json.dumps(recipe(cfg)))  # as it reads back from JSON
    if not path.is_file():
        started = [p.name for p in Path(cfg.out).glob("s*-*") if p.is_dir()]
        if started:
            raise StudyError(f"{cfg.out} holds runs ({', '.join(sorted(started))}) but no "
                             f"{RECIPE}: their recipe is unknown, so they cannot be mixed with "
                             "this study's; use another --out")  # fmt: skip
        atomic_write_json(path, mine, indent=1)
        return
    differences = _differences(mine, json.loads(path.read_text()))
    if differences:
        raise StudyError(f"{cfg.out} was started with another recipe ({'; '.join(differences[:4])}"
                         "); its runs cannot be mixed with these: use another --out")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Fine-tunes
# --------------------------------------------------------------------------------------------
def finished(run: Path) -> bool:
    """A fine-tune whose export is complete: its summary and its weights (a run folder copied
    back without its weights is not finished)."""
    export = run / "export"
    return (export / "summary.json").is_file() and (export / "model.safetensors").is_file()


def _train_command(cfg: StudyConfig, seed: int, kind: str) -> list[str]:
    """The same fine-tune as :func:`_train_here`, as a ``python -m emcl train`` command."""
    tc = cfg.train_config(seed, kind)
    run = cfg.run_dir(seed, kind)
    argv = [sys.executable, "-m", "emcl", "train", "--preset", cfg.preset, "--seed", str(seed),
            "--data", tc.data, "--init-from", str(tc.init_from), "--out", str(run),
            "--export", str(run / "export"), "--resume", "--device", cfg.device,
            "--quiet"]  # fmt: skip
    if kind == "base":
        argv.append("--no-emcl")
    if cfg.cache_dir:
        argv += ["--cache", cfg.cache_dir]
    flags = {"max_steps": "--max-steps", "batch_size": "--batch-size", "epochs": "--epochs",
             "val_every": "--val-every", "val_videos": "--val-videos"}  # fmt: skip
    for name, value in cfg.overrides.items():
        if name not in flags:
            raise StudyError(f"override {name!r} cannot be passed to a subprocess fine-tune")
        argv += [flags[name], str(value)]
    return argv


def _train_here(cfg: StudyConfig, seed: int, kind: str) -> None:
    from emcl.training.loop import train

    run = cfg.run_dir(seed, kind)
    train(cfg.train_config(seed, kind), run, resume=True, device=cfg.device,
          cache_dir=cfg.cache_dir, export=run / "export", progress=False)  # fmt: skip


def _train_subprocess(cfg: StudyConfig, seed: int, kind: str) -> None:
    run = cfg.run_dir(seed, kind)
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "train.log", "a") as log:
        code = subprocess.run(_train_command(cfg, seed, kind), stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode  # fmt: skip
    if code != 0 or not finished(run):
        tail = (run / "train.log").read_text()[-2000:]
        raise RuntimeError(f"fine-tune s{seed}-{kind} failed (exit {code}):\n{tail}")


def prepare_frames(cfg: StudyConfig) -> None:
    """Decode the train and val clips into the frame cache (what each fine-tune then reads)."""
    from emcl.training.data import load_split

    tc = cfg.train_config(cfg.seeds[0], "base")
    model = EMCLRetrievalModel(tc.model, load_pretrained=False)
    workers = max(2, os.cpu_count() or 2)
    load_split(model, tc.data, "train", cfg.cache_dir, progress=False, workers=workers)
    load_split(model, tc.data, "val", cfg.cache_dir, tc.val_videos, False, workers)


def fine_tune_all(
    cfg: StudyConfig, say: Callable[[str], None], evaluated: frozenset[int] = frozenset()
) -> dict[str, float]:
    """Every missing fine-tune of a seed not yet evaluated; returns each run's wall-clock
    seconds (from its summary, or from ``finetune_seconds.json`` in the run folder for runs
    whose checkpoints live elsewhere, e.g. on the machine that trained and evaluated them)."""
    todo = [
        (s, k)
        for s in cfg.seeds
        for k in KINDS
        if s not in evaluated and not finished(cfg.run_dir(s, k))
    ]
    say(f"fine-tunes: {2 * len(cfg.seeds) - len(todo)} of {2 * len(cfg.seeds)} done, "
        f"{len(todo)} to run ({cfg.jobs} at a time)")  # fmt: skip
    if todo and cfg.jobs == 1:
        for seed, kind in todo:
            _train_here(cfg, seed, kind)
            say(f"  s{seed}-{kind} done")
    elif todo:
        prepare_frames(cfg)  # once, before parallel runs would race to decode into the cache
        with ThreadPoolExecutor(cfg.jobs) as pool:
            futures = {pool.submit(_train_subprocess, cfg, s, k): (s, k) for s, k in todo}
            for future, (seed, kind) in futures.items():
                future.result()
                say(f"  s{seed}-{kind} done")
    record = Path(cfg.out) / "finetune_seconds.json"
    seconds = json.loads(record.read_text()) if record.is_file() else {}
    for seed in cfg.seeds:
        for kind in KINDS:
            summary = cfg.run_dir(seed, kind) / "export" / "summary.json"
            if summary.is_file():
                seconds[f"s{seed}-{kind}"] = json.loads(summary.read_text())["wall_seconds"]
    atomic_write_json(record, seconds, indent=1)
    return {name: seconds.get(name) for name in (f"s{s}-{k}" for s in cfg.seeds for k in KINDS)}


# --------------------------------------------------------------------------------------------
# Evaluation of one seed
# --------------------------------------------------------------------------------------------
def _on(features: Features, device: torch.device) -> Features:
    """The same features on ``device`` (the EM of 1000 x 1000 blocks is fast on a GPU)."""
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return dataclasses.replace(features, text=move(features.text), frames=move(features.frames),
                               video=move(features.video), prior=move(features.prior))  # fmt: skip


def evaluate_seed(cfg: StudyConfig, seed: int) -> dict[str, Any]:
    """The rows and Table 2 for one seed's pair of checkpoints."""
    from emcl.model.backbone import resolve_device

    device = resolve_device(cfg.device)
    features_dir = Path(cfg.out) / "features"
    runs = {k: cfg.run_dir(seed, k) / "export" for k in KINDS}
    base = extract(runs["base"], cfg.world(), "test", features_dir, str(device), progress=False)
    joint = extract(runs["emcl"], cfg.world(), "test", features_dir, str(device), progress=False)
    joint_em = read_config(runs["emcl"])[0].emcl.params()
    base, joint = _on(base, device), _on(joint, device)

    def row(features: Features, params, protocol: str = TRAINED, sim=None) -> dict:
        sim = scores(features, params, protocol) if sim is None else sim
        result = metrics(sim, features)
        return {d: result[d] for d in DIRECTIONS} | {"inverted_softmax": result["inverted_softmax"]}

    sims = {"base": scores(base, None), "emcl": scores(joint, joint_em)}
    truth = world_truth(cfg.world(), base.video_ids)
    errors = {name: top1_errors(sim.cpu(), *truth) for name, sim in sims.items()}
    rows = {
        "base": row(base, None, sim=sims["base"]),
        "base+emcl": row(base, EMCL_NET_DEFAULTS),
        "emcl": row(joint, joint_em, sim=sims["emcl"]),
        "base(l2)": row(base, None, INFERENCE),
        "base+emcl(l2)": row(base, INFERENCE_MODULE_DEFAULTS, INFERENCE),
    }
    table2 = {}
    models = (("emcl", joint, joint_em), ("base+emcl", base, EMCL_NET_DEFAULTS))
    for name, features, params in models:
        points = [row(features, dataclasses.replace(params, beta=b))["inverted_softmax"]
                  for b in BETAS]  # fmt: skip
        table2[name] = {f"{d}_R1": [p[d]["R1"] for p in points] for d in DIRECTIONS}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"seed": seed, "rows": rows, "table2": table2, "errors": errors,
            "videos": int(base.frames.shape[0]),
            "device": str(device), "gpu": gpu, "torch": torch.__version__}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Aggregate
# --------------------------------------------------------------------------------------------
def aggregate(per_seed: list[dict], seeds: list[int]) -> dict[str, Any]:
    """Per-seed values, mean/std and paired t-tests across seeds (``study.json``'s core)."""
    rows = {name: {d: {m: [r["rows"][name][d][m] for r in per_seed] for m in METRICS}
                   for d in DIRECTIONS} for name in ROWS}  # fmt: skip
    summary = {name: {d: {m: dict(zip(("mean", "std"), mean_std(rows[name][d][m]), strict=True))
                          for m in METRICS} for d in DIRECTIONS} for name in ROWS}  # fmt: skip
    p_values: dict[str, Any] = {}
    t_values: dict[str, Any] = {}
    for name, reference in COMPARED.items():
        tests = {d: {m: paired_t_test(rows[name][d][m], rows[reference][d][m]) for m in METRICS}
                 for d in DIRECTIONS}  # fmt: skip
        p_values[name] = {d: {m: tests[d][m][1] for m in METRICS} for d in DIRECTIONS}
        t_values[name] = {d: {m: tests[d][m][0] for m in METRICS} for d in DIRECTIONS}
    table2: dict[str, Any] = {"beta": list(BETAS), "inverted_softmax": True}
    for name in ("emcl", "base+emcl"):
        prefix = "" if name == "emcl" else "base+emcl_"
        for d in DIRECTIONS:
            per_beta = list(zip(*(r["table2"][name][f"{d}_R1"] for r in per_seed), strict=True))
            table2[f"{prefix}{d}_R1"] = [mean_std(list(v))[0] for v in per_beta]
            table2[f"{prefix}{d}_R1_std"] = [mean_std(list(v))[1] for v in per_beta]
    errors: dict[str, Any] = {}
    if all("errors" in r for r in per_seed):  # evaluations written before errors existed lack it
        for name in per_seed[0]["errors"]:
            e = [r["errors"][name] for r in per_seed]
            shares = {k: mean_std([x[k] for x in e])[0] for k in e[0] if k != "wrong_per_miss"}
            wrong = {a: mean_std([x["wrong_per_miss"][a] for x in e])[0]
                     for a in e[0]["wrong_per_miss"]}  # fmt: skip
            errors[name] = shares | {"wrong_per_miss": wrong}
    return {"seeds": seeds, "rows": rows, "summary": summary, "p_values": p_values,
            "t_values": t_values, "compared_with": COMPARED, "table2": table2,
            "top1_errors": errors}  # fmt: skip


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (portable records), else as given."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_study(cfg: StudyConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study and return ``study.json``'s content."""
    t0 = time.perf_counter()
    backbone = Path(cfg.backbone())
    if not backbone.exists():
        raise StudyError(f"no pretrained backbone at {backbone}: make it first with "
                         f"`{make_command(backbone)}` (or pass --pretrained PATH)")  # fmt: skip
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    check_recipe(cfg)
    n_train, n_test, world_seed = cfg.world_size
    say(f"world v2 ({n_train} + {n_test} clips, seed {world_seed}) in {cfg.world()}")
    t = time.perf_counter()
    ensure_world(cfg.world(), n_train, n_test, world_seed, progress=False, version=2)
    world_seconds = time.perf_counter() - t
    world = json.loads((Path(cfg.world()) / "world.json").read_text())

    t = time.perf_counter()
    evaluated = frozenset(s for s in cfg.seeds if (out / "eval" / f"s{s}.json").is_file())
    finetune_seconds = fine_tune_all(cfg, say, evaluated)
    finetune_wall = time.perf_counter() - t

    per_seed, eval_seconds = [], {}
    for seed in cfg.seeds:
        path = out / "eval" / f"s{seed}.json"
        if not path.is_file():
            t = time.perf_counter()
            result = evaluate_seed(cfg, seed)
            result["seconds"] = round(time.perf_counter() - t, 1)
            atomic_write_json(path, result, indent=1)
            say(f"evaluated seed {seed} in {result['seconds']} s")
        result = json.loads(path.read_text())
        eval_seconds[f"s{seed}"] = result["seconds"]
        per_seed.append(result)

    pretrain_summary = backbone.parent / "summary.json"
    pretrain = json.loads(pretrain_summary.read_text()) if pretrain_summary.is_file() else {}
    study = aggregate(per_seed, list(cfg.seeds))
    first = cfg.train_config(cfg.seeds[0], "emcl")
    steps = json.loads((cfg.run_dir(cfg.seeds[0], "emcl") / "export" / "summary.json").read_text())
    study |= {
        "ceiling": {"t2v_R1": world.get("ceiling_t2v_R1")},
        "world": {k: world[k] for k in ("version", "seed", "n_train", "n_test")},
        "train": first.to_dict() | {"seed": "per run", "steps": steps["steps"]},
        "pretrained": _shown(backbone),
        "pretrain_summary": pretrain,
        "device": {
            "finetune": steps["device"],
            # per seed, as recorded by the evaluation (None: not recorded by older runs)
            "evaluation": sorted({str(r.get("device", "unrecorded")) for r in per_seed}),
            "evaluation_gpu": sorted({str(r.get("gpu", "unrecorded")) for r in per_seed}),
            "aggregated_with_torch": torch.__version__,
        },
        "seconds": {
            "world_build_this_run": round(world_seconds, 1),
            "pretrain": pretrain.get("wall_seconds"),
            "finetune": finetune_seconds,
            "finetune_wall_this_run": round(finetune_wall, 1),
            "evaluate": eval_seconds,
            "total_this_run": round(time.perf_counter() - t0, 1),
        },
        "jobs": cfg.jobs,
    }  # fmt: skip
    return study


__all__ = [
    "BETAS",
    "COMPARED",
    "ROWS",
    "StudyConfig",
    "StudyError",
    "aggregate",
    "check_recipe",
    "evaluate_seed",
    "fine_tune_all",
    "recipe",
    "run_study",
]
