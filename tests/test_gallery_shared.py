"""build_galleries: several encoders over the same clips decode each clip once and leave each
encoder exactly the gallery and cache that build_gallery leaves it (issue 18: first start)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from test_gallery import TinyEncoder, corpus  # noqa: F401  (corpus is a fixture)

import emcl.data.gallery.extract as extract_mod
from emcl.data.gallery import build_galleries, build_gallery

OPTIONS = {"num_frames": 4, "batch_size": 3, "progress": False}


class OtherEncoder(TinyEncoder):
    """A second model: its own fingerprint and projection (so its features differ)."""

    def __init__(self, fingerprint: str = "other-v1", image_size: int = 32):
        super().__init__(fingerprint)
        g = torch.Generator().manual_seed(1)
        self.proj, self.bias = torch.randn(48, 16, generator=g), torch.randn(16, generator=g)
        self.image_size = image_size


@pytest.fixture
def decodes(monkeypatch) -> Counter:
    """How often each file was decoded."""
    seen: Counter = Counter()
    real = extract_mod.DecoderPool.decode

    def counting(self, path, *args, **kwargs):
        seen[str(path)] += 1
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(extract_mod.DecoderPool, "decode", counting)
    return seen


def assert_same(got, want, reports: bool = True) -> None:
    assert got.video_ids == want.video_ids and got.fingerprint == want.fingerprint
    assert torch.equal(got.frame_embeddings, want.frame_embeddings)
    assert torch.equal(got.video_embeddings, want.video_embeddings)
    assert got.cache_dir.name == want.cache_dir.name  # the same cache key
    assert got.report.skipped == want.report.skipped
    for field in ("total", "extracted", "reused") if reports else ():
        assert getattr(got.report, field) == getattr(want.report, field), field


def test_two_encoders_decode_each_clip_once_and_equal_separate_builds(
    corpus,  # noqa: F811
    tmp_path,
    decodes,
):
    shared = build_galleries(corpus, [TinyEncoder(), OtherEncoder()], tmp_path / "one", **OPTIONS)
    assert decodes and max(decodes.values()) == 1  # every readable file decoded once
    decodes.clear()
    encoders = (TinyEncoder(), OtherEncoder())
    alone = [build_gallery(corpus, e, tmp_path / "two", **OPTIONS) for e in encoders]
    assert max(decodes.values()) == 2  # the separate builds decode everything twice
    for got, want in zip(shared, alone, strict=True):
        assert_same(got, want)
    assert not torch.equal(shared[0].video_embeddings, shared[1].video_embeddings)


def test_a_warm_encoder_decodes_nothing_and_the_cache_reads_back(corpus, tmp_path, decodes):  # noqa: F811
    cache = tmp_path / "cache"
    warm = build_gallery(corpus, TinyEncoder(), cache, **OPTIONS)
    decodes.clear()
    first, second = TinyEncoder(), OtherEncoder()
    got = build_galleries(corpus, [first, second], cache, **OPTIONS)
    assert first.encoded == 0 and second.encoded == 10  # only the cold encoder's clips
    assert max(decodes.values()) == 1
    assert_same(got[0], build_gallery(corpus, TinyEncoder(), cache, **OPTIONS))
    assert torch.equal(got[0].video_embeddings, warm.video_embeddings)
    # The shards build_galleries wrote are build_gallery's cache: a reload decodes nothing.
    decodes.clear()
    again = OtherEncoder()
    assert_same(build_gallery(corpus, again, cache, **OPTIONS), got[1], reports=False)
    assert again.encoded == 0 and not decodes


def test_report_counts_the_encodings_still_to_do(corpus, tmp_path):  # noqa: F811
    cache = tmp_path / "cache"
    build_gallery(corpus, TinyEncoder(), cache, **OPTIONS)  # one encoder warm: 0 to do for it
    heard: list[tuple[int, int]] = []
    build_galleries(
        corpus, [TinyEncoder(), OtherEncoder()], cache, report=lambda *a: heard.append(a), **OPTIONS
    )
    # Every file of the cold encoder (undecodable ones are stored too; a missing one is not).
    cold = sum(r.path.exists() for r in corpus)
    assert heard and all(total == cold for _, total in heard)
    done = [d for d, _ in heard]
    assert done == sorted(done) and done[-1] == cold and done[0] > 0


def test_encoders_of_different_frame_sizes_decode_in_their_own_passes(corpus, tmp_path):  # noqa: F811
    encoders = [TinyEncoder(), OtherEncoder("big-v1", image_size=48)]
    shared = build_galleries(corpus, encoders, tmp_path / "one", **OPTIONS)
    for got, encoder in zip(shared, encoders, strict=True):
        want = build_gallery(corpus, encoder, tmp_path / f"alone-{encoder.fingerprint}", **OPTIONS)
        assert_same(got, want)
    assert shared[1].settings["size"] != shared[0].settings["size"]


def test_each_encoder_samples_its_own_frame_count_by_default(corpus, tmp_path):  # noqa: F811
    encoders = [TinyEncoder(), OtherEncoder()]
    encoders[0].num_frames, encoders[1].num_frames = 4, 3
    shared = build_galleries(corpus, encoders, tmp_path / "one", batch_size=3, progress=False)
    for got, encoder in zip(shared, encoders, strict=True):
        want = build_gallery(
            corpus, encoder, tmp_path / "alone", num_frames=encoder.num_frames, batch_size=3,
            progress=False,
        )  # fmt: skip
        assert_same(got, want)
        assert got.frame_embeddings.shape[1] == encoder.num_frames


def test_no_encoders_and_no_records(tmp_path):
    assert build_galleries([], [TinyEncoder()], tmp_path, **OPTIONS)[0].video_ids == []
    assert build_galleries([], [], tmp_path, **OPTIONS) == []
    with pytest.raises(ValueError, match="share a cache folder"):
        build_galleries([], [TinyEncoder(), TinyEncoder()], tmp_path, **OPTIONS)
