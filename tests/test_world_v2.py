"""World v2: determinism, the layout, captions vs ground truth, the ambiguity ceiling, the
pretraining corpus, and a test-only world growing into the full one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from emcl.data.datasets import read_msrvtt
from emcl.data.world import LEXICON, build_world, caption_words, ensure_world, world_is_complete
from emcl.data.world import v2 as w
from emcl.data.world.pretrain import (
    CLIP_STREAM,
    PRETRAIN_STREAM,
    pretrain_clip,
    pretrain_clip_chunks,
    pretrain_pairs,
    twin_spec,
)
from emcl.video.decoder import load_frames
from emcl.video.sampling import uniform_indices


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("v2")
    build_world(out, n_train=12, n_test=8, seed=3, workers=1, version=2)
    return out


def test_same_seed_same_bytes_and_the_msrvtt_layout(world, tmp_path):
    again = tmp_path / "again"
    build_world(again, n_train=12, n_test=8, seed=3, workers=1, version=2)
    files = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    assert len(files) == 20 + 7  # clips + 6 annotation files + world.json
    for name in files:
        assert (world / name).read_bytes() == (again / name).read_bytes(), name
    assert world_is_complete(world, 12, 8, 3, version=2)
    assert not world_is_complete(world, 12, 8, 3)  # a v1 request is not served by a v2 world
    test = read_msrvtt(world, "test")
    assert len(test) == 8 and all(len(r.captions) == 1 and r.path.is_file() for r in test)
    assert len(read_msrvtt(world, "trainval")) == 12


def test_the_test_split_reads_each_clips_whole_first_caption(world):
    """Captions with commas ("a ..., then b ...") are quoted in the CSV, not cut at the comma."""
    specs = {s.video_id: s for s in w.make_specs(12, 8, 3)}
    test = read_msrvtt(world, "test")
    assert [r.captions[0] for r in test] == [w.captions(specs[r.video_id], 3)[0][0] for r in test]
    assert sum("," in r.captions[0] for r in test) >= 2  # commas present, and quoted


def test_every_caption_states_facts_its_clip_shows_and_names_only_those(world):
    facts = json.loads((world / "caption_facts.json").read_text())
    clips = json.loads((world / "frame_concepts.json").read_text())["clips"]
    data = json.loads((world / "MSRVTT_data.json").read_text())
    captions: dict[str, list[str]] = {}
    for s in data["sentences"]:
        captions.setdefault(s["video_id"], []).append(s["caption"])
    for vid, clip in clips.items():
        spec = w.make_spec(3, int(vid[5:]), vid, clip["spec"]["split"])
        assert json.loads(json.dumps(dataclasses.asdict(spec))) == clip["spec"]
        assert len(captions[vid]) == len(facts[vid]) == 6
        for caption, stated in zip(captions[vid], facts[vid], strict=True):
            assert w.matches(stated, spec)
            named = {LEXICON[word] for word in caption_words(caption) if word in LEXICON}
            expected = set()
            for color, shape, size, _count, motion in stated:
                expected |= {f"color:{color}", f"shape:{shape}", f"motion:{motion}"}
                expected |= {f"size:{size}"} if size else set()
            # every stated fact is named (count words are optional: "a" names none)
            assert expected <= named, caption
            shown = set().union(*clip["concepts"])
            assert {c for c in named if not c.startswith("event:")} <= shown, caption


def test_clips_have_distractors_textures_camera_motion_and_partial_captions():
    specs = w.make_specs(200, 0, seed=0)
    assert {len(s.events) for s in specs} == {1, 2, 3}
    assert {len(s.distractors) for s in specs} == {0, 1, 2}
    assert {s.texture for s in specs} == set(w.TEXTURES)
    assert any(s.camera != (0.0, 0.0) for s in specs) and any(s.scroll != (0.0, 0.0) for s in specs)
    partial = complete = 0
    for s in specs:
        for _, stated in w.captions(s):
            partial += len(stated) < len(s.events)
            complete += len(stated) == len(s.events) > 1
    assert partial > 100 and complete > 100


def test_ground_truth_follows_the_events_and_the_pixels(world):
    clips = json.loads((world / "frame_concepts.json").read_text())["clips"]
    for vid, clip in list(clips.items())[:4]:
        spec = w.make_spec(3, int(vid[5:]), vid, clip["spec"]["split"])
        indices = uniform_indices(spec.num_frames, 12)
        assert clip["indices"] == indices
        for i, frame in enumerate(indices):
            e = next(e for e in spec.events if e.start <= frame < e.end)
            assert clip["event"][i] == spec.events.index(e)
            assert {f"color:{e.color}", f"shape:{e.shape}", f"motion:{e.motion}",
                    f"count:{e.count}"} <= set(clip["concepts"][i])  # fmt: skip
            assert {f"color:{d.color}" for d in spec.distractors} <= set(clip["distractors"][i])
        decoded = load_frames(world / "videos" / f"{vid}.mp4", 12)
        rendered = np.stack([w.render_frame(spec, f) for f in indices])
        error = np.abs(decoded.astype(int) - rendered.astype(int)).mean()
        assert error < 4.0, (vid, error)  # H.264 at crf 20 on these pictures


def test_background_moves_with_the_camera_and_the_clip_canvas_is_exact():
    spec = next(s for s in w.make_specs(50, 0, 1) if s.camera != (0.0, 0.0) and s.scroll == (0, 0))
    first, last = w.background(spec, 0), w.background(spec, spec.num_frames - 1)
    assert not np.array_equal(first, last)
    for f in (0, spec.num_frames // 2, spec.num_frames - 1):
        assert np.array_equal(w.render_frame(spec, f), w.render_frame(spec, f, whole_clip=False))


def _ceiling_reference(specs, facts) -> float:
    """Brute force: every caption against every clip, order-preserving subsequence matching."""

    def shows(stated, spec):
        events = [e.fact() for e in spec.events]

        def rec(i, j):
            if i == len(stated):
                return True
            return any(
                all(a is None or a == b for a, b in zip(stated[i], events[k], strict=True))
                and rec(i + 1, k + 1)
                for k in range(j, len(events))
            )

        return rec(0, 0)

    return 100 * np.mean([1 / sum(shows(f, s) for s in specs) for f in facts])


def test_ambiguity_ceiling_against_a_brute_force_reference():
    specs = w.make_specs(0, 150, seed=2)
    facts = [w.captions(s, 2)[0][1] for s in specs]
    assert w.ambiguity_ceiling(specs, facts) == pytest.approx(_ceiling_reference(specs, facts))
    assert w.test_ceiling(specs, 2) == pytest.approx(_ceiling_reference(specs, facts))
    twin = [specs[0], dataclasses.replace(specs[0], video_id="twin")]
    assert w.ambiguity_ceiling(twin, [facts[0], facts[0]]) == pytest.approx(50.0)


def test_world_json_records_the_ceiling(world):
    meta = json.loads((world / "world.json").read_text())
    specs = w.make_specs(12, 8, 3)
    assert meta["version"] == 2 and meta["ceiling_t2v_R1"] == round(w.test_ceiling(specs, 3), 2)


def test_pretraining_pairs_name_what_the_frame_shows_and_are_not_world_clips():
    frames, phrases = pretrain_pairs(0, 40, workers=1)
    assert frames.shape == (40, 128, 128, 3) and frames.dtype == np.uint8
    for i, phrase in enumerate(phrases):
        spec = w.make_spec(0, i, f"pretrain{i}", "pretrain", stream=PRETRAIN_STREAM)
        named = {LEXICON[word] for word in caption_words(phrase) if word in LEXICON}
        visible = [set(w.frame_concepts(spec, f)[0]) for f in range(spec.num_frames)]
        assert any(named <= v for v in visible), phrase
        assert not any(c.startswith("motion:") for c in named)
        world_spec = w.make_spec(0, i, f"video{i}", "test")
        assert world_spec.events != spec.events  # its own RNG stream
    again, phrases_again = pretrain_pairs(0, 40, workers=2)
    assert np.array_equal(frames, again) and phrases == phrases_again


def _clip_spec(index: int):
    pair = index // 2
    spec = w.make_spec(0, pair, f"pretrainclip{pair}", "pretrain", stream=CLIP_STREAM)
    twin, which = twin_spec(spec, np.random.default_rng([0, pair, w.VERSION, CLIP_STREAM, 5]))
    return (twin if index % 2 else spec), which


def test_motion_twins_differ_in_one_event_motion_and_their_captions_name_it():
    named_changed = 0
    for pair in range(30):
        (a, which), (b, _) = _clip_spec(2 * pair), _clip_spec(2 * pair + 1)
        diffs = [i for i, (x, y) in enumerate(zip(a.events, b.events, strict=True)) if x != y]
        assert diffs == [which]
        x, y = a.events[which], b.events[which]
        assert x.motion != y.motion
        assert (x.color, x.shape, x.size, x.count, x.start, x.end) == (
            y.color, y.shape, y.size, y.count, y.start, y.end)  # fmt: skip
        assert not (y.motion == "spin" and y.shape == "circle")
        assert {"grow": "small", "shrink": "large"}.get(y.motion, y.size) == y.size
        assert a.distractors == b.distractors and a.camera == b.camera  # same scene otherwise
        for index, spec in ((2 * pair, a), (2 * pair + 1, b)):
            frames, caption = pretrain_clip(0, index, 6)
            assert frames.shape == (6, 128, 128, 3) and frames.dtype == np.uint8
            motion = spec.events[which].motion
            words = {LEXICON.get(word) for word in caption_words(caption)}
            named_changed += f"motion:{motion}" in words
    assert named_changed == 60  # every caption names the changed event's motion


def test_clip_corpus_chunks_are_the_clips_in_order_whatever_the_workers():
    chunks = list(pretrain_clip_chunks(0, 4, 11, num_frames=3, workers=1, chunk=4))
    assert [first for first, _, _ in chunks] == [4, 8]
    frames = np.concatenate([c[1] for c in chunks])
    captions = [t for c in chunks for t in c[2]]
    for i in range(4, 11):
        alone, caption = pretrain_clip(0, i, 3)
        assert np.array_equal(frames[i - 4], alone) and captions[i - 4] == caption
    again = list(pretrain_clip_chunks(0, 4, 11, num_frames=3, workers=2, chunk=4))
    assert np.array_equal(np.concatenate([c[1] for c in again]), frames)
    world_spec = w.make_spec(0, 2, "video2", "test")
    assert world_spec.events != _clip_spec(4)[0].events  # its own RNG stream


def test_a_test_only_world_renders_a_quarter_and_grows_into_the_full_one(world, tmp_path):
    part = tmp_path / "part"
    meta = build_world(part, n_train=12, n_test=8, seed=3, workers=1, version=2, splits=("test",))
    assert meta["splits"] == ["test"]
    rendered = sorted(p.name for p in (part / "videos").iterdir())
    tests = [s.video_id for s in w.make_specs(12, 8, 3) if s.split == "test"]
    assert rendered == sorted(f"{v}.mp4" for v in tests)
    assert world_is_complete(part, 12, 8, 3, version=2, splits=("test",))
    assert not world_is_complete(part, 12, 8, 3, version=2)  # training videos missing
    kept = {p.name: p.stat().st_mtime_ns for p in (part / "videos").iterdir()}
    ensure_world(part, 12, 8, 3, version=2)  # training needs every split: renders the rest
    assert world_is_complete(part, 12, 8, 3, version=2)
    assert all((part / "videos" / n).stat().st_mtime_ns == t for n, t in kept.items())
    full = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    grown = sorted(p.relative_to(part) for p in part.rglob("*") if p.is_file())
    assert grown == full
    for rel in full:
        assert (part / rel).read_bytes() == (world / rel).read_bytes(), rel
    other = build_world(part, n_train=12, n_test=8, seed=4, workers=1, version=2, splits=("test",))
    assert other["splits"] == ["test"]  # another seed: nothing of the old world is reused
    assert (part / "videos" / "video12.mp4").read_bytes() != (
        world / "videos" / "video12.mp4"
    ).read_bytes()
