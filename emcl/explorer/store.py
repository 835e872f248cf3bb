"""The current snapshot and its successors.

Requests read whichever snapshot is current; a writer (an upload) builds the next one beside
it and swaps the reference in one assignment, one writer at a time, so a request sees the old
gallery or the new one, never a mix (docs/reliability.md §4).
"""

from __future__ import annotations

import threading

from torch import Tensor

from emcl.data.gallery import Gallery
from emcl.explorer.snapshot import Snapshot, make_snapshot
from emcl.model.encoder import Encoder
from emcl.retrieval.ann import AnnConfig


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
    ):
        self.write_lock = threading.Lock()  # one writer at a time
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


__all__ = ["SnapshotStore"]
