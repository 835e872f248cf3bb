"""The explorer: the one object the UI and the API call (no Gradio here).

It builds the :class:`~emcl.explorer.context.ServiceContext` the tab services share (the
snapshot store, the caches, the ground truth, the upload settings) and forwards each request,
with the arguments it was given, to the tab's service module; the services never import this
module. Concurrency (docs/reliability.md §4):

- every request reads one immutable snapshot; adding videos builds a new snapshot beside it
  and swaps the reference in one assignment, under a lock that admits one writer at a time
  (:class:`~emcl.explorer.store.SnapshotStore`);
- inference runs under ``torch.inference_mode()`` with the models in eval mode; nothing a
  request does writes to a model (the EMCL prior included) or to a snapshot;
- caches are small LRUs keyed by the snapshot version and the knobs, each behind its lock;
- metrics runs, sweeps, maps, the test split's grounding and the warm-up run on worker threads
  below the request threads' CPU priority, so a search never waits for them
  (:mod:`emcl.explorer.latest`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from emcl.core.em import EMParams
from emcl.data.datasets import VideoRecord
from emcl.data.gallery import Gallery
from emcl.data.ground_truth import GroundTruth
from emcl.explorer import embedding_map as map_service
from emcl.explorer import metrics as metrics_service
from emcl.explorer import pair_eval as pair_eval_service
from emcl.explorer import search as search_service
from emcl.explorer import subspaces as subspace_service
from emcl.explorer import switching as switching_service
from emcl.explorer import uploads as upload_service
from emcl.explorer.checkpoints import NONE, CatalogEntry, ModelSources
from emcl.explorer.context import Caches, ServiceContext, UploadSettings
from emcl.explorer.device import device_errors
from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.latest import BACKGROUND_NICE, JobState, Worker
from emcl.explorer.results import (
    AlignResult,
    GroundingAverage,
    MapResult,
    MetricsResult,
    Progress,
    SearchResult,
    SweepResult,
    no_progress,
)
from emcl.explorer.snapshot import ModelView, Snapshot
from emcl.explorer.store import SnapshotStore
from emcl.model.encoder import Encoder
from emcl.retrieval.ann import AnnConfig


class Explorer:
    """Rankings, metrics, sweeps, subspace alignments, maps and uploads over one snapshot.

    Every method hands its arguments unchanged to one function: a tab service (called with
    :attr:`context` first), the context, or the current snapshot."""

    def __init__(
        self,
        base_encoder: Encoder,
        base_gallery: Gallery,
        emcl_encoder: Encoder | None = None,
        emcl_gallery: Gallery | None = None,
        *,
        ground_truth: GroundTruth | None = None,
        uploads_dir: str | os.PathLike | None = None,
        map_cache_dir: str | os.PathLike | None = None,
        upload_max_bytes: int = upload_service.UPLOAD_MAX_BYTES,
        ann: AnnConfig | None = None,
        models: ModelSources | None = None,
    ):
        """``models``: the Models tab's catalog folders and how a pair is built and evaluated
        (emcl/explorer/setup.py's ``model_sources``; None: nothing to switch to)."""
        if (emcl_encoder is None) != (emcl_gallery is None):
            raise ValueError("pass both the EMCL encoder and its gallery, or neither")
        for encoder in (base_encoder, emcl_encoder):
            if encoder is not None and encoder.model.training:
                raise ValueError("encoders must be in eval mode")
        pair = (models.base, models.emcl) if models is not None else (None, None)
        store = SnapshotStore(
            base_encoder, base_gallery, emcl_encoder, emcl_gallery, ann=ann, pair=pair
        )
        folder = Path(uploads_dir) if uploads_dir is not None else None
        self.context = ServiceContext(
            store=store,
            uploads=UploadSettings(folder, upload_max_bytes),
            ground_truth=ground_truth,
            map_cache_dir=Path(map_cache_dir) if map_cache_dir is not None else None,
            models=models,
        )
        # Long computations run one at a time on workers below the searches' CPU priority.
        self._sweeps, self._maps = Worker("sweeps"), Worker("maps")
        self.drawing = Worker("drawing")  # the Subspaces tab draws its figures there

    # ---- state every tab reads -----------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self.context.snapshot

    @property
    def caches(self) -> Caches:
        return self.context.caches

    @property
    def ground_truth(self) -> GroundTruth | None:
        return self.context.ground_truth

    @property
    def uploads_dir(self) -> Path | None:
        return self.context.uploads.folder

    @property
    def upload_max_bytes(self) -> int:
        return self.context.uploads.max_bytes

    @property
    def map_cache_dir(self) -> Path | None:
        return self.context.map_cache_dir

    @property
    def has_joint(self) -> bool:
        return self.snapshot.emcl is not None

    @property
    def trained(self) -> EMParams | None:
        """The EMCL checkpoint's own EM settings (its prior's K), if there is one."""
        return self.context.trained

    def defaults(self, mode: str | None = None) -> Knobs:
        """Paper defaults for ``mode`` (see :meth:`ServiceContext.defaults`)."""
        return self.context.defaults(mode)

    def prior(self, knobs: Knobs) -> Tensor | None:
        """The initial bases for ``init='prior'`` (``None`` for the other inits)."""
        return self.context.prior(knobs)

    def encode_query(self, view: ModelView, text: str) -> tuple[Tensor, bool]:
        """Unit-norm sentence embedding ``[D]`` of ``text`` and whether it was truncated."""
        return self.context.encode_query(view, text)

    def video_path(self, video_id: object) -> Path:
        """The file of a gallery video; anything but a known id is refused."""
        return self.snapshot.video_path(video_id)

    def record(self, video_id: object) -> VideoRecord:
        return self.snapshot.record(video_id)

    # ---- the tabs ------------------------------------------------------------------------
    def example_queries(self, n: int = 8) -> list[str]:
        return search_service.example_queries(self.context, n)

    @device_errors
    def rank(self, query: object, knobs: Knobs) -> SearchResult:
        return search_service.rank(self.context, query, knobs)

    @device_errors
    def metrics(
        self, knobs: Knobs, protocol: str = "trained", progress: Progress = no_progress
    ) -> MetricsResult:
        """The metrics table; a burst of calls is answered with the newest knobs
        (``result.knobs`` says which)."""
        return metrics_service.metrics(self.context, knobs, protocol, progress)

    @device_errors
    def sweep(
        self,
        knobs: Knobs,
        name: str,
        progress: Progress = no_progress,
        protocol: str = "trained",
    ) -> SweepResult:
        """Runs on the sweeps' worker, below the searches' priority."""
        return self._sweeps.run(
            lambda: metrics_service.sweep(self.context, knobs, name, progress, protocol)
        )

    def warm_up(self) -> None:
        """Build the trained-protocol tables and the default word encodings now (seconds),
        below the searches' priority, rather than on the first request."""

        def warm() -> None:
            metrics_service.warm_up(self.context)
            try:  # the first Metrics tables: each mode's defaults
                for mode in ("joint", "inference") if self.has_joint else ("inference",):
                    metrics_service.metrics(self.context, self.defaults(mode))
            except KnobError:
                pass  # no captions, or too large a table: the page says so when asked
            subspace_service.warm_up(self.context)

        Worker("warm-up", BACKGROUND_NICE).run(warm)

    @device_errors
    def align(
        self,
        video_id: object,
        caption: object,
        knobs: Knobs,
        span: object = None,
        words: str | None = None,
    ) -> AlignResult:
        """``words``: "tokens", "alone", or None for the one that grounds better."""
        return subspace_service.align(self.context, video_id, caption, knobs, span, words)

    def grounding_average(
        self, knobs: Knobs, progress: Progress = no_progress, words: str = "tokens"
    ) -> GroundingAverage | None:
        return subspace_service.grounding_average(self.context, knobs, progress, words)

    def grounding_status(
        self, knobs: Knobs, words: str = "tokens"
    ) -> GroundingAverage | JobState | None:
        """The grounding average if known, else its background computation's progress."""
        return subspace_service.grounding_status(self.context, knobs, words)

    def default_words(self, knobs: Knobs) -> str:
        """The word encoding that grounds better on the test split (see subspaces)."""
        return subspace_service.default_words(self.context, knobs)

    def frames_rgb(self, video_id: object, size: int = 96, span: object = None) -> np.ndarray:
        return subspace_service.frames_rgb(self.context, video_id, size, span)

    @device_errors
    def embedding_map(
        self,
        knobs: Knobs,
        progress: Progress = no_progress,
        *,
        max_points: int = map_service.MAX_MAP_POINTS,
        method: str = "auto",
    ) -> MapResult:
        """Runs on the maps' worker, below the searches' priority."""
        return self._maps.run(
            lambda: map_service.embedding_map(
                self.context, knobs, progress, max_points=max_points, method=method
            )
        )

    def map_item(self, item_id: object) -> tuple[str, str | None, str]:
        return map_service.map_item(self.context, item_id)

    def gallery_rows(self) -> list[list[str]]:
        return upload_service.gallery_rows(self.context)

    def skipped_rows(self) -> list[list[str]]:
        return upload_service.skipped_rows(self.context)

    def add_uploads(
        self,
        files: Sequence[str | os.PathLike],
        caption: str = "",
        progress: Progress = no_progress,
        *,
        user: str = upload_service.ANONYMOUS,
        limits: upload_service.UploadLimits | None = None,
    ) -> tuple[list[str], list[dict[str, str]]]:
        """Add uploaded videos (``user``'s, within ``limits`` when given); returns the added
        ids and the refused files."""
        return upload_service.add_uploads(
            self.context, files, caption, progress, user=user, limits=limits
        )

    # ---- the Models tab ------------------------------------------------------------------
    def checkpoint_catalog(self) -> list[CatalogEntry]:
        """Every checkpoint found, and every folder refused with its reason."""
        return switching_service.catalog(self.context)

    def switch_models(self, base: object, emcl: object = NONE) -> switching_service.SwitchStatus:
        """Start serving another pair (catalog names; ``emcl`` "none": no joint model); the
        current pair serves until the new one is ready. Refused while a switch runs."""
        return switching_service.switch(self.context, base, emcl)

    def switch_status(self) -> switching_service.SwitchStatus:
        return switching_service.switch_status(self.context)

    def evaluate_pair(
        self, runs: object, base: object = None, study: object = None
    ) -> pair_eval_service.PairEvaluation | JobState:
        """The paired evaluation of ``runs`` against ``base`` (None: the served base side),
        beside ``study``; its progress until it is done."""
        return pair_eval_service.evaluation(self.context, runs, base, study)

    def studies(self) -> list[str]:
        """The studies a paired evaluation may be set beside, by name."""
        return pair_eval_service.study_names(self.context)


__all__ = ["Caches", "Explorer", "Progress"]
