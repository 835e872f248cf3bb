"""How the cache recognises a video file and checks a shard: a quick content hash of the file
and a SHA-256 of a shard's tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

HASH_HEAD = 2**20  # bytes hashed at each end of a file
HASH_SAMPLES = 16  # and this many 64 KiB pieces spread between them
_PIECE = 2**16


@dataclass(frozen=True)
class FileStat:
    """A video file's identity: an entry is reused only while all three are unchanged (a file
    replaced by other content with the same size and mtime differs in its hash)."""

    size: int
    mtime_ns: int
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "hash": self.hash}


NO_STAT = FileStat(-1, -1, "")  # what an entry of a missing file records


def read_stat(path: Path) -> FileStat | None:
    """Size, mtime and a quick content hash, or None if absent. The hash covers the size,
    the first and last MiB and 16 evenly spread 64 KiB pieces (all of a file up to ~3 MiB):
    ~3 MiB read per file, whatever its size."""
    try:
        st = path.stat()
    except OSError:
        return None
    h = hashlib.sha256(str(st.st_size).encode())
    try:
        with open(path, "rb") as f:
            h.update(f.read(HASH_HEAD))
            middle = st.st_size - 2 * HASH_HEAD
            if middle > 0:
                for k in range(HASH_SAMPLES):
                    f.seek(HASH_HEAD + middle * k // HASH_SAMPLES)
                    h.update(f.read(min(_PIECE, middle)))
            if st.st_size > HASH_HEAD:
                f.seek(max(HASH_HEAD, st.st_size - HASH_HEAD))
                h.update(f.read(HASH_HEAD))
    except OSError:
        return None
    return FileStat(st.st_size, st.st_mtime_ns, h.hexdigest()[:32])


def file_stat(path: Path) -> dict[str, Any] | None:
    """:func:`read_stat` as the ``{"size", "mtime_ns", "hash"}`` a cache entry stores."""
    stat = read_stat(path)
    return None if stat is None else stat.to_json()


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the tensors' names, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


__all__ = [
    "HASH_HEAD", "HASH_SAMPLES", "NO_STAT", "FileStat", "file_stat", "read_stat", "tensor_digest",
]  # fmt: skip
