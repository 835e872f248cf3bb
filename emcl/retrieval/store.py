"""An index folder: the gallery that ``python -m emcl index build`` writes and ``query`` reads.

    INDEX/index.json      format, the model (checkpoint or open_clip name, and its fingerprint),
                          the source, row count and D, the SHA-256 of the two files below and
                          the command that rebuilds the folder
    INDEX/rows.json       per row: the video id and its time span (null: the whole video;
                          a long video indexed as windows has one row per window)
    INDEX/embeddings.npy  [N, D] fp16 video embeddings (memory-mapped on load)
    INDEX/ann-*.faiss     the ANN shortlist (+ its .json), above the threshold (retrieval/ann.py)

Files are written atomically and ``index.json`` last, so a crash leaves checksums that do not
match. :func:`open_index` verifies them and refuses a missing, truncated, foreign or stale
folder with the command that rebuilds it; :meth:`StoredIndex.check_model` refuses a model that
is not the one the index was built with. A damaged ANN file is rebuilt from the embeddings.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emcl.data.embeddings_io import EmbeddingTable, Span
from emcl.fileio import atomic_output, atomic_write_json, file_sha256
from emcl.retrieval.ann import AnnConfig, sidecar
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import ItemMap

if TYPE_CHECKING:
    from emcl.data.gallery import Gallery
    from emcl.model.encoder import Encoder

STORE_FORMAT = "emcl-index/1"
MANIFEST = "index.json"
ROWS = "rows.json"
EMBEDDINGS = "embeddings.npy"
BUILD_HELP = "python -m emcl index build --data DIR --out {folder} --checkpoint CHECKPOINT"


class IndexStoreError(ValueError):
    """An index folder that cannot be used; the message names the command that rebuilds it."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model embeds the queries: a checkpoint folder, or an open_clip backbone."""

    checkpoint: str | None = None
    model: str | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.model is None):
            raise ValueError("name a model: --checkpoint DIR, or --model NAME [--pretrained TAG]")

    def args(self) -> list[str]:
        """The command-line options that name this model."""
        if self.checkpoint is not None:
            return ["--checkpoint", self.checkpoint]
        tag = ["--pretrained", self.pretrained] if self.pretrained else []
        return ["--model", str(self.model), *tag]

    def encoder(self, device: str = "auto") -> Encoder:
        from emcl.model.checkpoint import load_checkpoint
        from emcl.model.config import ModelConfig
        from emcl.model.encoder import Encoder
        from emcl.model.model import EMCLRetrievalModel

        if self.checkpoint is not None:
            return Encoder(load_checkpoint(self.checkpoint), device)
        config = ModelConfig(
            backbone=str(self.model), pretrained=self.pretrained, temporal="meanP", emcl=None
        )
        return Encoder(EMCLRetrievalModel(config).eval(), device)


def write_index(
    folder: str | os.PathLike,
    table: EmbeddingTable,
    model: ModelSpec,
    model_fingerprint: str,
    source: dict[str, Any],
    command: Sequence[str],
    ann: AnnConfig | None = None,
    log: Callable[[str], None] = print,
) -> StoredIndex:
    """Write ``table`` as an index folder (the ANN index too, above its threshold)."""
    ann = ann or AnnConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder / EMBEDDINGS) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(table.embeddings, dtype=np.float16), allow_pickle=False)
    rows = {
        "video_id": list(table.video_ids),
        "span": [list(s) if s else None for s in table.spans],
    }
    atomic_write_json(folder / ROWS, rows)
    manifest = {
        "format": STORE_FORMAT,
        "model": {**asdict(model), "fingerprint": model_fingerprint},
        "source": source,
        "count": len(table),
        "dim": table.dim,
        "sha256": {name: file_sha256(folder / name) for name in (EMBEDDINGS, ROWS)},
        "ann_threshold": ann.threshold,
        "command": shlex.join(command),
    }
    atomic_write_json(folder / MANIFEST, manifest, indent=1)
    stored = open_index(folder)
    index = stored.gallery_index(ann, log)
    keep = {index.ann.path.name, sidecar(index.ann.path).name} if index.ann else set()
    for stale in folder.glob("ann-*"):  # indices of earlier builds into this folder
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return stored


def gallery_table(gallery: Gallery) -> EmbeddingTable:
    """A gallery's rows as a table: one per indexed item (a short video, or one window of a
    long video, with its span; emcl/data/windows.py)."""
    items = gallery.items()
    embeddings = items.video_embeddings.numpy()  # [Ni, D] fp16
    return EmbeddingTable(list(items.video_ids), list(items.spans), embeddings)


@dataclass(frozen=True)
class StoredIndex:
    """A verified index folder: ids, spans and memory-mapped embeddings."""

    folder: Path
    manifest: dict[str, Any]
    video_ids: list[str]
    spans: list[Span]
    embeddings: np.ndarray  # [N, D] fp16, memory-mapped (copy-on-write)

    @property
    def model(self) -> ModelSpec:
        m = self.manifest["model"]
        return ModelSpec(m.get("checkpoint"), m.get("model"), m.get("pretrained"))

    @property
    def rebuild(self) -> str:
        return self.manifest["command"]

    def item_map(self) -> ItemMap | None:
        """How rows group into videos when some rows are time windows (else None: one row
        per video); ``rank_query`` then ranks every video at its best window."""
        if all(span is None for span in self.spans):
            return None
        position: dict[str, int] = {}
        rows = [position.setdefault(v, len(position)) for v in self.video_ids]
        return ItemMap(torch.tensor(rows, dtype=torch.long), tuple(self.spans))

    def check_model(self, encoder: Encoder) -> None:
        """Refuse a model other than the one the embeddings came from."""
        built = self.manifest["model"]["fingerprint"]
        if encoder.fingerprint != built:
            raise IndexStoreError(
                f"{self.folder} was built with model {built}, but {' '.join(self.model.args())} "
                f"is now model {encoder.fingerprint}; rebuild the index: {self.rebuild}"
            )
        if encoder.embed_dim != self.manifest["dim"]:
            raise IndexStoreError(
                f"{self.folder} holds {self.manifest['dim']}-D embeddings, the model's are "
                f"{encoder.embed_dim}-D; rebuild the index: {self.rebuild}"
            )

    def gallery_index(
        self, ann: AnnConfig | None = None, log: Callable[[str], None] = print
    ) -> GalleryIndex:
        """The rankable index, with its ANN shortlist (loaded, or rebuilt if it is missing,
        damaged or stale) above the threshold."""
        embeddings = torch.from_numpy(self.embeddings)  # [N, D] fp16, read lazily
        index = GalleryIndex.build(self.video_ids, embeddings)
        return index.with_ann(self.folder, self.manifest["model"]["fingerprint"], ann, log)


def _refuse(folder: Path, problem: str, command: str | None) -> IndexStoreError:
    rebuild = command or BUILD_HELP.format(folder=shlex.quote(str(folder)))
    return IndexStoreError(f"{problem}; rebuild it: {rebuild}")


def open_index(folder: str | os.PathLike) -> StoredIndex:
    """The index folder ``folder``, verified (:class:`IndexStoreError` naming the build command
    if it is missing, foreign, truncated or inconsistent)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise _refuse(folder, f"no index at {folder}", None)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise ValueError(f"not format {STORE_FORMAT}")
    except (OSError, ValueError) as e:
        raise _refuse(folder, f"{folder / MANIFEST} is not an EMCL index ({e})", None) from None
    command = manifest.get("command")
    checksums = manifest.get("sha256") or {}
    for name in (EMBEDDINGS, ROWS):
        path = folder / name
        if not path.is_file():
            raise _refuse(folder, f"{path} is missing", command)
        if file_sha256(path) != checksums.get(name):
            raise _refuse(
                folder, f"{path} does not match its checksum (truncated or replaced)", command
            )
    try:
        rows = json.loads((folder / ROWS).read_text())
        embeddings = np.load(folder / EMBEDDINGS, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _refuse(folder, f"{folder} is unreadable ({e})", command) from None
    count, dim = manifest.get("count"), manifest.get("dim")
    if embeddings.shape != (count, dim) or len(rows.get("video_id", ())) != count:
        raise _refuse(
            folder, f"{folder} holds {embeddings.shape}, expected ({count}, {dim})", command
        )
    spans = [tuple(s) if s else None for s in rows["span"]]
    return StoredIndex(folder, manifest, list(rows["video_id"]), spans, embeddings)


__all__ = [
    "MANIFEST",
    "STORE_FORMAT",
    "IndexStoreError",
    "ModelSpec",
    "StoredIndex",
    "gallery_table",
    "open_index",
    "write_index",
]
