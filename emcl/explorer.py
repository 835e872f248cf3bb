"""The service the explorer UI calls: models, galleries, validated knobs, rankings and views.

Everything here is plain Python and torch (no Gradio), so it is tested directly. One
:class:`Explorer` serves concurrent requests:

- every request reads one immutable :class:`Snapshot` (encoders, galleries, caption bank);
  adding videos builds a new snapshot beside it and swaps the reference in one assignment;
- inference runs under ``torch.inference_mode()`` with the models in eval mode; nothing a
  request does writes to a model (the EMCL prior included) or to a snapshot;
- caches (query embeddings, similarity matrices, grounding averages, maps) are small LRUs
  keyed by the snapshot version and the knobs, each behind its own lock.

Protocol. Search, live metrics, sweeps and the map use the inference-module protocol (PAPER.md
§2.2): L2-normalised mean-pooled videos and sentence embeddings, EM on ``[videos; texts]``,
dot products of the outputs. It is what makes a knob change with live 1K × 1K metrics fit in
well under a second on 2 CPU cores. The EMCL-Net protocol the demo models are trained with
(text-conditioned frame pooling, 32 × 32 blocks) is available for the metrics on demand.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.data import VideoRecord, read_dataset, read_folder
from emcl.em import INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.encoder import Encoder
from emcl.gallery import Gallery, add_videos, build_gallery, center_crop
from emcl.metrics import retrieval_metrics
from emcl.search import GalleryIndex, rank_query, similarity_matrix, valid_rows
from emcl.subspace import Alignment, Grounding, align, align_batch, grounding, keep_word, total
from emcl.video import VIDEO_EXTENSIONS, load_frames

MODES = ("joint", "inference")
INITS = ("prior", "reference", "data")
CONTEXTS = ("shortlist", "gallery", "block")
SWEEPS = ("beta", "k", "iters", "lam")

# What the UI and the API accept (the sliders use the same bounds). Inside these ranges every
# value gives finite scores (emcl/em.py validates wider ranges still).
LIMITS: dict[str, tuple[float, float]] = {
    "beta": (0.0, 20.0),
    "k": (1, 128),
    "iters": (0, 50),
    "lam": (1e-3, 10.0),
    "seed": (0, 2**31 - 1),
    "shortlist": (2, 1000),
    "isoftmax_temp": (1e-3, 1.0),
    "top_k": (1, 50),
}
MAX_QUERY_CHARS = 1000  # far beyond any tokenizer context; longer input is cut before tokenising
MAX_UPLOADS = 8  # files per upload request
UPLOAD_MAX_BYTES = 50 * 2**20  # per file (the app sets the same limit on Gradio's upload route)
BLOCK = 64  # texts × videos per EM run in the block protocol (the inference module's setting)
SWEEP_VALUES: dict[str, tuple[float, ...]] = {
    "beta": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0),
    "k": (1, 2, 4, 7, 8, 16, 32, 64),
    "iters": (0, 1, 2, 3, 5, 7, 9, 12, 16, 20),
    "lam": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
}
NO_EM = EMParams(k=1, iters=0, lam=1.0, beta=0.0, init="reference", seed=0)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class KnobError(ValueError):
    """A request the explorer refuses; the message is meant for the user."""


# --------------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------------
def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or value is None:
        raise KnobError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise KnobError(f"{name} must be a number, got {value!r}") from None
    lo, hi = LIMITS[name]
    if not math.isfinite(number) or not lo <= number <= hi:
        raise KnobError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return number


def _integer(name: str, value: object) -> int:
    number = _number(name, value)
    if number != int(number):
        raise KnobError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise KnobError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


@dataclass(frozen=True)
class Knobs:
    """One setting of every knob, validated on construction (:class:`KnobError` otherwise).

    ``mode``: ``joint`` ranks with the jointly trained EMCL checkpoint plus EM at inference;
    ``inference`` ranks with the base checkpoint plus EM at inference only (``beta=0`` gives
    the base ranking exactly). The EM knobs are ``beta``, ``k``, ``iters``, ``lam`` (the
    E-step temperature), ``init`` and ``seed``; ``context`` says which rows share one EM run.
    """

    mode: str = "joint"
    beta: float = 3.0
    k: int = 32
    iters: int = 9
    lam: float = 1.0
    init: str = "prior"
    seed: int = 0
    context: str = "shortlist"
    shortlist: int = 64
    isoftmax: bool = False
    isoftmax_temp: float = 0.01
    top_k: int = 8

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mode", _choice("mode", self.mode, MODES))
        set_(self, "init", _choice("init", self.init, INITS))
        set_(self, "context", _choice("context", self.context, CONTEXTS))
        for name in ("beta", "lam", "isoftmax_temp"):
            set_(self, name, _number(name, getattr(self, name)))
        for name in ("k", "iters", "seed", "shortlist", "top_k"):
            set_(self, name, _integer(name, getattr(self, name)))
        if not isinstance(self.isoftmax, bool | np.bool_):
            raise KnobError(f"isoftmax must be true or false, got {self.isoftmax!r}")
        set_(self, "isoftmax", bool(self.isoftmax))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Knobs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KnobError(f"unknown knob(s): {', '.join(unknown)}")
        return cls(**values)

    def params(self) -> EMParams:
        return EMParams(self.k, self.iters, self.lam, self.beta, self.init, self.seed)  # type: ignore[arg-type]

    def em_key(self) -> tuple:
        """What an EM result depends on (not top-k, not the inverted softmax)."""
        return (self.mode, self.k, self.iters, self.lam, self.beta, self.init, self.seed)


# --------------------------------------------------------------------------------------------
# Snapshot: everything one request reads
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelView:
    """One model with its gallery features, aligned to the snapshot's video order."""

    name: str  # "base" | "emcl"
    encoder: Encoder
    gallery: Gallery
    frames: Tensor  # [Nv, T, D] fp16 per-frame features (the subspace view)
    index: GalleryIndex  # unit-norm video embeddings, rankable rows only
    texts: Tensor  # [Nt, D] unit-norm caption embeddings (metrics, query bank)
    base_sim: Tensor  # [Nt, M] cosines of captions × index rows, no EM

    @property
    def prior(self) -> Tensor | None:
        return self.encoder.prior


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


def normalise_caption(text: str) -> str:
    return " ".join(text.lower().split())


def clean_query(query: object) -> tuple[str, bool]:
    """The query text to encode and whether it was cut; rejects empty input."""
    if not isinstance(query, str):
        raise KnobError(f"the query must be text, got {type(query).__name__}")
    text = " ".join(_CONTROL.sub(" ", query).split())
    if not text:
        raise KnobError("the query is empty: type a few words describing a video")
    cut = len(text) > MAX_QUERY_CHARS
    return text[:MAX_QUERY_CHARS], cut


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
) -> ModelView:
    frames, videos = _aligned(gallery, ids)
    index = GalleryIndex.build(list(ids), videos.float())  # every row valid (make_snapshot)
    todo = [c for c in dict.fromkeys(captions) if c not in text_cache]
    if todo:
        with torch.inference_mode():
            encoded = encoder.encode_texts(todo)["sentence"]
        text_cache.update(zip(todo, F.normalize(encoded, dim=-1), strict=True))
    dim = videos.shape[-1]
    texts = torch.stack([text_cache[c] for c in captions]) if captions else torch.zeros(0, dim)
    base_sim = texts @ index.embeddings.float().T  # [Nt, M]
    return ModelView(name, encoder, gallery, frames, index, texts, base_sim)


def make_snapshot(
    version: int,
    base_encoder: Encoder,
    base_gallery: Gallery,
    emcl_encoder: Encoder | None,
    emcl_gallery: Gallery | None,
    text_caches: dict[str, dict[str, Tensor]],
    skipped: Sequence[dict[str, str]] = (),
) -> Snapshot:
    """The videos every model indexed with usable features, in base order, plus the caption
    bank embedded by each model. ``text_caches`` (fingerprint -> caption -> embedding) carries
    caption embeddings over to the next snapshot; ``skipped`` adds earlier skip records."""
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
    base = _view("base", base_encoder, base_gallery, ids, captions, base_cache)
    emcl = None
    if emcl_encoder is not None and emcl_gallery is not None:
        cache = text_caches.setdefault(emcl_encoder.fingerprint, {})
        emcl = _view("emcl", emcl_encoder, emcl_gallery, ids, captions, cache)
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


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One ranked video in one column."""

    video_id: str
    score: float
    rank: int  # 1-based in this column
    other_rank: int  # 1-based in the other column
    change: int | None  # other_rank - rank (positive: moved up in EMCL); None in the base column
    is_target: bool  # the ground truth of a known caption

    def to_json(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "score": self.score,
            "rank": self.rank,
            "other_rank": self.other_rank,
            "rank_change": self.change,
            "is_target": self.is_target,
        }


@dataclass(frozen=True)
class SearchResult:
    query: str
    knobs: Knobs
    base: list[Row]
    emcl: list[Row]
    effective_k: int
    context: str
    em_rows: int
    ms: float
    targets: tuple[str, ...]  # ground-truth ids when the query is a known caption
    target_rank: dict[str, int | None]  # best ground-truth rank per column ("base", "emcl")
    notices: list[str]
    gallery_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "mode": self.knobs.mode,
            "base": [r.to_json() for r in self.base],
            "emcl": [r.to_json() for r in self.emcl],
            "effective_k": self.effective_k,
            "context": self.context,
            "em_rows": self.em_rows,
            "ms": round(self.ms, 3),
            "ground_truth": list(self.targets),
            "ground_truth_rank": self.target_rank,
            "notices": self.notices,
            "gallery_size": self.gallery_size,
        }


@dataclass(frozen=True)
class MetricsResult:
    rows: list[tuple[str, dict[str, dict[str, float]]]]  # (label, {"t2v": ..., "v2t": ...})
    n_texts: int
    n_videos: int
    effective_k: int  # of one representative EM block
    protocol: str  # says which rows share one EM run
    ms: float

    def table(self) -> list[list[Any]]:
        """Rows for a table: label, then t2v and v2t R1, R5, R10, MdR, MnR."""
        keys = ("R1", "R5", "R10", "MdR", "MnR")
        return [
            [label] + [round(m[d][k], 1) for d in ("t2v", "v2t") for k in keys]
            for label, m in self.rows
        ]


@dataclass(frozen=True)
class SweepResult:
    name: str
    values: list[float]
    series: dict[str, list[dict[str, dict[str, float]]]]  # label -> metrics per value
    reference: dict[str, dict[str, dict[str, float]]]  # label -> metrics without EM
    notes: list[str]


@dataclass(frozen=True)
class AlignResult:
    video_id: str
    caption: str
    alignment: Alignment
    grounding: dict[str, Grounding | None]  # "auto", "full", "s1".. -> score (demo world only)
    truncated: bool
    dropped_words: list[str]  # punctuation left out of the figure


@dataclass(frozen=True)
class GroundingAverage:
    auto: Grounding  # each word linked in its dominant subspace
    full: Grounding  # the same words linked in the full space
    pairs: int


@dataclass(frozen=True)
class MapResult:
    coords_before: np.ndarray  # [N, 2]
    coords_after: np.ndarray  # [N, 2]
    modality: list[str]  # [N] "video" | "text"
    item_ids: list[str]  # [N] "video:<id>" | "text:<caption index>"
    labels: list[str]  # [N] hover text
    gap_before: float
    gap_after: float
    method: str
    note: str


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------
class _LRU:
    """A small thread-safe LRU (the explorer's caches)."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: Any, value: Any) -> Any:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


@dataclass
class GroundTruth:
    """Per-frame concepts (demo world): ``frame_concepts.json`` and ``lexicon.json``."""

    concepts: dict[str, list[list[str]]]  # video id -> per sampled frame, the visible concepts
    lexicon: dict[str, str]  # word -> concept
    num_frames: int

    @classmethod
    def load(cls, root: Path) -> GroundTruth | None:
        concepts_file, lexicon_file = root / "frame_concepts.json", root / "lexicon.json"
        if not (concepts_file.is_file() and lexicon_file.is_file()):
            return None
        data = json.loads(concepts_file.read_text())
        clips = {vid: clip["concepts"] for vid, clip in data["clips"].items()}
        return cls(clips, json.loads(lexicon_file.read_text()), int(data["sampler"]["num_frames"]))


class Explorer:
    """Rankings, metrics, sweeps, subspace alignments, maps and uploads (see module doc)."""

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
        upload_max_bytes: int = UPLOAD_MAX_BYTES,
    ):
        if (emcl_encoder is None) != (emcl_gallery is None):
            raise ValueError("pass both the EMCL encoder and its gallery, or neither")
        for encoder in (base_encoder, emcl_encoder):
            if encoder is not None and encoder.model.training:
                raise ValueError("encoders must be in eval mode")
        self._text_caches: dict[str, dict[str, Tensor]] = {}
        self._snapshot = make_snapshot(
            0, base_encoder, base_gallery, emcl_encoder, emcl_gallery, self._text_caches
        )
        self.ground_truth = ground_truth
        self.uploads_dir = Path(uploads_dir) if uploads_dir is not None else None
        self.map_cache_dir = Path(map_cache_dir) if map_cache_dir is not None else None
        self.upload_max_bytes = upload_max_bytes
        self._write_lock = threading.Lock()  # one writer (uploads) at a time
        self._queries = _LRU(512)
        self._sims = _LRU(12)
        self._bank_words = _LRU(4)
        self._groundings = _LRU(16)
        self._frames = _LRU(64)
        self._maps = _LRU(8)

    # ---- state ---------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

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
        module's README setting (K 7, 10 iterations, λ 0.1, β 4, seed 42; PAPER.md §2.3)."""
        mode = mode or ("joint" if self.has_joint else "inference")
        trained = self.trained
        p = trained if mode == "joint" and trained is not None else INFERENCE_MODULE_DEFAULTS
        return Knobs(
            mode=mode, beta=p.beta, k=p.k, iters=p.iters, lam=p.lam, init=p.init, seed=p.seed
        )

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

    def _prior(self, knobs: Knobs) -> Tensor | None:
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

    def _encode(self, view: ModelView, text: str) -> tuple[Tensor, bool]:
        """Unit-norm sentence embedding ``[D]`` of ``text`` and whether it was truncated."""
        key = (view.encoder.fingerprint, text)
        hit = self._queries.get(key)
        if hit is not None:
            return hit
        with torch.inference_mode():
            out = view.encoder.encode_texts([text])
        value = (F.normalize(out["sentence"][0], dim=-1), bool(out["truncated"][0]))
        return self._queries.put(key, value)

    # ---- search --------------------------------------------------------------------------
    def rank(self, query: object, knobs: Knobs) -> SearchResult:
        """Base and EMCL rankings of the gallery for ``query`` (see :class:`Knobs`)."""
        start = time.perf_counter()
        text, cut = clean_query(query)
        snap = self._snapshot
        emcl_view = snap.view(knobs.mode)
        params, prior = knobs.params(), self._prior(knobs)
        with torch.inference_mode():
            q_base, trunc_base = self._encode(snap.base, text)
            size = len(snap.base.index)
            if size == 0:
                raise KnobError("the gallery has no rankable videos")
            # Every hit (with its score) is needed only to re-sort with the inverted softmax;
            # otherwise the top-k hits plus rank_query's full rank maps are enough.
            need = size if knobs.isoftmax else knobs.top_k
            common = {
                "context": knobs.context,
                "shortlist_size": knobs.shortlist,
                "top_k": need,
                "block_videos": BLOCK,
            }
            try:
                if knobs.mode == "inference":
                    ranking = rank_query(q_base, snap.base.index, params, prior=prior, **common)
                    plain, truncated = ranking, trunc_base
                else:
                    q_emcl, trunc_emcl = self._encode(emcl_view, text)
                    plain = rank_query(q_base, snap.base.index, NO_EM, shortlist_size=1, top_k=need)
                    ranking = rank_query(q_emcl, emcl_view.index, params, prior=prior, **common)
                    truncated = trunc_base or trunc_emcl
            except ValueError as error:
                raise KnobError(str(error)) from None
            base_order = [h.index for h in plain.base]  # gallery positions, best first
            base_score = {h.index: h.score for h in plain.base}
            emcl_order = [h.index for h in ranking.emcl]
            emcl_score = {h.index: h.score for h in ranking.emcl}
            base_rank, emcl_rank = plain.base_rank, ranking.emcl_rank  # position -> 1-based rank
            notices = list(ranking.notices)
            key = normalise_caption(text)
            if knobs.isoftmax:
                tau = knobs.isoftmax_temp
                n_candidates = min(knobs.shortlist, size) if knobs.context == "shortlist" else size
                base_order, base_score = self._qb_norm(
                    snap, snap.base.base_sim, tau, key, base_order, base_score, size
                )
                emcl_bank = self._similarity(snap, emcl_view, knobs)
                emcl_order, emcl_score = self._qb_norm(
                    snap, emcl_bank, tau, key, emcl_order, emcl_score, n_candidates
                )
                base_rank = {pos: r + 1 for r, pos in enumerate(base_order)}
                emcl_rank = {pos: r + 1 for r, pos in enumerate(emcl_order)}
                notices.append(
                    f"inverted softmax (τ={knobs.isoftmax_temp:g}) with the gallery's "
                    f"{len(snap.captions)} captions as the query bank"
                )
        if truncated or cut:
            notices.insert(
                0, "the query was longer than the text encoder's context and was truncated"
            )
        targets = snap.lookup.get(key, ())
        target_pos = {snap.position[v] for v in targets}
        ids = [r.video_id for r in snap.records]

        def rows(order: list[int], scores: dict, mine: dict, other: dict, emcl: bool) -> list[Row]:
            return [
                Row(
                    ids[p],
                    float(scores[p]),
                    mine[p],
                    other[p],
                    other[p] - mine[p] if emcl else None,
                    p in target_pos,
                )
                for p in order[: knobs.top_k]
            ]

        def best(ranks: dict[int, int]) -> int | None:
            found = [ranks[p] for p in target_pos if p in ranks]
            return min(found) if found else None

        return SearchResult(
            query=text,
            knobs=knobs,
            base=rows(base_order, base_score, base_rank, emcl_rank, False),
            emcl=rows(emcl_order, emcl_score, emcl_rank, base_rank, True),
            effective_k=ranking.effective_k,
            context=knobs.context,
            em_rows=ranking.em_rows,
            ms=(time.perf_counter() - start) * 1000.0,
            targets=tuple(targets),
            target_rank={"base": best(base_rank), "emcl": best(emcl_rank)},
            notices=notices,
            gallery_size=size,
        )

    def _qb_norm(
        self,
        snap: Snapshot,
        bank: Tensor,
        tau: float,
        query_key: str,
        order: list[int],
        scores: dict[int, float],
        n_rerank: int,
    ) -> tuple[list[int], dict[int, float]]:
        """Inverted softmax for one query (QB-Norm): each video's score times the softmax of
        its scores over [this query; the caption bank ``[Nt, M]``] (PAPER.md §3), the bank
        scored the same way as the column. A bank caption equal to the query is left out, so a
        known caption gets the metrics' inverted softmax. Re-sorts the first ``n_rerank``
        positions (the EM candidates); the rest keep their order below them."""
        keep = [i for i, c in enumerate(snap.captions) if normalise_caption(c) != query_key]
        bank = bank[keep]
        head = order[:n_rerank]
        s = torch.tensor([scores[p] for p in head], dtype=torch.float64)  # [C]
        columns = bank[:, head].double()  # [Nt', C] (index rows are gallery positions)
        log_z = torch.logsumexp(torch.cat([s[None], columns]) / tau, dim=0)  # [C]
        new = s * torch.exp(s / tau - log_z)
        resorted = [head[i] for i in torch.argsort(new, descending=True, stable=True).tolist()]
        new_scores = dict(scores)
        new_scores.update({p: float(v) for p, v in zip(head, new.tolist(), strict=True)})
        return resorted + order[n_rerank:], new_scores

    # ---- metrics -------------------------------------------------------------------------
    def _similarity(
        self, snap: Snapshot, view: ModelView, knobs: Knobs | None, protocol: str = "inference"
    ) -> Tensor:
        """Captions × videos ``[Nt, M]``, with EM at ``knobs`` (``None``: without EM), cached
        per snapshot, model, protocol and EM knobs. ``inference``: 64 × 64 blocks (one run
        for the ``gallery`` context); ``emclnet``: the reference's 32 × 32 blocks."""
        if knobs is None and protocol == "inference":
            return view.base_sim
        em = None if knobs is None else (knobs.em_key()[1:], knobs.context == "gallery")
        key = (snap.version, view.name, protocol, em)
        hit = self._sims.get(key)
        if hit is not None:
            return hit
        params = prior = None
        if knobs is not None:
            params, prior = knobs.params(), self._prior(knobs)
        n_texts, n_videos = view.base_sim.shape
        if protocol == "emclnet":
            inputs = {"frames": view.frames.float(), "frame_temp": view.encoder.config.frame_temp}
            blocks: tuple[int | None, int | None] = (None, None)  # the reference's 32 × 32
        else:
            inputs = {"videos": view.index.embeddings}
            gallery = knobs is not None and knobs.context == "gallery"
            blocks = (max(1, n_texts), max(1, n_videos)) if gallery else (BLOCK, BLOCK)
        with torch.inference_mode():
            sim = similarity_matrix(
                view.texts,
                params=params,
                prior=prior,
                protocol=protocol,  # type: ignore[arg-type]
                block_texts=blocks[0],
                block_videos=blocks[1],
                **inputs,
            )
        return self._sims.put(key, sim)

    def _metrics(self, snap: Snapshot, sim: Tensor, knobs: Knobs) -> dict[str, dict[str, float]]:
        temp = knobs.isoftmax_temp if knobs.isoftmax else None
        return retrieval_metrics(sim, snap.caption_owner, inverted_softmax_temp=temp)

    def _em_metrics(
        self,
        snap: Snapshot,
        view: ModelView,
        point: Knobs | None,
        knobs: Knobs,
        protocol: str = "inference",
    ) -> dict[str, dict[str, float]]:
        """Metrics of ``view`` with EM at ``point``'s knobs (``None``: no EM); the inverted
        softmax setting comes from ``knobs``."""
        return self._metrics(snap, self._similarity(snap, view, point, protocol), knobs)

    def _need_captions(self, snap: Snapshot) -> None:
        if len(snap.captions) == 0:
            raise KnobError(
                "metrics need captions: this gallery has none (give a captions file with --data)"
            )

    def metrics(
        self, knobs: Knobs, protocol: str = "inference", progress: Progress = _no_progress
    ) -> MetricsResult:
        """t2v and v2t metrics of: base; base + EMCL at inference (these knobs); and, with an
        EMCL checkpoint, that model without EM and with EM (joint). ``protocol``: the live
        ``inference`` module protocol, or ``emclnet``, the protocol the demo models are trained
        and evaluated with (text-conditioned frame pooling; seconds, not milliseconds)."""
        start = time.perf_counter()
        protocol = _choice("protocol", protocol, ("inference", "emclnet"))
        snap = self._snapshot
        self._need_captions(snap)
        views = [("Base", snap.base, "Base + EMCL at inference")]
        if snap.emcl is not None:
            views.append(("EMCL checkpoint, no EM", snap.emcl, "EMCL checkpoint + EM (joint)"))
        rows = []
        for i, (plain, view, with_em) in enumerate(views):
            progress(i / len(views), f"{view.name} model")
            rows.append((plain, self._em_metrics(snap, view, None, knobs, protocol)))
            rows.append((with_em, self._em_metrics(snap, view, knobs, knobs, protocol)))
        progress(1.0, "done")
        if protocol == "emclnet":
            described = "EMCL-Net protocol, one EM run per block of 32 captions × 32 videos"
        elif knobs.context == "gallery":
            described = "inference-module protocol, one EM run over all captions and videos"
        else:
            described = f"inference-module protocol, one EM run per block of {BLOCK} × {BLOCK}"
        return MetricsResult(
            rows=rows,
            n_texts=len(snap.captions),
            n_videos=len(snap.view(knobs.mode).index),
            effective_k=self.block_effective_k(knobs),
            protocol=described,
            ms=(time.perf_counter() - start) * 1000.0,
        )

    def block_effective_k(self, knobs: Knobs) -> int:
        """Effective K of the first metrics block of the active model (no query needed)."""
        snap = self._snapshot
        view = snap.view(knobs.mode)
        if knobs.iters == 0 or len(view.index) == 0:
            return 0
        videos = view.index.embeddings[:BLOCK].float()
        texts = view.texts[:BLOCK] if len(view.texts) else view.index.embeddings[:BLOCK].float()
        with torch.inference_mode():
            result = knobs.params().run(torch.cat([videos, texts]), self._prior(knobs))
            return int(result.effective_k)

    def sweep(self, knobs: Knobs, name: str, progress: Progress = _no_progress) -> SweepResult:
        """Metrics over the preset values of one knob (``beta``, ``k``, ``iters``, ``lam``),
        the other knobs as given, for base + EMCL at inference and the joint model."""
        name = _choice("sweep", name, SWEEPS)
        snap = self._snapshot
        self._need_captions(snap)
        if name == "k" and knobs.init == "prior":
            raise KnobError(
                "the trained prior exists for one K only: pick init 'reference' or 'data' "
                "to sweep K"
            )
        values = list(SWEEP_VALUES[name])
        labels = ["Base + EMCL at inference"] + (["EMCL + EM (joint)"] if snap.emcl else [])
        series: dict[str, list] = {label: [] for label in labels}
        for i, value in enumerate(values):
            progress(i / len(values), f"{name} = {value:g}")
            point = replace(knobs, **{name: int(value) if name in ("k", "iters") else value})
            series[labels[0]].append(self._em_metrics(snap, snap.base, point, knobs))
            if snap.emcl is not None:
                series[labels[1]].append(self._em_metrics(snap, snap.emcl, point, knobs))
        progress(1.0, "done")
        reference = {"Base": self._metrics(snap, snap.base.base_sim, knobs)}
        if snap.emcl is not None:
            reference["EMCL checkpoint, no EM"] = self._metrics(snap, snap.emcl.base_sim, knobs)
        notes = [f"{knobs.context if knobs.context == 'gallery' else 'block'} EM context"]
        return SweepResult(name, [float(v) for v in values], series, reference, notes)

    # ---- subspaces -----------------------------------------------------------------------
    def _word_vectors(
        self, view: ModelView, text: str
    ) -> tuple[Tensor, list[str], list[str], bool]:
        with torch.inference_mode():
            out = view.encoder.encode_texts([text])
        words, mask = out["words"][0], out["word_mask"][0]
        vectors = out["word_tokens"][0][mask]  # [L, D]
        keep = [i for i, w in enumerate(words) if keep_word(w)]
        dropped = [w for w in words if not keep_word(w)]
        return vectors[keep], [words[i] for i in keep], dropped, bool(out["truncated"][0])

    def align(self, video_id: object, caption: object, knobs: Knobs) -> AlignResult:
        """Frame–word alignment in the EM subspaces of one (video, caption) pair
        (emcl/subspace.py), scored against per-frame ground truth where the world has it."""
        snap = self._snapshot
        self.video_path(video_id)
        text, cut = clean_query(caption)
        view = snap.view(knobs.mode)
        params, prior = knobs.params(), self._prior(knobs)
        frames = view.frames[snap.position[video_id]].float()  # [T, D]
        vectors, words, dropped, truncated = self._word_vectors(view, text)
        if not words:
            raise KnobError("the caption has no words to align (only punctuation?)")
        with torch.inference_mode():
            alignment = align(frames, vectors, words, params, prior)
        scores: dict[str, Grounding | None] = {}
        concepts = self._concepts(video_id, frames.shape[0])
        selections: list[tuple[str, int | None]] = [("auto", -1), ("full", None)]
        selections += [(f"s{s + 1}", s) for s in range(alignment.n_subspaces)]
        for label, selection in selections:
            if concepts is None:
                scores[label] = None
                continue
            frame, _ = alignment.links(selection)
            scores[label] = grounding(words, frame.tolist(), concepts, self.ground_truth.lexicon)
        return AlignResult(str(video_id), text, alignment, scores, truncated or cut, dropped)

    def _concepts(self, video_id: str, num_frames: int) -> list[list[str]] | None:
        gt = self.ground_truth
        if gt is None or gt.num_frames != num_frames or video_id not in gt.concepts:
            return None
        return gt.concepts[video_id]

    def grounding_average(
        self, knobs: Knobs, progress: Progress = _no_progress
    ) -> GroundingAverage | None:
        """Grounding of auto (subspace) and full-space links pooled over every captioned
        video with ground truth (its first caption). ``None`` without ground truth."""
        snap = self._snapshot
        view = snap.view(knobs.mode)
        if self.ground_truth is None:
            return None
        key = (snap.version, view.name, knobs.em_key()[1:])
        hit = self._groundings.get(key)
        if hit is not None:
            return hit
        params, prior = knobs.params(), self._prior(knobs)
        num_frames = view.frames.shape[1]
        pairs = [
            (r.video_id, r.captions[0])
            for r in snap.records
            if r.captions and self._concepts(r.video_id, num_frames) is not None
        ]
        if not pairs:
            return None
        words_key = (snap.version, view.name)
        encoded = self._bank_words.get(words_key)
        if encoded is None:
            encoded = self._bank_words.put(
                words_key, self._encode_words(view, [c for _, c in pairs])
            )
        auto, full = [], []
        chunk = 128
        for start in range(0, len(pairs), chunk):
            progress(start / len(pairs), "grounding over the test split")
            part = pairs[start : start + chunk]
            frames = view.frames[[snap.position[v] for v, _ in part]].float()  # [B, T, D]
            window = slice(start, start + chunk)
            vectors, mask, words = encoded[0][window], encoded[1][window], encoded[2][window]
            with torch.inference_mode():
                links = align_batch(frames, vectors, mask, params, prior)
            for b, (video_id, _) in enumerate(part):
                n = len(words[b])
                concepts = self.ground_truth.concepts[video_id]
                lexicon = self.ground_truth.lexicon
                auto.append(grounding(words[b], links.auto[b, :n].tolist(), concepts, lexicon))
                full.append(grounding(words[b], links.full[b, :n].tolist(), concepts, lexicon))
        progress(1.0, "done")
        result = GroundingAverage(total(auto), total(full), len(pairs))
        return self._groundings.put(key, result)

    def _encode_words(self, view: ModelView, captions: list[str]) -> tuple[Tensor, Tensor, list]:
        """Kept word vectors of many captions, zero-padded: ``[B, L, D]``, mask ``[B, L]``."""
        with torch.inference_mode():
            out = view.encoder.encode_texts(captions)
        kept = [[i for i, w in enumerate(ws) if keep_word(w)] for ws in out["words"]]
        width = max((len(k) for k in kept), default=0)
        vectors = torch.zeros(len(captions), width, out["word_tokens"].shape[-1])
        mask = torch.zeros(len(captions), width, dtype=torch.bool)
        for b, keep in enumerate(kept):
            vectors[b, : len(keep)] = out["word_tokens"][b, keep]
            mask[b, : len(keep)] = True
        words = [[out["words"][b][i] for i in keep] for b, keep in enumerate(kept)]
        return vectors, mask, words

    def frames_rgb(self, video_id: object, size: int = 96) -> np.ndarray:
        """The sampled frames ``[T, s, s, 3]`` uint8 shown in the subspace view, decoded in the
        guarded decoder with the gallery's sampler (so they are the frames the model saw)."""
        path = self.video_path(video_id)
        snap = self._snapshot
        num_frames = snap.base.frames.shape[1]
        key = (str(path), num_frames, size)
        hit = self._frames.get(key)
        if hit is not None:
            return hit
        frames = load_frames(path, num_frames=num_frames, size=size)  # [T, h, w, 3]
        square = np.ascontiguousarray(center_crop(frames, size))  # [T, s, s, 3] as the gallery
        return self._frames.put(key, square)

    # ---- embedding map -------------------------------------------------------------------
    def embedding_map(
        self,
        knobs: Knobs,
        progress: Progress = _no_progress,
        max_points: int = 4000,
        method: str = "auto",
    ) -> MapResult:
        """2-D maps of video and caption embeddings before and after EMCL (one EM run over all
        of them, the ``gallery`` context), and the modality gap before and after. ``method``:
        auto (UMAP, PCA below 15 points), umap or pca; results are cached per input."""
        from emcl.embedding_map import modality_gap, project

        snap = self._snapshot
        view = snap.view(knobs.mode)
        key = (snap.version, view.name, knobs.em_key()[1:], max_points, method)
        hit = self._maps.get(key)
        if hit is not None:
            return hit
        params, prior = knobs.params(), self._prior(knobs)
        videos = view.index.embeddings.float()  # [M, D]
        texts = view.texts  # [Nt, D]
        ids = [r.video_id for r in snap.records]  # index rows are gallery positions
        keep_v = min(len(videos), max_points // 2)
        keep_t = [i for i, o in enumerate(snap.caption_owner.tolist()) if o < keep_v]
        keep_t = keep_t[: max_points - keep_v]
        videos, texts = videos[:keep_v], texts[keep_t]
        stacked = torch.cat([videos, texts])  # [N, D]
        with torch.inference_mode():
            after = params.run(stacked, prior).embeddings
        n_v = len(videos)
        progress(0.1, "projecting (before EMCL)")
        cache = self.map_cache_dir
        before_xy, used = project(stacked.numpy(), method=method, seed=knobs.seed, cache_dir=cache)
        progress(0.55, "projecting (after EMCL)")
        after_xy, _ = project(after.numpy(), method=method, seed=knobs.seed, cache_dir=cache)
        progress(1.0, "done")
        caption_ids = [snap.caption_video[i] for i in keep_t]
        result = MapResult(
            coords_before=before_xy,
            coords_after=after_xy,
            modality=["video"] * n_v + ["text"] * len(keep_t),
            item_ids=[f"video:{v}" for v in ids[:keep_v]] + [f"text:{i}" for i in keep_t],
            labels=[f"video {v}" for v in ids[:keep_v]]
            + [f"“{snap.captions[i]}” ({caption_ids[j]})" for j, i in enumerate(keep_t)],
            gap_before=modality_gap(stacked[:n_v], stacked[n_v:]),
            gap_after=modality_gap(after[:n_v], after[n_v:]),
            method=used,
            note=f"{n_v} videos + {len(keep_t)} captions; EM over all of them at once",
        )
        return self._maps.put(key, result)

    def map_item(self, item_id: object) -> tuple[str, str | None, str]:
        """``(video_id, caption or None, kind)`` for a map point id (``video:`` / ``text:``)."""
        snap = self._snapshot
        if isinstance(item_id, str) and item_id.startswith("text:"):
            number = item_id.removeprefix("text:")
            if number.isdigit() and int(number) < len(snap.captions):
                i = int(number)
                return snap.caption_video[i], snap.captions[i], "text"
        if isinstance(item_id, str) and item_id.startswith("video:"):
            video_id = item_id.removeprefix("video:")
            self.video_path(video_id)
            return video_id, None, "video"
        raise KnobError(f"unknown map item {str(item_id)[:80]!r}")

    # ---- gallery -------------------------------------------------------------------------
    def gallery_rows(self) -> list[list[str]]:
        snap = self._snapshot
        return [
            [r.video_id, r.split, " | ".join(r.captions), Path(r.path).name] for r in snap.records
        ]

    def skipped_rows(self) -> list[list[str]]:
        return [
            [s["video_id"], s["reason"], s["message"], Path(s["path"]).name]
            for s in self._snapshot.skipped
        ]

    def add_uploads(
        self,
        files: Sequence[str | os.PathLike],
        caption: str = "",
        progress: Progress = _no_progress,
    ) -> tuple[list[str], list[dict[str, str]]]:
        """Add uploaded videos to the gallery: copied under generated names into the uploads
        folder, decoded by the guarded decoder, embedded by every model, then the snapshot is
        swapped. Returns the added ids and the refused files with reasons."""
        if self.uploads_dir is None:
            raise KnobError("uploads are disabled (no uploads folder)")
        files = list(files or [])
        if not files:
            raise KnobError("choose one or more video files first")
        if len(files) > MAX_UPLOADS:
            raise KnobError(f"at most {MAX_UPLOADS} files per upload, got {len(files)}")
        caption = " ".join(_CONTROL.sub(" ", caption or "").split())[:MAX_QUERY_CHARS]
        refused: list[dict[str, str]] = []
        staged: list[VideoRecord] = []
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        for source in files:
            source = Path(source)
            name = source.name[:80]
            suffix = source.suffix.lower()
            if suffix not in VIDEO_EXTENSIONS:
                refused.append(
                    {
                        "file": name,
                        "reason": f"not a video extension ({', '.join(VIDEO_EXTENSIONS)})",
                    }
                )
                continue
            try:
                size = source.stat().st_size
            except OSError:
                refused.append({"file": name, "reason": "upload not found"})
                continue
            if size > self.upload_max_bytes:
                refused.append(
                    {"file": name, "reason": f"larger than {self.upload_max_bytes // 2**20} MiB"}
                )
                continue
            video_id = f"upload-{uuid.uuid4().hex[:12]}"
            target = self.uploads_dir / f"{video_id}{suffix}"
            tmp = self.uploads_dir / f".{video_id}.tmp"
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            staged.append(VideoRecord(video_id, target, [caption] if caption else [], "upload"))
        if not staged:
            return [], refused
        with self._write_lock:
            snap = self._snapshot
            progress(0.05, "decoding and embedding (base model)")
            base_gallery = add_videos(snap.base.gallery, staged, snap.base.encoder)
            emcl_gallery = None
            if snap.emcl is not None:
                progress(0.5, "embedding (EMCL model)")
                emcl_gallery = add_videos(snap.emcl.gallery, staged, snap.emcl.encoder)
            failed = {s["video_id"]: s for s in base_gallery.report.skipped}
            if emcl_gallery is not None:
                failed.update({s["video_id"]: s for s in emcl_gallery.report.skipped})
            added = []
            for record in staged:
                if record.video_id in failed:
                    reason = failed[record.video_id]
                    refused.append(
                        {
                            "file": record.path.name,
                            "reason": f"{reason['reason']}: {reason['message']}",
                        }
                    )
                    record.path.unlink(missing_ok=True)
                else:
                    added.append(record)
            if not added:
                return [], refused
            progress(0.9, "updating the gallery")
            new = make_snapshot(
                snap.version + 1,
                snap.base.encoder,
                base_gallery,
                snap.emcl.encoder if snap.emcl else None,
                emcl_gallery,
                self._text_caches,
                skipped=snap.skipped,
            )
            if caption:
                self._save_captions([(r.video_id + r.path.suffix, caption) for r in added])
            self._snapshot = new  # the swap: readers hold either the old or the new snapshot
        progress(1.0, "done")
        return [r.video_id for r in added], refused

    def _save_captions(self, pairs: list[tuple[str, str]]) -> None:
        path = uploads_captions(self.uploads_dir)
        lines = path.read_text().splitlines() if path.is_file() else []
        lines += [json.dumps({"video": v, "caption": c}) for v, c in pairs]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Start-up: data, models and galleries
# --------------------------------------------------------------------------------------------
def uploads_captions(uploads_dir: Path) -> Path:
    """Captions of uploads live beside (not inside) the served uploads folder."""
    return uploads_dir.with_name(uploads_dir.name + "-captions.jsonl")


@dataclass
class Setup:
    """Where everything comes from (the app's command-line flags)."""

    data: Path | None = None  # None: the demo world under cache_dir
    split: str = "test"
    base_checkpoint: Path | None = None
    checkpoint: Path | None = None  # the jointly trained EMCL checkpoint (optional)
    model: str | None = None  # open_clip backbone for a base model without a checkpoint
    pretrained: str | None = None
    cache_dir: Path = Path(".cache")
    device: str = "auto"
    world_size: tuple[int, int, int] = (2000, 1000, 0)  # demo world: train, test, seed
    log: Callable[[str], None] = field(default=print)

    @property
    def world_dir(self) -> Path:
        return self.cache_dir / "demo_world"

    @property
    def data_root(self) -> Path:
        return self.data if self.data is not None else self.world_dir

    @property
    def features_dir(self) -> Path:
        return self.cache_dir / "features"

    @property
    def uploads_dir(self) -> Path:
        return self.cache_dir / "uploads"

    @property
    def maps_dir(self) -> Path:
        return self.cache_dir / "maps"

    def video_dirs(self, records: Sequence[VideoRecord]) -> list[Path]:
        """The folders the browser may fetch videos from: those holding gallery videos."""
        dirs = {Path(r.path).resolve().parent for r in records}
        dirs.add(self.uploads_dir.resolve())
        return sorted(dirs)


def _encoder(setup: Setup, checkpoint: Path | None, emcl: bool) -> Encoder | None:
    from emcl.checkpoint import load_checkpoint
    from emcl.model import EMCLRetrievalModel, ModelConfig

    if checkpoint is not None:
        if not Path(checkpoint).exists():
            what = "EMCL" if emcl else "base"
            raise FileNotFoundError(
                f"no {what} checkpoint at {checkpoint}: train the demo models with the bundled "
                "training script, or pass --checkpoint / --base-checkpoint "
                "(or --model/--pretrained)"
            )
        return Encoder(load_checkpoint(checkpoint), setup.device)
    if emcl or setup.model is None:
        return None
    config = ModelConfig(
        backbone=setup.model, pretrained=setup.pretrained, temporal="meanP", emcl=None
    )
    return Encoder(EMCLRetrievalModel(config).eval(), setup.device)


def load_explorer(setup: Setup) -> Explorer:
    """Build (or load from cache) the data, the models and both galleries; log progress."""
    from emcl.demo_world import build_world, world_is_complete

    log = setup.log
    t0 = time.perf_counter()
    if setup.data is None:
        n_train, n_test, seed = setup.world_size
        if not world_is_complete(setup.world_dir, n_train, n_test, seed):
            log(f"building the demo world ({n_train} + {n_test} clips) in {setup.world_dir} …")
            build_world(setup.world_dir, n_train, n_test, seed, progress=True)
    records = read_dataset(setup.data_root, setup.split)
    if setup.uploads_dir.is_dir() and any(setup.uploads_dir.iterdir()):
        captions = uploads_captions(setup.uploads_dir)
        uploaded = read_folder(setup.uploads_dir, captions if captions.is_file() else None)
        records += [replace(r, split="upload") for r in uploaded if r.path.is_file()]
    log(f"{len(records)} videos in {setup.data_root} (split {setup.split})")
    base = _encoder(setup, setup.base_checkpoint, emcl=False)
    if base is None:
        raise ValueError("need a base model: --base-checkpoint or --model [--pretrained]")
    emcl = _encoder(setup, setup.checkpoint, emcl=True)
    galleries = []
    for name, encoder in (("base", base), ("EMCL", emcl)):
        if encoder is None:
            galleries.append(None)
            continue
        log(f"indexing the gallery with the {name} model (cached after the first run) …")
        galleries.append(
            build_gallery(records, encoder, setup.features_dir, num_frames=encoder.num_frames)
        )
    explorer = Explorer(
        base,
        galleries[0],
        emcl,
        galleries[1],
        ground_truth=GroundTruth.load(setup.data_root),
        uploads_dir=setup.uploads_dir,
        map_cache_dir=setup.maps_dir,
    )
    snap = explorer.snapshot
    log(
        f"ready in {time.perf_counter() - t0:.1f} s: {len(snap.records)} videos, "
        f"{len(snap.captions)} captions, {len(snap.skipped)} skipped"
    )
    return explorer


__all__ = [
    "CONTEXTS",
    "INITS",
    "LIMITS",
    "MODES",
    "SWEEPS",
    "AlignResult",
    "Explorer",
    "GroundTruth",
    "KnobError",
    "Knobs",
    "MapResult",
    "MetricsResult",
    "Row",
    "SearchResult",
    "Setup",
    "Snapshot",
    "SweepResult",
    "clean_query",
    "load_explorer",
    "make_snapshot",
]
