"""The one way this project writes a file: to a temp file beside it, fsync, then rename.

A reader sees the old file or the new one, never half of one, and a crash mid-write leaves
the old file in place (docs/reliability.md §1, §3). Writers that need a file name of their
own (safetensors, numpy, the video encoder, ``shutil.copyfile``) use :func:`atomic_output`;
bytes, text and JSON go through :func:`atomic_write` and :func:`atomic_write_json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (not possible on every platform or filesystem)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on a clean exit it is fsynced and renamed to
    ``path``, on an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8, newlines untranslated) to ``path`` atomically."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_options: Any) -> None:
    """``json.dumps(obj, **dump_options)`` written atomically, with a final newline."""
    atomic_write(path, json.dumps(obj, **dump_options) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 16 MiB blocks (index files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["atomic_output", "atomic_write", "atomic_write_json", "file_sha256"]
