"""The current snapshot and its successors.

Requests read whichever snapshot is current; a writer (an upload, or a switch to another model
pair) builds the next one beside it and swaps the reference in one assignment, one writer at a
time, so a request sees the old gallery or the new one, never a mix (docs/reliability.md §4).
A switch builds its encoders and galleries for seconds to minutes before it publishes; its
slot (:class:`SwitchSlot`) admits one at a time and holds its progress for the page's poll.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from emcl.data.gallery import Gallery
from emcl.explorer.latest import BACKGROUND_NICE, JobState, Worker
from emcl.explorer.snapshot import Snapshot, make_snapshot
from emcl.model.encoder import Encoder
from emcl.retrieval.ann import AnnConfig


@dataclass(frozen=True)
class ModelPair:
    """Encoders and galleries of one (base, EMCL) pair and the checkpoints they came from
    (``None``: a base from --model, or no EMCL checkpoint)."""

    base_encoder: Encoder
    base_gallery: Gallery
    emcl_encoder: Encoder | None = None
    emcl_gallery: Gallery | None = None
    base_path: Path | None = None
    emcl_path: Path | None = None


class SwitchSlot:
    """One switch of the model pair at a time: the lock a switch holds from its start to its
    publication, its progress (or failure, kept until the next switch), the checkpoints of the
    pair being served and the worker the switch runs on, below the searches' priority."""

    def __init__(self, base_path: Path | None = None, emcl_path: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.state: JobState | None = None  # None: no switch since start-up
        self.target: tuple[Path, Path | None] | None = None  # the pair being built
        self.pair: tuple[Path | None, Path | None] = (base_path, emcl_path)
        self.worker = Worker("switch", BACKGROUND_NICE)


class SnapshotStore:
    """Holds the current :class:`Snapshot`; :meth:`publish` replaces it under ``write_lock``."""

    def __init__(
        self,
        base_encoder: Encoder,
        base_gallery: Gallery,
        emcl_encoder: Encoder | None = None,
        emcl_gallery: Gallery | None = None,
        *,
        ann: AnnConfig | None = None,
        pair: tuple[Path | None, Path | None] = (None, None),
    ):
        self.write_lock = threading.Lock()  # one writer at a time
        self.switching = SwitchSlot(*pair)  # ``pair``: the checkpoints of the models given
        # Caption embeddings per model fingerprint, carried over to every successor (a new
        # snapshot embeds only the captions it adds).
        self._text_caches: dict[str, dict[str, Tensor]] = {}
        self._ann = ann  # the ANN shortlist's settings (None: AnnConfig's defaults)
        self._current = make_snapshot(
            0, base_encoder, base_gallery, emcl_encoder, emcl_gallery, self._text_caches, ann=ann
        )

    def current(self) -> Snapshot:
        return self._current

    def publish(self, base_gallery: Gallery, emcl_gallery: Gallery | None) -> Snapshot:
        """Make the snapshot of these galleries current (the models and skip records of the
        current one, the next version) and return it. Call under ``write_lock``."""
        if not self.write_lock.locked():
            raise RuntimeError("publish a snapshot under the store's write_lock")
        snap = self._current
        self._current = make_snapshot(
            snap.version + 1,
            snap.base.encoder,
            base_gallery,
            snap.emcl.encoder if snap.emcl else None,
            emcl_gallery,
            self._text_caches,
            skipped=snap.skipped,
            ann=self._ann,
        )
        return self._current

    def replace_models(self, pair: ModelPair) -> Snapshot:
        """Make the snapshot of another model pair current (the skip records of the current
        one, the next version, so every cache keyed by the version misses) and return it.
        Call under ``write_lock``; ``pair``'s galleries must hold every video of the current
        one (uploads included)."""
        if not self.write_lock.locked():
            raise RuntimeError("publish a snapshot under the store's write_lock")
        snap = self._current
        self._current = make_snapshot(
            snap.version + 1,
            pair.base_encoder,
            pair.base_gallery,
            pair.emcl_encoder,
            pair.emcl_gallery,
            self._text_caches,
            skipped=snap.skipped,
            ann=self._ann,
        )
        # Only the served models' caption embeddings are worth keeping (each is the whole
        # bank); pruned after the new snapshot exists, so a failure leaves the cache whole.
        keep = {pair.base_encoder.fingerprint}
        if pair.emcl_encoder is not None:
            keep.add(pair.emcl_encoder.fingerprint)
        for fingerprint in set(self._text_caches) - keep:
            del self._text_caches[fingerprint]
        self.switching.pair = (pair.base_path, pair.emcl_path)
        return self._current


__all__ = ["ModelPair", "SnapshotStore", "SwitchSlot"]
