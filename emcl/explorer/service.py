"""The explorer: the one object the UI and the API call (no Gradio here).

It holds the current :class:`Snapshot` and the caches, resolves what every tab needs (the
prior for a knob setting, query embeddings, video files by id), and hands each request to
the tab's service module. Concurrency (docs/reliability.md §4):

- every request reads one immutable snapshot; adding videos builds a new snapshot beside it
  and swaps the reference in one assignment, under a lock that admits one writer at a time;
- inference runs under ``torch.inference_mode()`` with the models in eval mode; nothing a
  request does writes to a model (the EMCL prior included) or to a snapshot;
- caches are small LRUs keyed by the snapshot version and the knobs, each behind its lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.data.datasets import VideoRecord
from emcl.data.gallery import Gallery
from emcl.data.ground_truth import GroundTruth
from emcl.explorer import embedding_map as map_service
from emcl.explorer import metrics as metrics_service
from emcl.explorer import search as search_service
from emcl.explorer import subspaces as subspace_service
from emcl.explorer import uploads as upload_service
from emcl.explorer.cache import LRU
from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.latest import LatestWins
from emcl.explorer.results import (
    AlignResult,
    GroundingAverage,
    MapResult,
    MetricsResult,
    SearchResult,
    SweepResult,
)
from emcl.explorer.snapshot import ModelView, Snapshot, make_snapshot
from emcl.model.encoder import Encoder
from emcl.retrieval.ann import AnnConfig

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


@dataclass
class Caches:
    """The explorer's caches, each bounded."""

    queries: LRU = field(default_factory=lambda: LRU(512))  # (fingerprint, text) -> embedding
    similarity: LRU = field(default_factory=lambda: LRU(12))  # captions × videos matrices
    tables: LRU = field(default_factory=lambda: LRU(4))  # trained-protocol geometry per model
    terms: LRU = field(default_factory=lambda: LRU(8))  # one EM run over a table (β-free)
    bank_words: LRU = field(default_factory=lambda: LRU(4))  # word features of the bank
    groundings: LRU = field(default_factory=lambda: LRU(16))
    frames: LRU = field(default_factory=lambda: LRU(64))  # decoded frames for the view
    maps: LRU = field(default_factory=lambda: LRU(8))


class Explorer:
    """Rankings, metrics, sweeps, subspace alignments, maps and uploads over one snapshot."""

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
    ):
        if (emcl_encoder is None) != (emcl_gallery is None):
            raise ValueError("pass both the EMCL encoder and its gallery, or neither")
        for encoder in (base_encoder, emcl_encoder):
            if encoder is not None and encoder.model.training:
                raise ValueError("encoders must be in eval mode")
        self.text_caches: dict[str, dict[str, Tensor]] = {}  # fingerprint -> caption -> [D]
        self.ann = ann  # the ANN shortlist's settings (None: AnnConfig's defaults)
        self._snapshot = make_snapshot(
            0, base_encoder, base_gallery, emcl_encoder, emcl_gallery, self.text_caches, ann=ann
        )
        self.ground_truth = ground_truth
        self.uploads_dir = Path(uploads_dir) if uploads_dir is not None else None
        self.map_cache_dir = Path(map_cache_dir) if map_cache_dir is not None else None
        self.upload_max_bytes = upload_max_bytes
        self.write_lock = threading.Lock()  # one writer (uploads) at a time
        self.caches = Caches()
        self._latest: dict[str, LatestWins] = {}  # metrics requests, per protocol

    # ---- state every tab reads -----------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def swap_snapshot(self, snapshot: Snapshot) -> None:
        """Readers hold either the old or the new snapshot (call under ``write_lock``)."""
        self._snapshot = snapshot

    @property
    def has_joint(self) -> bool:
        return self._snapshot.emcl is not None

    @property
    def trained(self) -> EMParams | None:
        """The EMCL checkpoint's own EM settings (its prior's K), if there is one."""
        view = self._snapshot.emcl
        if view is None or view.encoder.config.emcl is None:
            return None
        return view.encoder.config.emcl.params()

    def defaults(self, mode: str | None = None) -> Knobs:
        """Paper defaults: the EMCL checkpoint's training settings (joint) or the inference
        module's setting (K 7, 10 iterations, λ 0.1, β 4, seed 42; docs/method.md §2.3)."""
        mode = mode or ("joint" if self.has_joint else "inference")
        trained = self.trained
        p = trained if mode == "joint" and trained is not None else INFERENCE_MODULE_DEFAULTS
        return Knobs(
            mode=mode, beta=p.beta, k=p.k, iters=p.iters, lam=p.lam, init=p.init, seed=p.seed
        )

    def prior(self, knobs: Knobs) -> Tensor | None:
        """The initial bases for ``init='prior'`` (``None`` for the other inits). The one
        place that enforces "the trained prior exists for the trained K only"."""
        if knobs.init != "prior":
            return None
        trained = self.trained
        view = self._snapshot.emcl
        if view is None or view.prior is None or trained is None:
            raise KnobError(
                "init 'prior' needs a jointly trained EMCL checkpoint; use 'reference' or 'data'"
            )
        if knobs.k != trained.k:
            raise KnobError(
                f"init 'prior' is the EMCL checkpoint's trained prior, which exists for "
                f"K={trained.k} only (got K={knobs.k}); set K={trained.k} or use 'reference'/'data'"
            )
        return view.prior

    def encode_query(self, view: ModelView, text: str) -> tuple[Tensor, bool]:
        """Unit-norm sentence embedding ``[D]`` of ``text`` and whether it was truncated."""

        def encode() -> tuple[Tensor, bool]:
            with torch.inference_mode():
                out = view.encoder.encode_texts([text])
            return F.normalize(out["sentence"][0], dim=-1), bool(out["truncated"][0])

        return self.caches.queries.get_or_compute((view.encoder.fingerprint, text), encode)

    def video_path(self, video_id: object) -> Path:
        """The file of a gallery video; anything but a known id is refused (no path is built
        from user text)."""
        snap = self._snapshot
        if not isinstance(video_id, str) or video_id not in snap.position:
            raise KnobError(f"unknown video id {str(video_id)[:80]!r}: pick one from the gallery")
        return Path(snap.records[snap.position[video_id]].path)

    def record(self, video_id: str) -> VideoRecord:
        self.video_path(video_id)
        snap = self._snapshot
        return snap.records[snap.position[video_id]]

    def example_queries(self, n: int = 8) -> list[str]:
        """``n`` captions spread over the caption bank (examples for the search box)."""
        captions = self._snapshot.captions
        if not captions:
            return []
        step = max(1, len(captions) // n)
        return list(captions[::step][:n])

    # ---- the tabs ------------------------------------------------------------------------
    def rank(self, query: object, knobs: Knobs) -> SearchResult:
        return search_service.rank(self, query, knobs)

    def metrics(
        self, knobs: Knobs, protocol: str = "trained", progress: Progress = _no_progress
    ) -> MetricsResult:
        """The metrics table; a call that arrives while another runs for the same protocol
        is answered by the next run, with the newest knobs (``result.knobs`` says which)."""
        channel = self._latest.setdefault(protocol, LatestWins())
        return channel.call(lambda: metrics_service.metrics(self, knobs, protocol, progress))

    def sweep(
        self,
        knobs: Knobs,
        name: str,
        progress: Progress = _no_progress,
        protocol: str = "trained",
    ) -> SweepResult:
        return metrics_service.sweep(self, knobs, name, progress, protocol)

    def warm_up(self) -> None:
        """Build the trained-protocol tables now (seconds) rather than on the first request."""
        snap = self._snapshot
        for view in (snap.base, snap.emcl):
            if view is not None and len(snap.captions):
                try:
                    metrics_service.table(self, snap, view)
                except KnobError:
                    return  # too large: the page says so when asked

    def align(
        self,
        video_id: object,
        caption: object,
        knobs: Knobs,
        span: object = None,
        words: str | None = None,
    ) -> AlignResult:
        """``words``: "tokens", "alone", or None for the one that grounds better."""
        return subspace_service.align(self, video_id, caption, knobs, span, words)

    def grounding_average(
        self, knobs: Knobs, progress: Progress = _no_progress, words: str = "tokens"
    ) -> GroundingAverage | None:
        return subspace_service.grounding_average(self, knobs, progress, words)

    def default_words(self, knobs: Knobs) -> str:
        """The word encoding that grounds better on the test split (see subspaces)."""
        return subspace_service.default_words(self, knobs)

    def frames_rgb(self, video_id: object, size: int = 96, span: object = None) -> np.ndarray:
        return subspace_service.frames_rgb(self, video_id, size, span)

    def embedding_map(
        self, knobs: Knobs, progress: Progress = _no_progress, **options: object
    ) -> MapResult:
        return map_service.embedding_map(self, knobs, progress, **options)  # type: ignore[arg-type]

    def map_item(self, item_id: object) -> tuple[str, str | None, str]:
        return map_service.map_item(self, item_id)

    def gallery_rows(self) -> list[list[str]]:
        return upload_service.gallery_rows(self)

    def skipped_rows(self) -> list[list[str]]:
        return upload_service.skipped_rows(self)

    def add_uploads(
        self,
        files: Sequence[str | os.PathLike],
        caption: str = "",
        progress: Progress = _no_progress,
    ) -> tuple[list[str], list[dict[str, str]]]:
        return upload_service.add_uploads(self, files, caption, progress)


__all__ = ["Caches", "Explorer", "Progress"]
