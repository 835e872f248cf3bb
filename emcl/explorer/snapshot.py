"""The snapshot: everything one request reads — models, gallery features, the caption bank.

A snapshot is immutable. Adding videos builds a new one beside it and the service swaps the
reference in one assignment, so a request sees the old gallery or the new one, never a mix
(docs/reliability.md §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import Gallery
from emcl.explorer.knobs import KnobError
from emcl.model.encoder import Encoder
from emcl.retrieval.ann import AnnConfig
from emcl.retrieval.index import GalleryIndex, valid_rows
from emcl.retrieval.moments import MomentIndex
from emcl.retrieval.ranking import ItemMap


@dataclass(frozen=True)
class ModelView:
    """One model with its gallery features, aligned to the snapshot's video order."""

    name: str  # "base" | "emcl"
    encoder: Encoder
    gallery: Gallery
    frames: Tensor  # [Nv, T, D] fp16 per-frame features (the subspace view)
    index: GalleryIndex  # unit-norm video embeddings, rankable rows only
    sentences: Tensor  # [Nt, D] caption features as the model emits them (the trained protocol)
    texts: Tensor  # [Nt, D] the same, unit-norm (inference-module protocol, query bank)
    base_sim: Tensor  # [Nt, M] cosines of captions × index rows, no EM
    moments: MomentIndex | None = None  # long videos' windows as items (search, subspaces)

    @property
    def prior(self) -> Tensor | None:
        return self.encoder.prior

    def ranked(self) -> tuple[GalleryIndex, ItemMap | None]:
        """What search ranks: the item index when long videos have windows, else the videos."""
        if self.moments is None:
            return self.index, None
        return self.moments.index, self.moments.items


@dataclass(frozen=True)
class Snapshot:
    version: int
    records: tuple[VideoRecord, ...]  # gallery order
    position: dict[str, int]  # video id -> gallery position
    base: ModelView
    emcl: ModelView | None
    captions: tuple[str, ...]  # the caption bank (metric queries), [Nt]
    caption_owner: Tensor  # [Nt] the caption's video as a row of the index (0..M-1)
    caption_video: tuple[str, ...]  # [Nt] the caption's video id
    lookup: dict[str, tuple[str, ...]]  # normalised caption -> video ids
    skipped: tuple[dict[str, str], ...]  # files left out, with reasons

    def view(self, mode: str) -> ModelView:
        if mode == "inference":
            return self.base
        if self.emcl is None:
            raise KnobError(
                "joint mode needs a jointly trained EMCL checkpoint (--checkpoint); "
                "use mode 'inference' with this model"
            )
        return self.emcl

    def record(self, video_id: object) -> VideoRecord:
        """A gallery video's record; anything but a known id is refused (no path is built
        from user text)."""
        if not isinstance(video_id, str) or video_id not in self.position:
            raise KnobError(f"unknown video id {str(video_id)[:80]!r}: pick one from the gallery")
        return self.records[self.position[video_id]]

    def video_path(self, video_id: object) -> Path:
        """The file of a gallery video (a known id only, see :meth:`record`)."""
        return Path(self.record(video_id).path)


def normalise_caption(text: str) -> str:
    return " ".join(text.lower().split())


def _aligned(gallery: Gallery, ids: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Frame ``[N, T, D]`` and video ``[N, D]`` features of ``ids`` in that order."""
    where = {v: i for i, v in enumerate(gallery.video_ids)}
    rows = torch.tensor([where[v] for v in ids], dtype=torch.long)
    return gallery.frame_embeddings[rows], gallery.video_embeddings[rows]


def _view(
    name: str,
    encoder: Encoder,
    gallery: Gallery,
    ids: Sequence[str],
    captions: Sequence[str],
    text_cache: dict[str, Tensor],
    ann: AnnConfig | None = None,
) -> ModelView:
    frames, videos = _aligned(gallery, ids)
    index = GalleryIndex.build(list(ids), videos.float())  # every row valid (make_snapshot)
    if gallery.cache_dir is not None:  # above ann.threshold videos: the ANN shortlist
        index = index.with_ann(gallery.cache_dir, encoder.fingerprint, ann, log=lambda m: None,
                               device=encoder.device)  # fmt: skip
    todo = [c for c in dict.fromkeys(captions) if c not in text_cache]
    if todo:
        with torch.inference_mode():
            encoded = encoder.encode_texts(todo)["sentence"]
        text_cache.update(zip(todo, encoded.float(), strict=True))
    dim = videos.shape[-1]
    # Not normalised: EMCL-Net's pooling softmax sees the norm, so the trained protocol
    # needs the features as trained (docs/method.md §2.1).
    sentences = torch.stack([text_cache[c] for c in captions]) if captions else torch.zeros(0, dim)
    texts = F.normalize(sentences, dim=-1)
    base_sim = texts @ index.embeddings.float().T  # [Nt, M]
    moments = None
    if gallery.windows is not None and len(gallery.windows):
        items = gallery.items(ids)
        moments = MomentIndex.build(items.video_ids, items.video_rows, items.spans,
                                    items.frame_embeddings, items.video_embeddings)  # fmt: skip
    return ModelView(name, encoder, gallery, frames, index, sentences, texts, base_sim, moments)


def make_snapshot(
    version: int,
    base_encoder: Encoder,
    base_gallery: Gallery,
    emcl_encoder: Encoder | None,
    emcl_gallery: Gallery | None,
    text_caches: dict[str, dict[str, Tensor]],
    skipped: Sequence[dict[str, str]] = (),
    ann: AnnConfig | None = None,
) -> Snapshot:
    """The videos every model indexed with usable features, in base order, plus the caption
    bank embedded by each model. ``text_caches`` (fingerprint -> caption -> embedding) carries
    caption embeddings over to the next snapshot; ``skipped`` adds earlier skip records;
    ``ann`` configures the ANN shortlist of large galleries (default ``AnnConfig()``)."""
    galleries = [g for g in (base_gallery, emcl_gallery) if g is not None]
    left_out = {s["video_id"]: s for s in skipped}
    for gallery in galleries:
        for s in gallery.report.skipped:
            left_out.setdefault(s["video_id"], s)
    usable: set[str] | None = None
    for gallery in galleries:
        ok = valid_rows(gallery.video_embeddings.float()) & valid_rows(
            gallery.frame_embeddings.float().flatten(1)
        )
        good = {v for v, fine in zip(gallery.video_ids, ok.tolist(), strict=True) if fine}
        for v in set(gallery.video_ids) - good:
            bad = {"video_id": v, "path": "", "reason": "bad_features"}
            left_out.setdefault(v, bad | {"message": "NaN, inf or zero-norm features"})
        usable = good if usable is None else usable & good
    ids = [v for v in base_gallery.video_ids if v in (usable or set())]
    by_id = {r.video_id: r for r in base_gallery.records}
    records = tuple(by_id[v] for v in ids)
    for v, s in list(left_out.items()):
        if v in by_id and not s["path"]:
            left_out[v] = {**s, "path": str(by_id[v].path)}

    captions, owner = [], []
    for row, r in enumerate(records):
        for c in r.captions:
            if c.strip():
                captions.append(c)
                owner.append(row)
    base_cache = text_caches.setdefault(base_encoder.fingerprint, {})
    base = _view("base", base_encoder, base_gallery, ids, captions, base_cache, ann)
    emcl = None
    if emcl_encoder is not None and emcl_gallery is not None:
        cache = text_caches.setdefault(emcl_encoder.fingerprint, {})
        emcl = _view("emcl", emcl_encoder, emcl_gallery, ids, captions, cache, ann)
    lookup: dict[str, tuple[str, ...]] = {}
    for r in records:
        for c in r.captions:
            key = normalise_caption(c)
            lookup[key] = (*lookup.get(key, ()), r.video_id)
    return Snapshot(
        version=version,
        records=records,
        position={v: i for i, v in enumerate(ids)},
        base=base,
        emcl=emcl,
        captions=tuple(captions),
        caption_owner=torch.tensor(owner, dtype=torch.long),
        caption_video=tuple(ids[o] for o in owner),
        lookup=lookup,
        skipped=tuple(left_out.values()),
    )


__all__ = ["ModelView", "Snapshot", "make_snapshot", "normalise_caption"]
