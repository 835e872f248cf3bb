"""The typed cache entry: its JSON form is the on-disk form, key order included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import CacheEntry, FileStat, WindowRow, file_stat
from emcl.data.gallery.entry import cached_rows
from emcl.data.gallery.hashing import NO_STAT, read_stat, tensor_digest
from emcl.data.gallery.shards import read_shard, write_shard

FIXTURE_CACHE = Path(__file__).parent / "fixtures" / "gallery_cache_v1" / "cache"
BASE_KEYS = [
    "video_id", "path", "captions", "split", "size", "mtime_ns", "hash", "row", "reason",
    "message", "notes",
]  # fmt: skip


def fixture_entries() -> list[dict]:
    out = []
    for path in sorted(FIXTURE_CACHE.glob("*/shard-*.safetensors")):
        with safe_open(str(path), "pt") as f:
            out += json.loads(f.metadata()["entries"])
    return out


def test_the_committed_entries_round_trip_key_for_key():
    raw = fixture_entries()
    assert {e["video_id"] for e in raw} == {"a", "b", "bad", "long"}
    for d in raw:
        entry = CacheEntry.from_json(d)
        assert json.dumps(entry.to_json()) == json.dumps(d)  # same keys, order and values
    long = CacheEntry.from_json(next(d for d in raw if d["video_id"] == "long"))
    assert long.duration_s == 4.0 and long.rows() == [0, 1, 2, 3]
    assert long.windows[1] == WindowRow(2, (1.0, 3.0))
    bad = CacheEntry.from_json(next(d for d in raw if d["video_id"] == "bad"))
    assert not bad.indexed and bad.rows() == [] and bad.windows is None
    assert bad.skip_row() == {
        "video_id": "bad", "path": "videos/bad.mp4", "reason": "not_a_video",
        "message": "unrecognised file signature",
    }  # fmt: skip


def test_key_order_and_optional_keys():
    record = VideoRecord("v", Path("clips/v.mp4"), ["a cat"], "test")
    short = CacheEntry.for_record(record, FileStat(10, 20, "ab"), row=3, notes=("repaired",))
    assert list(short.to_json()) == BASE_KEYS
    assert short.to_json()["captions"] == ["a cat"] and short.to_json()["notes"] == ["repaired"]
    compacted = CacheEntry.from_json(short.to_json() | {"windows": []})
    assert list(compacted.to_json()) == [*BASE_KEYS, "windows"] and compacted.windows == ()
    long = CacheEntry.for_record(
        record, None, row=0, duration_s=40.5, windows=(WindowRow(1, (0.0, 10.0)),)
    )
    assert list(long.to_json()) == [*BASE_KEYS, "duration_s", "windows"]
    assert long.stat == NO_STAT and long.to_json()["size"] == -1
    assert long.record() == record


def test_an_entry_knows_its_file(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"x" * 100)
    stat = read_stat(path)
    assert file_stat(path) == stat.to_json() and stat.size == 100
    entry = CacheEntry.for_record(VideoRecord("v", path), stat, row=0)
    assert entry.same_file(read_stat(path))
    path.write_bytes(b"y" * 100)  # same size: the hash tells
    assert not entry.same_file(read_stat(path))
    assert not entry.same_file(None) and read_stat(tmp_path / "gone.mp4") is None


def test_cached_rows_takes_the_entry_rows():
    frames = torch.arange(4 * 2 * 3, dtype=torch.float16).reshape(4, 2, 3)  # [B, T, D]
    video = torch.arange(4 * 3, dtype=torch.float16).reshape(4, 3)  # [B, D]
    windows = (WindowRow(2, (0.0, 1.0)), WindowRow(3, (1.0, 2.0)))
    entry = CacheEntry(video_id="v", path="v.mp4", row=1, windows=windows)
    c = cached_rows(entry, frames, video)
    assert torch.equal(c.frames, frames[1]) and torch.equal(c.video, video[1])
    assert [s for s, _, _ in c.windows] == [(0.0, 1.0), (1.0, 2.0)]
    assert torch.equal(c.windows[1][2], video[3])
    skipped = cached_rows(CacheEntry(video_id="w", path="w.mp4", reason="empty"), frames, video)
    assert skipped.frames is None and skipped.windows == ()


def test_a_shard_round_trips_and_an_entry_without_its_identity_is_damage(tmp_path):
    entries = [CacheEntry(video_id="v", path="v.mp4", stat=FileStat(1, 2, "h"), row=0)]
    frames, video = torch.ones(1, 2, 3, dtype=torch.float16), torch.ones(1, 3, dtype=torch.float16)
    path = write_shard(tmp_path, entries, frames, video, tag="r1")
    assert path.name.endswith("-r1.safetensors")
    back, tensors = read_shard(path)
    assert back == entries and torch.equal(tensors["video"], video)
    broken = [entries[0].to_json()]
    del broken[0]["hash"]
    tensors = {"frames": frames, "video": video}
    meta = {"entries": json.dumps(broken), "sha256": tensor_digest(tensors), "version": "2"}
    save_file(tensors, str(tmp_path / "shard-1-1-1.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unreadable"):
        read_shard(tmp_path / "shard-1-1-1.safetensors")


texts = st.text(max_size=12)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
spans = st.tuples(floats, floats)
entries = st.builds(
    CacheEntry,
    video_id=texts,
    path=texts,
    captions=st.lists(texts, max_size=3).map(tuple),
    split=texts,
    stat=st.builds(FileStat, st.integers(-1, 2**62), st.integers(-1, 2**62), texts),
    row=st.none() | st.integers(0, 1000),
    reason=texts,
    message=texts,
    notes=st.lists(texts, max_size=2).map(tuple),
    duration_s=st.none() | floats,
    windows=st.none() | st.lists(st.builds(WindowRow, st.integers(0, 99), spans)).map(tuple),
)


@given(entries)
def test_any_entry_survives_its_json_form(entry):
    on_disk = json.dumps([entry.to_json()])
    assert [CacheEntry.from_json(d) for d in json.loads(on_disk)] == [entry]
    again = json.dumps([CacheEntry.from_json(d).to_json() for d in json.loads(on_disk)])
    assert again == on_disk
