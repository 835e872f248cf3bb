"""The gallery cache: reuse, resume, invalidation, corruption, skipped files, add_videos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import emcl.data.gallery as gallery_mod
import emcl.data.gallery.extract as extract_mod
import emcl.data.gallery.shards as shards_mod
from emcl.data.datasets import VideoRecord
from emcl.data.gallery import add_videos, build_gallery, cache_key, load_gallery
from emcl.data.gallery.build import cache_folder
from emcl.data.gallery.settings import gallery_settings
from emcl.video.decoder import load_frames
from emcl.video.sampling import center_crop


class TinyEncoder:
    """Deterministic stand-in for the model: 4x4 average colours through a fixed projection."""

    image_size = 32

    def __init__(self, fingerprint: str = "tiny-v1", fail_after: int | None = None):
        self.fingerprint = fingerprint
        g = torch.Generator().manual_seed(0)
        self.proj, self.bias = torch.randn(48, 16, generator=g), torch.randn(16, generator=g)
        self.seen: list[int] = []  # batch sizes, in order
        self.fail_after = fail_after

    def encode_videos(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        if self.fail_after is not None and sum(self.seen) >= self.fail_after:
            raise KeyboardInterrupt  # a user pressing Ctrl-C mid-run
        self.seen.append(len(frames))
        x = torch.from_numpy(frames).float() / 255  # [B, T, H, W, 3]
        b, t, h, w, _ = x.shape
        x = F.adaptive_avg_pool2d(x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w), 4)
        f = F.normalize(x.reshape(b, t, 48) @ self.proj + self.bias, dim=-1)  # [B, T, 16]
        return {"frames": f, "video": F.normalize(f.mean(1), dim=-1)}

    @property
    def encoded(self) -> int:
        return sum(self.seen)


@pytest.fixture
def corpus(tmp_path, make_clip) -> list[VideoRecord]:
    """Ten good clips of different lengths plus three bad files, in one list."""
    recs = [
        VideoRecord(f"v{i}", make_clip(f"v{i}.mp4", n=8 + 3 * i), [f"clip {i}"], "test")
        for i in range(10)
    ]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 50)
    half = tmp_path / "half.mp4"
    half.write_bytes(make_clip("src.mp4", n=30).read_bytes()[:1500])
    bad = [VideoRecord("empty", empty), VideoRecord("text", text), VideoRecord("half", half)]
    return recs[:4] + bad + recs[4:] + [VideoRecord("gone", tmp_path / "gone.mp4")]


def build(records, encoder, cache, **kw):
    return build_gallery(records, encoder, cache, num_frames=4, batch_size=3, progress=False, **kw)


def test_corrupt_files_are_skipped_and_reported(corpus, tmp_path):
    enc = TinyEncoder()
    g = build(corpus, enc, tmp_path / "cache")
    assert g.video_ids == [f"v{i}" for i in range(10)]
    assert g.frame_embeddings.shape == (10, 4, 16) and g.frame_embeddings.dtype == torch.float16
    assert g.video_embeddings.shape == (10, 16) and g.video_embeddings.dtype == torch.float16
    assert g.records[0].captions == ["clip 0"]
    r = g.report
    assert (r.total, r.extracted, r.reused, enc.encoded) == (14, 10, 0, 10)
    assert {s["video_id"]: s["reason"] for s in r.skipped} == {
        "empty": "empty", "text": "not_a_video", "half": "truncated", "gone": "missing",
    }  # fmt: skip
    saved = json.loads((g.cache_dir / "report.json").read_text())
    assert saved["reasons"] == {"empty": 1, "missing": 1, "not_a_video": 1, "truncated": 1}
    text = (g.cache_dir / "report.txt").read_text()
    assert "10/14 videos indexed" in text and "half  [truncated]" in text
    # features match a direct encode of the same frames
    direct = enc.encode_videos(np.stack([_frames(corpus[0].path)]))["video"][0]
    assert torch.allclose(g.video_embeddings[0].float(), direct, atol=2e-3)


def _frames(path: Path) -> np.ndarray:
    return center_crop(load_frames(path, 4, size=32), 32)


def test_reload_decodes_and_encodes_nothing(corpus, tmp_path, monkeypatch):
    g1 = build(corpus, TinyEncoder(), tmp_path / "cache")

    def no_decoding(*a, **kw):
        raise AssertionError("decoder used on a warm cache")

    monkeypatch.setattr(extract_mod, "DecoderPool", no_decoding)
    enc = TinyEncoder()
    g2 = build(corpus, enc, tmp_path / "cache")
    assert enc.encoded == 0 and g2.report.reused == 10 and len(g2.report.skipped) == 4
    assert g2.video_ids == g1.video_ids
    assert torch.equal(g2.frame_embeddings, g1.frame_embeddings)
    g3 = load_gallery(tmp_path / "cache", "tiny-v1", num_frames=4, size=32)
    assert sorted(g3.video_ids) == sorted(g1.video_ids)
    i = g3.index("v3")
    assert torch.equal(g3.video_embeddings[i], g1.video_embeddings[3])
    assert g3.records[i].captions == ["clip 3"]


def test_resume_after_interruption_recomputes_nothing_done(corpus, tmp_path):
    first = TinyEncoder(fail_after=6)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, first, tmp_path / "cache")
    done = first.encoded  # every finished batch was written as a shard
    assert 0 < done < 10
    (folder,) = (tmp_path / "cache").iterdir()
    assert not list(folder.glob(".*tmp"))  # no half-written files
    enc = TinyEncoder()
    g = build(corpus, enc, tmp_path / "cache")
    assert enc.encoded == 10 - done and g.report.extracted == 10 - done
    assert g.report.reused == done
    fresh = build(corpus, TinyEncoder(), tmp_path / "fresh")
    assert torch.equal(g.video_embeddings, fresh.video_embeddings)


def test_touched_file_is_reextracted(corpus, tmp_path, make_clip):
    build(corpus, TinyEncoder(), tmp_path / "cache")
    target = corpus[1].path
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    enc = TinyEncoder()
    g = build(corpus, enc, tmp_path / "cache")
    assert enc.encoded == 1 and g.report.extracted == 1
    make_clip("half.mp4", n=9)  # the broken file is fixed: indexed now
    enc = TinyEncoder()
    g = build(corpus, enc, tmp_path / "cache")
    assert enc.encoded == 1 and "half" in g.video_ids
    assert "half" not in {s["video_id"] for s in g.report.skipped}


def test_other_model_or_sampler_reextracts(corpus, tmp_path):
    build(corpus, TinyEncoder(), tmp_path / "cache")
    enc = TinyEncoder("tiny-v2")
    build(corpus, enc, tmp_path / "cache")
    assert enc.encoded == 10
    enc = TinyEncoder()
    build_gallery(corpus, enc, tmp_path / "cache", num_frames=6, batch_size=5, progress=False)
    assert enc.encoded == 10
    assert len(list((tmp_path / "cache").iterdir())) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_cache_is_detected_and_rebuilt(corpus, tmp_path, damage):
    g1 = build(corpus, TinyEncoder(), tmp_path / "cache")
    shards = sorted(g1.cache_dir.glob("shard-*.safetensors"))
    victim = max(shards, key=lambda s: s.stat().st_size)  # one holding features
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-5] ^= 0xFF  # inside the tensor bytes: only the checksum notices
    victim.write_bytes(bytes(data))
    enc = TinyEncoder()
    g2 = build(corpus, enc, tmp_path / "cache")
    assert len(g2.report.corrupt_shards) == 1 and victim.name in g2.report.corrupt_shards[0]
    assert 1 <= enc.encoded <= 3 and not victim.exists()
    assert torch.equal(g2.video_embeddings, g1.video_embeddings)
    assert "corrupt cache shard" in (g2.cache_dir / "report.txt").read_text()


def test_add_videos_returns_a_new_gallery(corpus, tmp_path, make_clip):
    enc = TinyEncoder()
    g = build(corpus[:4], enc, tmp_path / "cache")
    before = g.video_embeddings.clone()
    new = [VideoRecord("up1", make_clip("up1.mp4", n=12)), VideoRecord("v0", corpus[7].path)]
    g2 = add_videos(g, new, enc)
    assert g.video_ids == ["v0", "v1", "v2", "v3"] and torch.equal(g.video_embeddings, before)
    assert g2.video_ids == ["v1", "v2", "v3", "up1", "v0"]  # v0 replaced by the new file
    assert torch.equal(g2.video_embeddings[0], g.video_embeddings[1])
    assert not torch.equal(g2.video_embeddings[4], g.video_embeddings[0])
    with pytest.raises(ValueError, match="fingerprint"):
        add_videos(g, new, TinyEncoder("other"))


def test_many_shards_are_compacted(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(shards_mod, "COMPACT_AFTER", 2)
    g1 = build(corpus, TinyEncoder(), tmp_path / "cache")  # 4+ shards of 3 entries
    assert len(list(g1.cache_dir.glob("shard-*.safetensors"))) == 1
    enc = TinyEncoder()
    g2 = build(corpus, enc, tmp_path / "cache")
    assert enc.encoded == 0 and g2.video_ids == g1.video_ids
    assert torch.equal(g2.frame_embeddings, g1.frame_embeddings)
    assert {s["video_id"] for s in g2.report.skipped} == {"empty", "text", "half", "gone"}


def free_box(size: int) -> bytes:
    """An MP4 ``free`` box of ``size`` bytes: padding every reader skips."""
    return size.to_bytes(4, "big") + b"free" + bytes(size - 8)


@pytest.mark.parametrize("where", ["start", "middle"])
def test_same_size_and_mtime_but_new_content_is_reextracted(tmp_path, make_clip, where):
    """A file replaced by other content of the same size and modification time (a copy
    tool preserving mtime): the content hash differs, so it is indexed again."""
    path = make_clip("a.mp4", n=12)
    if where == "middle":  # a large file: the change lies beyond the first and last MiB
        path.write_bytes(path.read_bytes() + free_box(3 * 2**20))
    original = path.read_bytes()
    records = [VideoRecord("a", path)]
    g1 = build(records, TinyEncoder(), tmp_path / "cache")
    assert g1.video_ids == ["a"]
    st = path.stat()
    if where == "start":  # a different, smaller clip padded to the same size
        other = make_clip("b.mp4", n=6, size=(64, 80)).read_bytes()
        replacement = other + free_box(len(original) - len(other))
    else:  # one byte changed inside the padding, at one of the hash's sampled pieces
        data = bytearray(original)
        middle = len(original) - 2 * gallery_mod.HASH_HEAD
        data[gallery_mod.HASH_HEAD + middle * 5 // gallery_mod.HASH_SAMPLES + 7] ^= 0xFF
        replacement = bytes(data)
    assert len(replacement) == len(original) and replacement != original
    path.write_bytes(replacement)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    enc = TinyEncoder()
    g2 = build(records, enc, tmp_path / "cache")
    assert enc.encoded == 1 and g2.report.extracted == 1 and g2.report.reused == 0
    if where == "start":
        assert not torch.equal(g2.video_embeddings, g1.video_embeddings)
    enc = TinyEncoder()
    build(records, enc, tmp_path / "cache")  # and reused after that
    assert enc.encoded == 0


class PrecisionEncoder(TinyEncoder):
    """The stand-in encoder computing in a named precision (as emcl/model/encoder.py says)."""

    def __init__(self, precision: str):
        super().__init__()
        self.precision = precision


def test_precision_keys_the_cache_and_auto_keeps_the_key_it_always_had(corpus, tmp_path):
    plain = gallery_settings(num_frames=4, size=32, backend="auto", windows=None)
    assert plain == gallery_settings(
        num_frames=4, size=32, backend="auto", windows=None, precision="auto"
    )
    assert "precision" not in plain  # the key of caches made before the setting existed
    fp32 = gallery_settings(num_frames=4, size=32, backend="auto", windows=None, precision="fp32")
    assert fp32 == {**plain, "precision": "fp32"}
    assert cache_key("m", fp32) != cache_key("m", plain)

    g_auto = build(corpus, TinyEncoder(), tmp_path / "cache")
    assert build(corpus, PrecisionEncoder("auto"), tmp_path / "cache").report.reused == 10
    enc = PrecisionEncoder("fp32")
    g_fp32 = build(corpus, enc, tmp_path / "cache")  # not a bf16/auto cache: extracted again
    assert enc.encoded == 10 and g_fp32.cache_dir != g_auto.cache_dir
    assert (
        json.loads((g_fp32.cache_dir / "manifest.json").read_text())["settings"]["precision"]
        == "fp32"
    )
    assert cache_folder(tmp_path / "cache", enc, num_frames=4) == g_fp32.cache_dir
    loaded = load_gallery(tmp_path / "cache", "tiny-v1", num_frames=4, size=32, precision="fp32")
    assert loaded.cache_dir == g_fp32.cache_dir and sorted(loaded.video_ids) == g_fp32.video_ids
    with pytest.raises(ValueError, match="precision differs"):
        add_videos(g_auto, corpus[:1], enc)
    with pytest.raises(ValueError, match="precision must be one of"):
        build(corpus, PrecisionEncoder("fp64"), tmp_path / "cache")


def test_extraction_decodes_a_batch_ahead_of_a_gpu_encoder(corpus, tmp_path, monkeypatch):
    asked: list[tuple[int, int | None]] = []
    real_imap = extract_mod.DecoderPool.imap

    def spy(self, *args, **kwargs):
        asked.append((self.max_workers, kwargs.get("ahead")))
        return real_imap(self, *args, **kwargs)

    monkeypatch.setattr(extract_mod.DecoderPool, "imap", spy)
    monkeypatch.setattr(extract_mod, "default_workers", lambda: 3)  # one child per CPU
    on_gpu = TinyEncoder()
    on_gpu.device = torch.device("cuda")  # the attribute only: nothing runs there
    g = build(corpus, on_gpu, tmp_path / "gpu")
    cpu = TinyEncoder()
    cpu.device = torch.device("cpu")
    build(corpus, cpu, tmp_path / "cpu")
    assert asked == [(3, 3 + 2 * 3), (3, None)]  # a batch of 3 plus two per child; the default
    assert g.video_ids == [f"v{i}" for i in range(10)]
