"""Sharded extraction: disjoint shares, two gloo processes filling one cache, one merge,
resuming after a kill, and a failed part that does not stop the others from merging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_gallery import TinyEncoder

from emcl.data.datasets import VideoRecord
from emcl.data.gallery import build_gallery
from emcl.data.sharding import Rank, extract_part, merge_parts, shard_records

TESTS = Path(__file__).resolve().parent
OPTIONS = {"num_frames": 4, "batch_size": 2, "progress": False}

# One rank of a run: the records, the cache and what to do come from argv (a JSON file).
WORKER = """
import json, sys
sys.path[:0] = {paths!r}
from pathlib import Path
from test_gallery import TinyEncoder
from emcl.data.datasets import VideoRecord
from emcl.data.sharding import run


class FailingEncoder(TinyEncoder):
    def encode_videos(self, frames):
        if self.fail_after is not None and self.encoded >= self.fail_after:
            raise RuntimeError("out of GPU memory")  # a rank's own failure
        self.seen.append(len(frames))
        return TinyEncoder(self.fingerprint).encode_videos(frames)


job = json.loads(Path(sys.argv[1]).read_text())
records = [VideoRecord(r["id"], Path(r["path"])) for r in job["records"]]
encoder = FailingEncoder(fail_after=job["fail_after"])
result = run(records, encoder, job["cache"], **job["options"])
if result is not None:
    Path(job["out"]).write_text(json.dumps({{"ok": result.ok, "failed": result.failed,
        "ids": result.gallery.video_ids, "skipped": result.gallery.report.skipped}}))
"""


@given(st.sets(st.text("abcdefghij0123456789", min_size=1, max_size=6), max_size=40),
       st.integers(1, 5))  # fmt: skip
def test_shares_are_disjoint_deterministic_and_cover_everything(ids, world):
    records = [VideoRecord(v, Path(f"{v}.mp4")) for v in ids]
    shares = [shard_records(records, r, world) for r in range(world)]
    flat = [r.video_id for share in shares for r in share]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    backwards = [shard_records(records[::-1], r, world) for r in range(world)]
    assert [[r.video_id for r in s] for s in backwards] == [[r.video_id for r in s] for s in shares]
    with pytest.raises(ValueError):
        shard_records(records, world, world)


def run_ranks(tmp_path: Path, records: list[VideoRecord], fail_after: list[int | None]) -> dict:
    """Run one rank per entry of ``fail_after`` as torchrun would (gloo, env://); rank 0's
    merge result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(paths=[str(TESTS), str(TESTS.parent)]))
    procs = []
    for rank, fail in enumerate(fail_after):
        job = tmp_path / f"job{rank}.json"
        job.write_text(json.dumps({
            "records": [{"id": r.video_id, "path": str(r.path)} for r in records],
            "cache": str(tmp_path / "cache"), "options": OPTIONS, "fail_after": fail,
            "out": str(tmp_path / "merged.json"),
        }))  # fmt: skip
        env = os.environ | {
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(len(fail_after)),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
        }  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(script), str(job)], env=env))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0] * len(procs)
    return json.loads((tmp_path / "merged.json").read_text())


@pytest.fixture
def corpus(tmp_path, make_clip) -> list[VideoRecord]:
    """Eight good clips and two corrupt files."""
    good = [VideoRecord(f"v{i}", make_clip(f"v{i}.mp4", n=6 + i)) for i in range(8)]
    (tmp_path / "text.mp4").write_text("not a video\n" * 40)
    (tmp_path / "half.mp4").write_bytes(make_clip("src.mp4", n=30).read_bytes()[:1500])
    bad = [VideoRecord("text", tmp_path / "text.mp4"), VideoRecord("half", tmp_path / "half.mp4")]
    return [*good, *bad]


def test_two_gloo_ranks_merge_despite_a_failed_part_which_then_resumes(corpus, tmp_path):
    merged = run_ranks(tmp_path, corpus, [None, 2])  # rank 1 fails after two clips
    assert not merged["ok"] and merged["failed"] == ["rank-1-of-2"]
    rank1 = {r.video_id for r in shard_records(corpus, 1, 2)}
    lost = {s["video_id"] for s in merged["skipped"] if s["reason"] == "not_extracted"}
    assert lost and lost <= rank1  # rank 0's share merged in full
    assert set(merged["ids"]) == {f"v{i}" for i in range(8)} - lost
    (folder,) = (tmp_path / "cache").iterdir()
    error = json.loads((folder / "parts" / "rank-1-of-2.json").read_text())["error"]
    assert "RuntimeError: out of GPU memory" in error

    # rank 1 again (what rerunning the command does for it), then the merge
    enc = TinyEncoder()
    extract_part(corpus, enc, tmp_path / "cache", Rank(1, 2), **OPTIONS)
    assert enc.encoded == len(lost - {"text", "half"})  # only what the failed part left
    result = merge_parts(corpus, TinyEncoder(), tmp_path / "cache", 2, **OPTIONS)
    assert result.ok and result.gallery.video_ids == [f"v{i}" for i in range(8)]
    assert {s["video_id"]: s["reason"] for s in result.gallery.report.skipped} == {
        "text": "not_a_video", "half": "truncated",
    }  # fmt: skip
    shards = sorted(p.name for p in folder.glob("shard-*.safetensors"))
    tags = {n.removesuffix(".safetensors").rsplit("-", 1)[-1] for n in shards}
    assert tags == {"rank0of2", "rank1of2"}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["shards"] == shards and not list(folder.glob(".*tmp"))
    parts = json.loads((folder / "merge.json").read_text())["parts"]
    assert sorted(parts) == ["rank-0-of-2", "rank-1-of-2"] and "error" not in parts["rank-1-of-2"]
    # the same features as one process indexing everything
    enc = TinyEncoder()
    sharded = build_gallery(corpus, enc, tmp_path / "cache", **OPTIONS)
    single = build_gallery(corpus, TinyEncoder(), tmp_path / "single", **OPTIONS)
    assert enc.encoded == 0 and sharded.video_ids == single.video_ids
    assert torch.equal(sharded.video_embeddings, single.video_embeddings)
    assert torch.equal(sharded.frame_embeddings, single.frame_embeddings)


def test_a_killed_run_resumes_and_recomputes_nothing_done(corpus, tmp_path):
    world = 2
    first = TinyEncoder()
    extract_part(corpus, first, tmp_path / "cache", Rank(0, world), **OPTIONS)  # rank 1 killed
    merged = merge_parts(corpus, TinyEncoder(), tmp_path / "cache", **OPTIONS)  # N as recorded
    assert merged.failed == ["rank-1-of-2"] and "no report" in str(merged)
    lost = {s["video_id"] for s in merged.gallery.report.skipped if s["reason"] == "not_extracted"}
    assert lost == {r.video_id for r in shard_records(corpus, 1, world)}  # never started
    encoders = [TinyEncoder(), TinyEncoder()]
    for rank, enc in enumerate(encoders):
        extract_part(corpus, enc, tmp_path / "cache", Rank(rank, world), **OPTIONS)
    assert encoders[0].encoded == 0  # rank 0's share was done
    assert encoders[1].encoded == len(lost - {"text", "half"})
    final = merge_parts(corpus, TinyEncoder(), tmp_path / "cache", world, **OPTIONS)
    assert final.ok and len(final.gallery) == 8


def test_the_extract_command_indexes_and_merges(tiny_world, tmp_path, capsys):
    from emcl.cli.extract import main

    (tiny_world / "videos" / "video20.mp4").rename(tmp_path / "video20.mp4")  # one file missing
    try:
        argv = ["--data", str(tiny_world), "--split", "test", "--quiet", "--cache-dir",
                str(tmp_path), "--checkpoint", str(TESTS.parent / "checkpoints" / "demo-base"),
                "--json", str(tmp_path / "merge.json")]  # fmt: skip
        assert main(argv) == 0
        report = json.loads((tmp_path / "merge.json").read_text())
        assert report["report"]["indexed"] == 9 and report["failed_parts"] == []
        assert report["report"]["reasons"] == {"missing": 1} and report["items"] == 9
        assert main([*argv, "--merge-only"]) == 0
        assert "9/10 videos indexed" in capsys.readouterr().out
    finally:
        (tmp_path / "video20.mp4").rename(tiny_world / "videos" / "video20.mp4")
    with pytest.raises(SystemExit):
        main([*argv, "--windows", "10,30"])


def test_a_rank_reads_only_the_shards_of_its_own_share(corpus, tmp_path, monkeypatch):
    import emcl.data.gallery.extract as extract_mod
    import emcl.data.gallery.shards as gallery_mod

    extract_part(corpus, TinyEncoder(), tmp_path / "cache", Rank(0, 2), **OPTIONS)
    loaded: list[str] = []
    real = gallery_mod.cached_rows

    def spy(entry, frames, video):
        loaded.append(entry.video_id)
        return real(entry, frames, video)

    for module in (gallery_mod, extract_mod):  # the shards read and the shards written
        monkeypatch.setattr(module, "cached_rows", spy)
    extract_part(corpus, TinyEncoder(), tmp_path / "cache", Rank(1, 2), **OPTIONS)
    mine = {r.video_id for r in shard_records(corpus, 1, 2)}
    assert loaded and set(loaded) <= mine  # rank 0's features were never read
    loaded.clear()
    merge_parts(corpus, TinyEncoder(), tmp_path / "cache", 2, **OPTIONS)
    assert set(loaded) == {r.video_id for r in corpus}  # the merge reads everything


def test_the_merge_compacts_many_part_shards(corpus, tmp_path, monkeypatch):
    import emcl.data.gallery.shards as gallery_mod

    monkeypatch.setattr(gallery_mod, "COMPACT_AFTER", 2)
    for rank in range(2):  # batches of 2: several shards per part, none compacted
        extract_part(corpus, TinyEncoder(), tmp_path / "cache", Rank(rank, 2), **OPTIONS)
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(list(folder.glob("shard-*.safetensors"))) > 2
    result = merge_parts(corpus, TinyEncoder(), tmp_path / "cache", **OPTIONS)
    assert result.ok and len(list(folder.glob("shard-*.safetensors"))) == 1
    enc = TinyEncoder()
    again = build_gallery(corpus, enc, tmp_path / "cache", **OPTIONS)
    assert enc.encoded == 0 and torch.equal(again.video_embeddings, result.gallery.video_embeddings)
