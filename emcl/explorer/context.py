"""What the tab services read: the current snapshot, the caches and the few resolvers every
tab shares (the trained prior, paper defaults, query embeddings), plus the upload settings.

Each service module takes a :class:`ServiceContext` as its first argument and imports this
module, never the facade (:mod:`emcl.explorer.service`), so the services and the facade
import in one direction. Concurrency (docs/reliability.md §4): a request reads one immutable
snapshot; the caches are bounded LRUs keyed by the snapshot version and the knobs, each
behind its own lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.data.ground_truth import GroundTruth
from emcl.explorer.cache import LRU
from emcl.explorer.checkpoints import ModelSources
from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.latest import BACKGROUND_NICE, Jobs, LatestWins, Worker
from emcl.explorer.snapshot import ModelView, Snapshot
from emcl.explorer.store import SnapshotStore


@dataclass
class Caches:
    """The explorer's caches, each bounded."""

    queries: LRU = field(default_factory=lambda: LRU(512))  # (fingerprint, text) -> embedding
    similarity: LRU = field(default_factory=lambda: LRU(12))  # captions × videos matrices
    tables: LRU = field(default_factory=lambda: LRU(4))  # trained-protocol geometry per model
    terms: LRU = field(default_factory=lambda: LRU(8))  # one EM run over a table (β-free)
    # Scored metrics rows and EM sizes (small dicts): a knob change rescoring only the rows
    # that depend on it; the no-EM rows depend on no EM knob at all.
    rows: LRU = field(default_factory=lambda: LRU(64))
    bank_words: LRU = field(default_factory=lambda: LRU(4))  # word features of the bank
    groundings: LRU = field(default_factory=lambda: LRU(16))
    frames: LRU = field(default_factory=lambda: LRU(64))  # decoded frames for the view
    maps: LRU = field(default_factory=lambda: LRU(8))
    checkpoints: LRU = field(default_factory=lambda: LRU(256))  # catalog checks per file stamp
    pair_evals: LRU = field(default_factory=lambda: LRU(8))  # paired evaluations of runs


@dataclass(frozen=True)
class UploadSettings:
    """Where uploads go (``None``: uploads off) and the largest file accepted."""

    folder: Path | None
    max_bytes: int


@dataclass(frozen=True)
class ServiceContext:
    """Everything a tab service may read or write; one per explorer."""

    store: SnapshotStore  # the current snapshot; uploads publish its successor
    uploads: UploadSettings
    ground_truth: GroundTruth | None = None  # per-frame concepts (the demo world only)
    map_cache_dir: Path | None = None  # projections cached on disk (None: memory only)
    caches: Caches = field(default_factory=Caches)
    # One latest-wins channel per metrics protocol: a slider's burst of requests is answered
    # by the newest knobs (docs/reliability.md §4).
    latest: dict[str, LatestWins] = field(default_factory=dict)
    # The second model's metrics rows and sweep curve, beside the first's (one thread each:
    # emcl/explorer/metrics.py's side_by_side); two workers, so a table never waits for a sweep.
    metrics_beside: Worker = field(default_factory=lambda: Worker("metrics-beside", threads=1))
    sweeps_beside: Worker = field(default_factory=lambda: Worker("sweeps-beside", threads=1))
    # Work started for a later poll (the test split's grounding), below the searches' priority.
    jobs: Jobs = field(default_factory=lambda: Jobs(Worker("background", BACKGROUND_NICE)))
    # The Models tab's settings: the checkpoint catalog's folders, how a pair is built and
    # evaluated (None: an explorer built by hand, with nothing to switch to).
    models: ModelSources | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self.store.current()

    @property
    def trained(self) -> EMParams | None:
        """The EMCL checkpoint's own EM settings (its prior's K), if there is one."""
        view = self.snapshot.emcl
        if view is None or view.encoder.config.emcl is None:
            return None
        return view.encoder.config.emcl.params()

    def defaults(self, mode: str | None = None) -> Knobs:
        """Paper defaults: the EMCL checkpoint's training settings (joint) or the inference
        module's setting (K 7, 10 iterations, λ 0.1, β 4, seed 42; docs/method.md §2.3)."""
        mode = mode or ("joint" if self.snapshot.emcl is not None else "inference")
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
        view = self.snapshot.emcl
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


__all__ = ["Caches", "ServiceContext", "UploadSettings"]
