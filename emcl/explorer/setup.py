"""Start-up: the data, the models and both galleries, built or loaded from the cache.

:func:`build_pair` builds the encoders and galleries of one (base, EMCL) pair; start-up calls
it for the pair given on the command line and a switch in the Models tab
(emcl/explorer/switching.py) for the pair picked there."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from emcl import paths
from emcl.data.datasets import VideoRecord, read_dataset, read_folder
from emcl.data.gallery import build_galleries
from emcl.data.ground_truth import GroundTruth
from emcl.data.world import ensure_world, video_splits
from emcl.explorer.checkpoints import ModelSources
from emcl.explorer.latest import JobProgress
from emcl.explorer.service import Explorer
from emcl.explorer.store import ModelPair
from emcl.explorer.uploads import uploads_captions
from emcl.model.checkpoint import load_checkpoint
from emcl.model.config import ModelConfig
from emcl.model.encoder import Encoder
from emcl.model.model import EMCLRetrievalModel
from emcl.retrieval.ann import AnnConfig


@dataclass
class Setup:
    """Where everything comes from (the app's command-line flags)."""

    data: Path | None = None  # None: the demo world under cache_dir
    split: str = "test"
    base_checkpoint: Path | None = None
    checkpoint: Path | None = None  # the jointly trained EMCL checkpoint (optional)
    model: str | None = None  # open_clip backbone for a base model without a checkpoint
    pretrained: str | None = None
    cache_dir: Path = field(default_factory=paths.cache_root)
    device: str = "auto"
    precision: str = "auto"  # the encoders' (emcl/model/encoder.py): auto, bf16, fp16 or fp32
    world: paths.DemoWorld = paths.DEMO_WORLD  # the demo world built when ``data`` is None
    ann: AnnConfig | None = None  # the ANN shortlist above ann.threshold videos (None: defaults)
    checkpoint_dirs: tuple[Path, ...] = ()  # more checkpoints for the Models tab's pickers
    study_dirs: tuple[Path, ...] = ()  # study run folders for the Study tab (--study)
    log: Callable[[str], None] = field(default=print)

    @property
    def world_dir(self) -> Path:
        return paths.demo_world_dir(self.cache_dir, self.world.version)

    @property
    def data_root(self) -> Path:
        return self.data if self.data is not None else self.world_dir

    @property
    def features_dir(self) -> Path:
        return paths.features_dir(self.cache_dir)

    @property
    def runs_dir(self) -> Path:
        return paths.runs_dir(self.cache_dir)

    @property
    def study_folders(self) -> tuple[Path, ...]:
        """Where studies are found beside checkpoints/study.json: the command line's runs,
        the page's runs and each --study folder."""
        return (paths.REPO_ROOT / "runs", self.runs_dir, *self.study_dirs)

    @property
    def uploads_dir(self) -> Path:
        return paths.uploads_dir(self.cache_dir)

    @property
    def maps_dir(self) -> Path:
        return paths.maps_dir(self.cache_dir)

    def video_dirs(self, records: Sequence[VideoRecord]) -> list[Path]:
        """The folders the browser may fetch videos from: those holding gallery videos."""
        dirs = {Path(r.path).resolve().parent for r in records}
        dirs.add(self.uploads_dir.resolve())
        return sorted(dirs)


def _encoder(setup: Setup, checkpoint: Path | None, emcl: bool) -> Encoder | None:
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            what = "EMCL" if emcl else "base"
            raise FileNotFoundError(
                f"no {what} checkpoint at {checkpoint}: train the demo models with "
                "`python -m emcl study` (README, Training), or pass --checkpoint / "
                "--base-checkpoint (or --model/--pretrained)"
            )
        return Encoder(load_checkpoint(checkpoint), setup.device, setup.precision)
    if emcl or setup.model is None:
        return None
    config = ModelConfig(
        backbone=setup.model, pretrained=setup.pretrained, temporal="meanP", emcl=None
    )
    return Encoder(EMCLRetrievalModel(config).eval(), setup.device, setup.precision)


def _records(setup: Setup) -> list[VideoRecord]:
    """The split's videos plus earlier uploads (still on disk)."""
    records = read_dataset(setup.data_root, setup.split)
    uploads = setup.uploads_dir
    if uploads.is_dir() and any(uploads.iterdir()):
        captions = uploads_captions(uploads)
        uploaded = read_folder(uploads, captions if captions.is_file() else None)
        records += [replace(r, split="upload") for r in uploaded if r.path.is_file()]
    return records


def build_pair(
    setup: Setup,
    records: Sequence[VideoRecord],
    base: Path | None,
    emcl: Path | None,
    progress: JobProgress = lambda fraction, message: None,
    *,
    bars: bool = False,
) -> ModelPair:
    """The encoders of ``base`` (None: ``setup.model``) and ``emcl`` (None: no EMCL model) and
    their galleries of ``records``, from the feature cache where valid. ``progress`` hears the
    stages; ``bars``: the extraction's progress bars on the terminal (start-up)."""
    progress(0.0, "loading the checkpoints")
    base_encoder = _encoder(setup, base, emcl=False)
    if base_encoder is None:
        raise ValueError("need a base model: --base-checkpoint or --model [--pretrained]")
    emcl_encoder = _encoder(setup, emcl, emcl=True)
    encoders = [("base", base_encoder)] + ([("EMCL", emcl_encoder)] if emcl_encoder else [])
    names = " and ".join(name for name, _ in encoders)
    progress(0.05, f"indexing the gallery with the {names} models (cached after the first run)")

    # One decode of each clip feeds every model that lacks it in the cache.
    def indexed(done: int, total: int) -> None:
        share = done / max(total, 1)
        progress(0.05 + 0.9 * share, f"indexing: {done:,} of {total:,} clip encodings")

    galleries = build_galleries(
        records,
        [encoder for _, encoder in encoders],
        setup.features_dir,
        progress=bars,
        report=None if bars else indexed,  # start-up: the terminal's bars; a switch: its line
    )
    progress(0.95, "galleries ready")
    return ModelPair(
        base_encoder,
        galleries[0],
        emcl_encoder,
        galleries[1] if emcl_encoder else None,
        base_path=base,
        emcl_path=emcl,
    )


def model_sources(setup: Setup) -> ModelSources:
    """The Models tab's settings: where checkpoints are found, how a pair is built (over the
    records a switch passes: the gallery's videos, uploads included), what it is evaluated on."""

    def build(
        base: Path, emcl: Path | None, records: Sequence[VideoRecord], progress: JobProgress
    ) -> ModelPair:
        return build_pair(setup, records, base, emcl, progress)

    return ModelSources(
        runs_dir=setup.runs_dir,
        repo_runs=paths.REPO_ROOT / "runs",
        study_folders=setup.study_folders,
        folders=tuple(Path(f) for f in setup.checkpoint_dirs),
        base=setup.base_checkpoint,
        emcl=setup.checkpoint,
        build=build,
        data=setup.data_root,
        features_dir=setup.features_dir,
        device=setup.device,
    )


def load_explorer(setup: Setup) -> Explorer:
    """Build (or load from cache) the data, the models and both galleries; log progress, with
    the seconds since the start at the end of each stage."""
    log = setup.log
    start = time.perf_counter()
    if setup.data is None:
        w = setup.world
        log(f"demo world v{w.version} ({w.n_train} + {w.n_test} clips) in {setup.world_dir}")
        splits = video_splits(setup.split)
        ensure_world(setup.world_dir, w.n_train, w.n_test, w.seed, progress=True,
                     version=w.version, splits=splits)  # fmt: skip
        log(f"demo world ready at {time.perf_counter() - start:.1f} s")
    records = _records(setup)
    log(f"{len(records)} videos in {setup.data_root} (split {setup.split})")

    def stage(fraction: float, message: str) -> None:
        log(f"{message} ({time.perf_counter() - start:.1f} s)")

    pair = build_pair(setup, records, setup.base_checkpoint, setup.checkpoint, stage, bars=True)
    log("encoding the caption bank …")
    explorer = Explorer(
        pair.base_encoder,
        pair.base_gallery,
        pair.emcl_encoder,
        pair.emcl_gallery,
        ground_truth=GroundTruth.load(setup.data_root),
        uploads_dir=setup.uploads_dir,
        map_cache_dir=setup.maps_dir,
        ann=setup.ann,
        models=model_sources(setup),
    )
    snap = explorer.snapshot
    log(
        f"ready in {time.perf_counter() - start:.1f} s: {len(snap.records)} videos, "
        f"{len(snap.captions)} captions, {len(snap.skipped)} skipped"
    )
    return explorer


__all__ = ["Setup", "build_pair", "load_explorer", "model_sources"]
