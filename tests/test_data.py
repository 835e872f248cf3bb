"""Dataset readers: the real MSR-VTT lists, a synthetic MSR-VTT folder, plain folders."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from emcl.data.datasets import (
    MissingVideosWarning,
    VideoRecord,
    missing_videos,
    read_dataset,
    read_folder,
    read_msrvtt,
    val_ids,
)

# The first rows of the official MSR-VTT lists: 8 of the 1K-A test split (with their captions)
# and 30 of the 9k training list, copied verbatim so the reader is tested on the real format.
MSRVTT = Path(__file__).resolve().parent / "fixtures" / "msrvtt"


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_real_msrvtt_lists():
    with pytest.warns(MissingVideosWarning, match="8 of 8"):
        test = read_msrvtt(MSRVTT, "test")
    assert len(test) == 8 and len({r.video_id for r in test}) == 8
    assert test[0].video_id == "video9770"
    assert test[0].captions == ["a person is connecting something to system"]
    assert all(len(r.captions) == 1 and r.split == "test" for r in test)
    with pytest.warns(UserWarning) as rec:
        trainval = read_msrvtt(MSRVTT, "trainval")
    messages = " | ".join(str(w.message) for w in rec)
    assert "MSRVTT_data.json not found" in messages and "30 of 30 videos missing" in messages
    assert len(trainval) == 30 and trainval[0].video_id == "video0"
    assert all(r.captions == [] for r in trainval)  # no MSRVTT_data.json here
    train, val = quiet(read_msrvtt, MSRVTT, "train"), quiet(read_msrvtt, MSRVTT, "val")
    assert (len(train), len(val)) == (27, 3)
    tv = {r.video_id for r in train} | {r.video_id for r in val}
    assert tv == {r.video_id for r in trainval}
    assert not {r.video_id for r in val} & {r.video_id for r in train}
    assert not {r.video_id for r in val} & {r.video_id for r in test}
    assert len(quiet(read_msrvtt, MSRVTT, "all")) == 38
    assert missing_videos(test[:3]) == ["video9770", "video9771", "video7020"]


def test_val_slice_is_deterministic_and_order_free():
    ids = [f"video{i}" for i in range(1000)]
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert val_ids(ids) == val_ids(shuffled)
    assert len(val_ids(ids)) == 100
    assert len(val_ids(ids, 0.05)) == 50 and val_ids(ids, 0.05) <= val_ids(ids)


def _msrvtt_folder(root: Path, with_data: bool = True) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "MSRVTT_train.9k.csv").write_text(
        "video_id\n" + "".join(f"video{i}\n" for i in range(20))
    )
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        'ret0,msr20,video20,"a dog, running"\nret1,msr21,video21,a cat\n'
    )
    if with_data:
        sentences = [
            {"video_id": f"video{i}", "caption": f"caption {j} of {i}", "sen_id": 10 * i + j}
            for i in range(22)
            for j in range(3)
        ]
        data = {"videos": [{"video_id": f"video{i}"} for i in range(22)], "sentences": sentences}
        (root / "MSRVTT_data.json").write_text(json.dumps(data))
    for i in (0, 1, 20):
        (root / "videos" / f"video{i}.mp4").write_bytes(b"x")
    return root


def test_synthetic_msrvtt_layout(tmp_path):
    root = _msrvtt_folder(tmp_path / "m")
    with pytest.warns(MissingVideosWarning, match="1 of 2"):
        test = read_msrvtt(root, "test")
    assert [(r.video_id, r.captions) for r in test] == [
        ("video20", ["a dog, running"]), ("video21", ["a cat"]),
    ]  # fmt: skip
    assert test[0].path == root / "videos" / "video20.mp4" and test[0].path.is_file()
    trainval = quiet(read_msrvtt, root, "trainval")
    assert trainval[3].captions == ["caption 0 of 3", "caption 1 of 3", "caption 2 of 3"]
    assert {r.split for r in trainval} == {"train", "val"}
    assert len(quiet(read_msrvtt, root, "val")) == 2
    assert quiet(read_dataset, root, "test")[0].video_id == "video20"
    with pytest.raises(ValueError):
        read_msrvtt(root, "validation")


def test_msrvtt_without_captions_file(tmp_path):
    root = _msrvtt_folder(tmp_path / "m", with_data=False)
    with pytest.warns(UserWarning) as rec:
        train = read_msrvtt(root, "train")
    assert any("no captions" in str(w.message) for w in rec)
    assert len(train) == 18 and all(r.captions == [] for r in train)


def test_read_folder_with_captions(tmp_path):
    root = tmp_path / "f"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ("b.mp4", "a.webm", "sub/c.MOV", "notes.txt", ".hidden/d.mp4"):
        (root / name).write_bytes(b"x")
    (root / "captions.csv").write_text(
        "video,caption\nb.mp4,a bee\nb,another bee\nsub/c.MOV,a sea\nlost.mp4,gone\n"
    )
    with pytest.warns(MissingVideosWarning, match="1 of 4"):
        recs = read_folder(root)
    by_id = {r.video_id: r for r in recs}
    assert [r.video_id for r in recs[:3]] == ["a", "b", "sub/c"]
    assert by_id["b"].captions == ["a bee", "another bee"]
    assert by_id["sub/c"].captions == ["a sea"] and by_id["a"].captions == []
    assert missing_videos(recs) == ["lost"]
    assert quiet(read_dataset, root)[0].video_id == "a"  # no MSR-VTT lists: a folder


def test_read_folder_jsonl_and_search_only(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    (root / "x.mp4").write_bytes(b"x")
    caps = tmp_path / "caps.jsonl"
    caps.write_text(json.dumps({"video": "x.mp4", "caption": "an x"}) + "\n\n")
    assert read_folder(root, caps) == [VideoRecord("x", root / "x.mp4", ["an x"], "all")]
    assert read_folder(root)[0].captions == []  # search-only gallery
    caps.write_text('{"vid": 1}\n')
    with pytest.raises(ValueError, match=r"caps\.jsonl:1"):
        read_folder(root, caps)


def test_reads_the_demo_world(tiny_world):
    test = read_dataset(tiny_world, "test")
    assert len(test) == 10 and all(r.path.is_file() and len(r.captions) == 1 for r in test)
    train, val = read_msrvtt(tiny_world, "train"), read_msrvtt(tiny_world, "val")
    assert (len(train), len(val)) == (18, 2)
    assert all(len(r.captions) >= 5 for r in train + val)
