"""World v1: layout, determinism, captions, codec, and ground truth vs captions and pixels."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from emcl.cli.world import main
from emcl.data.datasets import read_msrvtt
from emcl.data.world import (
    COLORS,
    LEXICON,
    MOTIONS,
    SHAPES,
    build_world,
    caption_words,
    world_is_complete,
)
from emcl.data.world.v1 import make_specs
from emcl.video.decoder import load_frames
from emcl.video.sampling import uniform_indices

ANNOTATIONS = (
    "MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv",
    "frame_concepts.json", "lexicon.json",
)  # fmt: skip


def _captions(world: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in json.loads((world / "MSRVTT_data.json").read_text())["sentences"]:
        out.setdefault(s["video_id"], []).append(s["caption"])
    return out


def test_layout(tiny_world):
    for name in (*ANNOTATIONS, "world.json"):
        assert (tiny_world / name).is_file(), name
    train = (tiny_world / "MSRVTT_train.9k.csv").read_text().split()
    assert train == ["video_id"] + [f"video{i}" for i in range(20)]
    with open(tiny_world / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "vid_key", "video_id", "sentence"]
    assert [r["video_id"] for r in rows] == [f"video{i}" for i in range(20, 30)]
    assert rows[0]["key"] == "ret0" and rows[0]["vid_key"] == "msr20"
    caps = _captions(tiny_world)
    assert all(r["sentence"] in caps[r["video_id"]] for r in rows)  # one of its paraphrases
    videos = sorted(p.name for p in (tiny_world / "videos").iterdir())
    assert videos == sorted(f"video{i}.mp4" for i in range(30))  # no temp files left
    assert world_is_complete(tiny_world, 20, 10, 0) and not world_is_complete(tiny_world, 20, 10, 1)


def test_same_seed_same_bytes_other_seed_differs(tiny_world, tmp_path):
    again = tmp_path / "again"
    build_world(again, n_train=20, n_test=10, seed=0, workers=2)  # worker count must not matter
    for name in ANNOTATIONS:
        assert (again / name).read_bytes() == (tiny_world / name).read_bytes(), name
    for i in (0, 25):
        v = f"videos/video{i}.mp4"
        assert (again / v).read_bytes() == (tiny_world / v).read_bytes()
    other = tmp_path / "other"
    build_world(other, n_train=20, n_test=10, seed=1, workers=1)
    assert (other / "MSRVTT_data.json").read_bytes() != (
        tiny_world / "MSRVTT_data.json"
    ).read_bytes()


def test_captions_are_many_varied_and_name_the_clip(tiny_world):
    caps = _captions(tiny_world)
    specs = json.loads((tiny_world / "frame_concepts.json").read_text())["clips"]
    assert len(caps) == 30
    for vid, cs in caps.items():
        assert len(cs) >= 5 and len(set(cs)) == len(cs), vid
        spec = specs[vid]["spec"]
        for c in cs:  # colour, shape and motion are always named
            concepts = {LEXICON[w] for w in caption_words(c) if w in LEXICON}
            assert {f"color:{spec['color']}", f"shape:{spec['shape']}"} <= concepts, c
            assert f"motion:{spec['motion']}" in concepts, c
    all_caps = [c for cs in caps.values() for c in cs]
    words = Counter(w for c in all_caps for w in caption_words(c))
    assert len({c.split()[0] for c in all_caps}) >= 4  # several templates / word orders
    assert len([w for w in words if LEXICON.get(w, "").startswith("shape:")]) > len(
        {s["spec"]["shape"] for s in specs.values()}
    )  # synonyms in use
    assert any(" then " in c for c in all_caps)


def test_every_caption_word_is_visible_in_some_frame(tiny_world):
    fc = json.loads((tiny_world / "frame_concepts.json").read_text())
    assert fc["sampler"]["name"] == "uniform" and fc["sampler"]["num_frames"] == 12
    caps = _captions(tiny_world)
    linked = 0
    for vid, clip in fc["clips"].items():
        assert clip["indices"] == uniform_indices(clip["num_frames"], 12)
        assert len(clip["concepts"]) == 12
        visible = set().union(*map(set, clip["concepts"]))
        for c in caps[vid]:
            for w in caption_words(c):
                if w in LEXICON:
                    assert LEXICON[w] in visible, (vid, c, w)
                    linked += 1
    assert linked > 30 * 5 * 3
    lexicon = json.loads((tiny_world / "lexicon.json").read_text())
    assert lexicon == LEXICON


def test_ground_truth_matches_the_pixels(tiny_world):
    """Each sampled frame shows exactly the colours its ground truth lists."""
    fc = json.loads((tiny_world / "frame_concepts.json").read_text())["clips"]
    palette = {k: np.array(v, np.float32) for k, v in COLORS.items()}
    for i in range(20, 30):
        vid = f"video{i}"
        frames = load_frames(tiny_world / "videos" / f"{vid}.mp4", 12).astype(np.float32)
        assert frames.shape == (12, 128, 128, 3)
        for t, concepts in enumerate(fc[vid]["concepts"]):
            for name, rgb in palette.items():
                n = int((np.linalg.norm(frames[t] - rgb, axis=-1) < 45).sum())
                assert (n >= 12) == (f"color:{name}" in concepts), (vid, t, name, n, concepts)


def test_codec_and_container(tiny_world):
    fc = json.loads((tiny_world / "frame_concepts.json").read_text())["clips"]
    for i in (0, 7, 29):
        path = tiny_world / "videos" / f"video{i}.mp4"
        with av.open(str(path)) as c:
            (s,) = c.streams
            assert c.format.name.startswith("mov,mp4")
            assert (s.codec_context.name, s.codec_context.format.name) == ("h264", "yuv420p")
            assert min(s.codec_context.width, s.codec_context.height) >= 112
            assert 2.0 <= c.duration / 1e6 <= 4.1
            assert s.frames == fc[f"video{i}"]["num_frames"]
        data = path.read_bytes()
        assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while loading


def test_world_has_the_promised_variety():
    specs = make_specs(300, 100, seed=0)
    assert len({s.key() for s in specs}) == 400  # no two clips described identically
    assert {s.color for s in specs} == set(COLORS) and len(COLORS) >= 6
    assert {s.shape for s in specs} == set(SHAPES) and len(SHAPES) >= 5
    assert {s.motion for s in specs} == set(MOTIONS) and len(MOTIONS) >= 6
    assert {s.count for s in specs} == {1, 2, 3}
    assert {s.size for s in specs} == {"small", "large"}
    assert {s.event for s in specs} == {"none", "appear", "change", "disappear"}
    assert all(24 <= s.num_frames <= 48 for s in specs)  # 2-4 s at 12 fps
    assert [s.split for s in specs].count("test") == 100


def test_lexicon_is_unambiguous():
    kinds = {c.split(":")[0] for c in LEXICON.values()}
    assert kinds == {"color", "shape", "size", "count", "motion", "event"}
    for word in ("then", "a", "the", "moves", "turns", "and"):
        assert word not in LEXICON


def test_cli(tmp_path, capsys):
    main(
        [
            "--out",
            str(tmp_path / "w"),
            "--train",
            "3",
            "--test",
            "2",
            "--seed",
            "5",
            "--workers",
            "1",
        ]
    )
    assert "3 train + 2 test" in capsys.readouterr().out
    assert len(read_msrvtt(tmp_path / "w", "test")) == 2


@pytest.mark.slow
def test_default_world_within_budget(tmp_path):
    t0 = time.perf_counter()
    build_world(tmp_path / "w")  # 2000 + 1000 clips, all cores
    assert time.perf_counter() - t0 <= 120
    assert len(list((tmp_path / "w" / "videos").glob("*.mp4"))) == 3000
