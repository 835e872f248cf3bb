"""Atomic writes: a reader sees the old file or the new one, and no temp file outlives a write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import emcl.fileio as fileio_mod
from emcl.fileio import atomic_output, atomic_write, atomic_write_json


def names(folder: Path) -> list[str]:
    """Every entry in ``folder``, hidden temp files included."""
    return sorted(p.name for p in folder.iterdir())


def test_text_bytes_and_json_round_trip(tmp_path):
    text = tmp_path / "a.txt"
    atomic_write(text, "héllo\nworld\r\n")
    assert text.read_bytes() == "héllo\nworld\r\n".encode()  # UTF-8, newlines untranslated
    blob = tmp_path / "b.bin"
    atomic_write(blob, bytes(range(256)))
    assert blob.read_bytes() == bytes(range(256))
    obj = {"b": [1, 2.5, None], "a": "ü"}
    doc = tmp_path / "c.json"
    atomic_write_json(doc, obj, sort_keys=True, separators=(",", ":"))
    assert doc.read_text() == '{"a":"\\u00fc","b":[1,2.5,null]}\n'
    assert json.loads(doc.read_text()) == obj
    assert names(tmp_path) == ["a.txt", "b.bin", "c.json"]  # no temp files left


def test_overwrite_and_missing_folders(tmp_path):
    path = tmp_path / "new" / "deeper" / "f.txt"
    atomic_write(path, "one")
    atomic_write(path, "two")
    assert path.read_text() == "two"
    assert names(path.parent) == ["f.txt"]


def test_failed_rename_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write(path, "old")

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(fileio_mod.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_json(path, {"new": True})
    assert path.read_text() == "old"
    assert names(tmp_path) == ["f.json"]


def test_writer_failing_midway_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old content")

    def half_then_full_disk(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new content that never fully lands")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert names(tmp_path) == ["f.bin"]


def test_atomic_output_publishes_on_success(tmp_path):
    path = tmp_path / "clip.npy"
    with atomic_output(path) as tmp:
        assert tmp.parent == path.parent and tmp != path  # same folder: rename is atomic
        assert not path.exists()  # nothing published before the block ends
        tmp.write_bytes(b"data")
    assert path.read_bytes() == b"data"
    assert names(tmp_path) == ["clip.npy"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_removes_its_temp_on_error(tmp_path, error):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    with pytest.raises(error), atomic_output(path) as tmp:
        seen = tmp
        tmp.write_bytes(b"partial")
        raise error("stopped midway")
    assert not seen.exists()
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["clip.mp4"]


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path):
    import hashlib

    from emcl.fileio import file_sha256

    path = tmp_path / "blob"
    data = bytes(range(256)) * 70_000  # 17.9 MB: two 16 MiB read blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
