"""Long videos as moments: window spans, window frames, the item table, best-window ranking,
and a generated 3-minute video whose segments show different content."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emcl.core.em import INFERENCE_MODULE_DEFAULTS
from emcl.data.datasets import VideoRecord
from emcl.data.gallery import build_gallery, load_gallery
from emcl.data.windows import (
    MAX_TIMELINE_FRAMES,
    WindowSpec,
    gallery_items,
    timeline_times,
    window_frames,
    window_spans,
)
from emcl.data.world import v1
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import ItemMap, rank_query
from emcl.video.writing import write_video

REPO = Path(__file__).resolve().parents[1]
SEGMENTS = [("red", "circle"), ("blue", "square"), ("green", "triangle"),
            ("yellow", "star"), ("purple", "cross"), ("orange", "diamond")]  # fmt: skip
SEGMENT_S = 30  # six segments: a 3-minute video
FPS = 2


# ---- pure parts --------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    duration=st.floats(0.5, 3600),
    length=st.floats(2, 60),
    stride_part=st.floats(0.1, 1),
    threshold_extra=st.floats(0, 60),
)
def test_windows_cover_a_long_video_and_skip_a_short_one(
    duration, length, stride_part, threshold_extra
):
    spec = WindowSpec(length + threshold_extra, length, length * stride_part)
    spans = window_spans(duration, spec)
    if duration <= spec.threshold_s:
        assert spans == []
        return
    starts = [s for s, _ in spans]
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert spans[-1][1] == pytest.approx(duration, abs=1e-3)  # the tail is covered
    assert all(e - s == pytest.approx(length, abs=2e-3) for s, e in spans)
    gaps = np.diff(starts)
    assert (gaps <= spec.stride_s + 2e-3).all()  # no gap between windows: overlap >= 0
    assert window_spans(duration, None) == [] and window_spans(None, spec) == []


def test_default_windows_of_a_three_minute_video():
    spans = window_spans(180.0, WindowSpec())
    assert len(spans) == 35 and spans[:2] == [(0.0, 10.0), (5.0, 15.0)]
    assert spans[-1] == (170.0, 180.0)
    assert window_spans(183.0, WindowSpec())[-1] == (173.0, 183.0)  # the tail window
    assert window_spans(30.0, WindowSpec()) == []  # not longer than the threshold


def test_window_frames_are_the_frames_shown_in_the_span():
    timeline = np.arange(181, dtype=np.uint8)[:, None, None, None].repeat(3, -1)  # frame k at k s
    times = timeline_times(181, 180.0)
    frames = window_frames(timeline, times, (60.0, 70.0), 12)
    shown = frames[:, 0, 0, 0].tolist()
    assert len(shown) == 12 and shown == sorted(shown)
    assert set(shown) == set(range(60, 70))  # every second of the window, two repeated
    capped = timeline_times(MAX_TIMELINE_FRAMES, 3 * 3600.0)  # the cap: spread over 3 h
    assert capped[0] == 0 and capped[-1] == 3 * 3600 and (np.diff(capped) > 0).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_best_per_video_matches_a_plain_loop(owners, rnd):
    items = ItemMap(torch.tensor(owners), tuple((float(i), i + 1.0) for i in range(len(owners))))
    kept = list(range(len(owners)))
    rnd.shuffle(kept)
    rows = torch.tensor(kept)  # index position -> item row (some rows left out below)
    rows = rows[: max(1, len(rows) - 2)]
    order = torch.tensor(rnd.sample(range(len(rows)), len(rows)))
    seen, expected = set(), []
    for position in order.tolist():
        video = owners[rows[position]]
        if video not in seen:
            seen.add(video)
            expected.append(position)
    assert items.best_per_video(order, rows).tolist() == expected


def test_items_map_rows_to_videos_and_spans():
    frames = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)
    videos = frames.mean(1)
    from emcl.data.windows import Windows

    windows = Windows(("b", "b"), ((0.0, 10.0), (5.0, 15.0)), -frames[:2], -videos[:2])
    items = gallery_items(["a", "b", "c"], frames, videos, windows)
    assert items.video_ids == ("a", "b", "b", "c") and items.video_rows.tolist() == [0, 1, 1, 2]
    assert items.spans == (None, (0.0, 10.0), (5.0, 15.0), None)
    assert torch.equal(items.video_embeddings, torch.stack([videos[0], -videos[0], -videos[1],
                                                            videos[2]]))  # fmt: skip
    assert items.has_windows and items.to_json(2) == {"video_id": "b", "span": [5.0, 15.0]}
    plain = gallery_items(["a", "c"], frames[[0, 2]], videos[[0, 2]], windows)
    assert not plain.has_windows and torch.equal(plain.video_embeddings, videos[[0, 2]])


# ---- a generated 3-minute video ----------------------------------------------------------------
def segment_specs() -> list[v1.ClipSpec]:
    base = v1.make_spec(0, 0, "long", "test")
    return [
        dataclasses.replace(
            base,
            color=c,
            shape=s,
            motion="still",
            event="none",
            count=1,
            size="large",
            path_params=(64.0, 64.0),
        )
        for c, s in SEGMENTS
    ]


@pytest.fixture(scope="module")
def long_gallery(tmp_path_factory):
    """A 3-minute video (six 30 s segments, one shape each) and three short demo clips,
    indexed with the committed demo model."""
    from emcl.model.encoder import Encoder

    root = tmp_path_factory.mktemp("long")
    path = root / "long.mp4"
    frames = [v1.render_frame(s, 0) for s in segment_specs() for _ in range(SEGMENT_S * FPS)]
    write_video(path, frames, FPS)
    records = [VideoRecord("long", path)]
    for i in range(3):
        spec = v1.make_spec(0, i + 1, f"short{i}", "test")
        v1.render_clip(spec, root / f"short{i}.mp4")
        records.append(VideoRecord(f"short{i}", root / f"short{i}.mp4"))
    encoder = Encoder.from_checkpoint(REPO / "checkpoints" / "demo-base", "cpu")
    options = {"num_frames": encoder.num_frames, "progress": False}
    gallery = build_gallery(records, encoder, root / "cache", **options)
    return {"gallery": gallery, "encoder": encoder, "records": records, "root": root,
            "options": options}  # fmt: skip


def test_a_long_video_is_indexed_as_windows(long_gallery):
    g = long_gallery["gallery"]
    assert g.video_ids == ["long", "short0", "short1", "short2"]
    assert len(g.windows) == 35 and set(g.windows.video_ids) == {"long"}
    assert g.windows.spans[0] == (0.0, 10.0) and g.windows.spans[-1] == (170.0, 180.0)
    items = g.items()
    assert len(items) == 35 + 3 and items.video_embeddings.shape == (
        38,
        g.video_embeddings.shape[1],
    )
    assert items.spans[35:] == (None, None, None)  # short clips stay whole
    assert items.video_rows.tolist() == [0] * 35 + [1, 2, 3]


def test_windows_come_back_from_the_cache(long_gallery, monkeypatch):
    import emcl.data.gallery.extract as gallery_mod

    def no_decoding(*a, **kw):
        raise AssertionError("decoder used on a warm cache")

    monkeypatch.setattr(gallery_mod, "DecoderPool", no_decoding)
    g = long_gallery["gallery"]
    again = build_gallery(long_gallery["records"], long_gallery["encoder"],
                          long_gallery["root"] / "cache", **long_gallery["options"])  # fmt: skip
    loaded = load_gallery(long_gallery["root"] / "cache", g.fingerprint,
                          num_frames=g.settings["num_frames"], size=g.settings["size"])  # fmt: skip
    for other in (again, loaded):
        assert other.windows.spans == g.windows.spans
        assert torch.equal(other.windows.video_embeddings, g.windows.video_embeddings)


def test_a_query_naming_a_segment_returns_a_window_of_it(long_gallery):
    """Each segment's caption finds the long video first, at a window that overlaps the segment
    by at least half; the window lies wholly inside the segment for five of the six (the shipped
    model ranks the window straddling the green triangle's end, 85-95 s, first for its query)."""
    g, encoder = long_gallery["gallery"], long_gallery["encoder"]
    items = g.items()
    index = GalleryIndex.build(items.video_ids, items.video_embeddings.float())
    inside = []
    for segment, spec in enumerate(segment_specs()):
        caption = v1.captions(spec)[0]
        query = encoder.encode_texts([caption])["sentence"][0]
        ranking = rank_query(query, index, INFERENCE_MODULE_DEFAULTS, top_k=10,
                             items=ItemMap(items.video_rows, items.spans))  # fmt: skip
        start, end = segment * SEGMENT_S, (segment + 1) * SEGMENT_S
        for column in (ranking.base, ranking.emcl):
            assert [h.video_id for h in column].count("long") == 1  # one hit per video
            assert len(column) == 4  # top_k clamped to the videos, not the 38 items
            hit = next(h for h in column if h.video_id == "long")
            assert hit.rank == 1 and hit.index == 0
            overlap = min(end, hit.span[1]) - max(start, hit.span[0])
            assert overlap >= (hit.span[1] - hit.span[0]) / 2, (caption, hit.span)
            assert hit.to_json()["span"] == list(hit.span)
            inside.append(start <= hit.span[0] and hit.span[1] <= end)
    assert sum(inside) >= 10, inside  # of 12: six segments, two columns


def test_search_subspaces_and_page_use_the_matched_window(long_gallery):
    from emcl.explorer.knobs import KnobError, Knobs
    from emcl.explorer.service import Explorer
    from ui.tabs import search as search_tab

    explorer = Explorer(long_gallery["encoder"], long_gallery["gallery"])
    knobs = Knobs(mode="inference", beta=4.0, k=7, iters=10, lam=0.1, init="reference", seed=42)
    segment = 1  # blue square, 30-60 s
    result = explorer.rank(v1.captions(segment_specs()[segment])[0], knobs)
    for column in (result.base, result.emcl):
        assert column[0].video_id == "long" and 30 <= column[0].span[0] < column[0].span[1] <= 60
    assert result.to_json()["emcl"][0]["span"] == list(result.emcl[0].span)
    assert result.gallery_size == 4 and len(result.emcl) == 4  # videos, not windows

    _, emcl_html, *_ = search_tab.render(explorer, result)
    start = f"{result.emcl[0].span[0]:g}"
    assert f"long.mp4#t={start}" in emcl_html  # the player starts at the window
    assert f"[{start}–" in emcl_html  # and the card says where

    span = result.emcl[0].span
    window = explorer.align("long", "a blue square", knobs, f"{span[0]:g}-{span[1]:g}")
    whole = explorer.align("long", "a blue square", knobs)
    assert len(window.alignment.frame_loadings) == len(whole.alignment.frame_loadings) == 12
    view = explorer.snapshot.base  # the window's frame features, not the whole video's
    exact, features = view.moments.window(0, (span[0] + 0.4, span[1] - 0.3))  # nearest one
    assert exact == span and not torch.equal(features, view.frames[0])
    assert window.alignment.frame_loadings.shape != whole.alignment.frame_loadings.shape or (
        not torch.equal(window.alignment.frame_loadings, whole.alignment.frame_loadings)
    )
    rgb = explorer.frames_rgb("long", 32, span=span).astype(float)  # [T, 32, 32, 3]
    shown = [  # each segment's picture at 32 px (4x4 block means of the 128 px render)
        v1.render_frame(spec, 0).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
        for spec in segment_specs()
    ]
    for frame in rgb:  # every frame of the window shows the blue segment
        assert np.argmin([np.abs(frame - ref).mean() for ref in shown]) == segment
    with pytest.raises(KnobError, match="indexed whole"):
        explorer.align("short0", "a green triangle", knobs, "0-10")
    with pytest.raises(KnobError, match="start-end"):
        explorer.align("long", "a green triangle", knobs, "sixty")
