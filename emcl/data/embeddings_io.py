"""Precomputed embeddings in and out: parquet (pyarrow) and ``.npy`` + ids.

What clip-retrieval and FiftyOne users bring: one row per video (or per time window), an id
and an embedding. :func:`read_embeddings` checks every row before anything is built and
refuses the file with the row number and the reason (missing id, duplicate id, no embedding,
wrong length, NaN or infinity, zero vector); :func:`write_parquet` writes the same columns.

Parquet columns: ``video_id`` (string; ``id`` is accepted on input), ``embedding`` (a list of
floats, fixed size on output), and optionally ``span_start`` / ``span_end`` (seconds, null for
the whole video). ``.npy``: an ``[N, D]`` float array, with the ids in a text file (one per
line) or a JSON list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emcl.fileio import atomic_output

Span = tuple[float, float] | None
_MAX_LISTED = 5  # problems named in one error message
_BATCH = 65_536  # rows per parquet row group on output


class EmbeddingsInputError(ValueError):
    """Input embeddings refused; the message names the file, rows and reasons."""


@dataclass(frozen=True)
class EmbeddingTable:
    """Validated rows: ids, time spans (None: the whole video) and embeddings ``[N, D]``."""

    video_ids: list[str]
    spans: list[Span]
    embeddings: np.ndarray  # [N, D] float16 or float32, finite, non-zero rows

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def _refuse(path: Path, problems: list[str]) -> None:
    if problems:
        more = (
            f"\n  … and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        listed = "\n  ".join(problems[:_MAX_LISTED])
        raise EmbeddingsInputError(
            f"{path}: {len(problems)} bad row(s), nothing was built:\n  {listed}{more}"
        )


def check_table(
    path: Path,
    ids: Sequence[object],
    spans: Sequence[Span],
    embeddings: np.ndarray,
    bad_length: dict[int, int],
    dim: int | None,
) -> EmbeddingTable:
    """The rows as a table, or :class:`EmbeddingsInputError` naming each bad row (1-based).

    ``bad_length``: row -> its number of values where that differs from ``embeddings``' D (or
    -1 for no embedding at all); those rows of ``embeddings`` are ignored."""
    problems: list[str] = []
    if dim is not None and embeddings.shape[1] != dim and not bad_length:
        raise EmbeddingsInputError(
            f"{path}: embeddings have {embeddings.shape[1]} dimensions, the model's have {dim}"
        )
    expected = dim if dim is not None else embeddings.shape[1]
    seen: dict[tuple[str, Span], int] = {}
    finite, nonzero = _row_checks(embeddings)
    for row, (video_id, span) in enumerate(zip(ids, spans, strict=True)):
        where = f"row {row + 1}"
        if not isinstance(video_id, str) or not video_id.strip():
            problems.append(f"{where}: missing id")
            continue
        where += f" ({video_id})"
        if (video_id, span) in seen:
            problems.append(f"{where}: duplicate id (first at row {seen[video_id, span] + 1})")
        seen.setdefault((video_id, span), row)
        if row in bad_length:
            n = bad_length[row]
            what = "no embedding" if n < 0 else f"{n} values, expected {expected}"
            problems.append(f"{where}: {what}")
        elif not finite[row]:
            problems.append(f"{where}: NaN or infinite value in the embedding")
        elif not nonzero[row]:
            problems.append(f"{where}: zero vector (it has no direction to rank by)")
    _refuse(path, problems)
    if len(ids) == 0:
        raise EmbeddingsInputError(f"{path}: no rows")
    return EmbeddingTable([str(v) for v in ids], list(spans), embeddings)


def _row_checks(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N]`` bool each: rows that are finite, rows that are not all zero (chunked: a
    memory-mapped 1M × 512 array is never copied whole)."""
    finite = np.empty(len(embeddings), dtype=bool)
    nonzero = np.empty(len(embeddings), dtype=bool)
    for start in range(0, len(embeddings), _BATCH):
        part = np.asarray(embeddings[start : start + _BATCH], dtype=np.float32)
        finite[start : start + _BATCH] = np.isfinite(part).all(axis=1)
        nonzero[start : start + _BATCH] = (np.nan_to_num(part) != 0).any(axis=1)
    return finite, nonzero


def _read_ids(path: Path) -> list[object]:
    if path.suffix.lower() == ".json":
        ids = json.loads(path.read_text())
        if not isinstance(ids, list):
            raise EmbeddingsInputError(f"{path}: expected a JSON list of ids")
        return ids
    return path.read_text().splitlines()


def read_npy(path: Path, ids_path: Path, dim: int | None = None) -> EmbeddingTable:
    """``[N, D]`` embeddings from ``path`` with their ids from ``ids_path``."""
    try:
        embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EmbeddingsInputError(f"{path}: not a readable .npy array ({e})") from None
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise EmbeddingsInputError(
            f"{path}: need a 2-D float array [videos, dimensions], got {embeddings.dtype} "
            f"{embeddings.shape}"
        )
    ids = _read_ids(ids_path)
    if len(ids) != len(embeddings):
        raise EmbeddingsInputError(
            f"{ids_path}: {len(ids)} ids for {len(embeddings)} embeddings in {path.name}"
        )
    if dim is not None and embeddings.shape[1] != dim:
        raise EmbeddingsInputError(
            f"{path}: embeddings have {embeddings.shape[1]} dimensions, the model's have {dim}"
        )
    array = np.ascontiguousarray(embeddings)
    return check_table(path, ids, [None] * len(ids), array, {}, dim)


def read_parquet(path: Path, dim: int | None = None) -> EmbeddingTable:
    """Rows of a parquet file with ``video_id`` (or ``id``), ``embedding`` and optional spans."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise EmbeddingsInputError(f"{path}: not a readable parquet file ({e})") from None
    id_column = next((c for c in ("video_id", "id") if c in table.column_names), None)
    if id_column is None or "embedding" not in table.column_names:
        raise EmbeddingsInputError(
            f"{path}: need columns 'video_id' (or 'id') and 'embedding', found "
            f"{', '.join(table.column_names)}"
        )
    column = table.column("embedding").combine_chunks()
    kinds = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_kind(column.type) for is_kind in kinds):
        raise EmbeddingsInputError(
            f"{path}: 'embedding' must be a list of floats, not {column.type}"
        )
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy()
    valid = lengths[lengths >= 0]
    common = int(np.bincount(valid).argmax()) if len(valid) else 0
    if dim is not None and len(valid) and (valid == common).all() and common != dim:
        raise EmbeddingsInputError(
            f"{path}: embeddings have {common} dimensions, the model's have {dim}"
        )
    width = dim if dim is not None else common
    bad_length = {int(r): int(lengths[r]) for r in np.flatnonzero(lengths != width)}
    # rows of the common width, a zero row in place of each bad one (reported, never kept)
    good = pc.if_else(pa.array(lengths == width), column, pa.scalar([0.0] * width, column.type))
    values = good.flatten().to_numpy(zero_copy_only=False)
    embeddings = np.asarray(values, dtype=np.float32).reshape(len(column), width)
    ids = table.column(id_column).to_pylist()
    starts, ends = (
        table.column(c).to_pylist() if c in table.column_names else [None] * len(ids)
        for c in ("span_start", "span_end")
    )
    spans: list[Span] = [
        (float(s), float(e)) if s is not None and e is not None else None
        for s, e in zip(starts, ends, strict=True)
    ]
    return check_table(path, ids, spans, embeddings, bad_length, dim)


def read_embeddings(
    path: str | os.PathLike, ids: str | os.PathLike | None = None, dim: int | None = None
) -> EmbeddingTable:
    """A parquet file, or a ``.npy`` array with its ``ids`` file; ``dim``: the model's D."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsInputError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        return read_parquet(path, dim)
    if path.suffix.lower() == ".npy":
        if ids is None:
            raise EmbeddingsInputError(f"{path}: a .npy array needs its ids (--ids FILE)")
        return read_npy(path, Path(ids), dim)
    raise EmbeddingsInputError(f"{path}: expected a .parquet file or a .npy array")


def write_parquet(
    path: str | os.PathLike, video_ids: Sequence[str], spans: Sequence[Span], embeddings
) -> None:
    """Rows ``video_id``, ``span_start``, ``span_end``, ``embedding`` (float32 × D), atomically;
    ``embeddings`` ``[N, D]`` (numpy or memory-mapped) is converted one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = int(embeddings.shape[1])
    schema = pa.schema(
        [
            ("video_id", pa.string()),
            ("span_start", pa.float64()),
            ("span_end", pa.float64()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(video_ids), _BATCH):
            stop = start + _BATCH
            flat = np.asarray(embeddings[start:stop], dtype=np.float32).reshape(-1)
            part = spans[start:stop]
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array(video_ids[start:stop], pa.string()),
                        pa.array([s[0] if s else None for s in part], pa.float64()),
                        pa.array([s[1] if s else None for s in part], pa.float64()),
                        pa.FixedSizeListArray.from_arrays(pa.array(flat), dim),
                    ],
                    schema=schema,
                )
            )


__all__ = [
    "EmbeddingTable",
    "EmbeddingsInputError",
    "Span",
    "check_table",
    "read_embeddings",
    "read_npy",
    "read_parquet",
    "write_parquet",
]
