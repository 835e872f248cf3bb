"""The UI at scale: the video picker's suggestions and validation, and paged tables."""

from __future__ import annotations

import pytest

from emcl.explorer.knobs import KnobError
from ui.paging import PAGE_ROWS, page_of
from ui.pickers import MAX_SUGGESTIONS, choices, resolve, suggest


def test_suggestions_rank_exact_then_prefix_then_substring_then_caption(explorer):
    ids = [r.video_id for r in explorer.snapshot.records]
    target = ids[len(ids) // 2]
    got = suggest(explorer, target.upper())  # case does not matter
    assert got[0] == target
    assert all(target in i for i in got[: sum(target in i for i in ids)])
    prefix = ids[0][:-1]
    want_prefix = [i for i in ids if i.startswith(prefix)][:MAX_SUGGESTIONS]
    assert suggest(explorer, prefix)[: len(want_prefix)] == want_prefix
    assert suggest(explorer, "") == ids[:MAX_SUGGESTIONS]
    assert len(suggest(explorer, "", 5)) == 5


def test_suggestions_search_captions(explorer):
    snap = explorer.snapshot
    record = snap.records[7]
    word = max(record.captions[0].split(), key=len)
    got = suggest(explorer, word, limit=len(snap.records))
    want = [r.video_id for r in snap.records if word.lower() in " | ".join(r.captions).lower()]
    assert record.video_id in got and sorted(got) == sorted(want)
    assert suggest(explorer, "no caption says this zzqx") == []


def test_choices_show_the_caption_beside_the_id(explorer):
    record = explorer.snapshot.records[0]
    (label, value), = choices(explorer, [record.video_id])  # fmt: skip
    assert value == record.video_id and label.startswith(f"{record.video_id} — ")
    assert len(label) <= len(record.video_id) + 3 + 60


def test_resolve_accepts_ids_and_refuses_the_rest_with_the_nearest(explorer):
    ids = [r.video_id for r in explorer.snapshot.records]
    assert resolve(explorer, f"  {ids[3]} ") == ids[3]
    with pytest.raises(KnobError, match=rf"unknown video id .*did you mean {ids[0]}, "):
        resolve(explorer, ids[0][:3])  # part of an id: the ids it starts are offered
    with pytest.raises(KnobError, match=r"unknown video id '\.\./\.\./etc/passwd'"):
        resolve(explorer, "../../etc/passwd")
    with pytest.raises(KnobError, match="pick a video"):
        resolve(explorer, "  ")


def test_pages_of_a_table():
    rows = [[f"video{i}", "test", f"caption {i % 7}"] for i in range(123)]
    shown, page, note = page_of(rows, "", 1)
    assert shown == rows[:PAGE_ROWS] and page == 1
    assert note == f"rows 1–{PAGE_ROWS} of 123 · page 1 of 3"
    shown, page, note = page_of(rows, "", 99)  # clamped to the last page
    assert page == 3 and shown == rows[100:] and note.startswith("rows 101–123 of 123")
    assert page_of(rows, "", "x")[1] == 1 and page_of(rows, "", -4)[1] == 1
    shown, page, note = page_of(rows, "CAPTION 3", 1)
    assert shown == [r for r in rows if r[2] == "caption 3"]
    assert "matching “caption 3” (123 in all)" in note
    assert page_of([], "", 1) == ([], 1, "no rows · page 1 of 1")
