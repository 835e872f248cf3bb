"""Guarded decoding: samplers, backends, and every bad input of docs/reliability.md §1.

Each bad file is generated here. For each: the right ``VideoDecodeError.reason`` within the
timeout, and a good file decodes right after on the same pool.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import clip_frames, frame_number
from hypothesis import given
from hypothesis import strategies as st

from emcl.video.decoder import DecoderPool, load_frames, thumbnail
from emcl.video.errors import VideoDecodeError
from emcl.video.probe import Limits, ProbeInfo, check_probe, sniff
from emcl.video.sampling import fps_indices, output_size, uniform_indices
from emcl.video.writing import write_video

# ------------------------------------------------------------------ decoders injected into the
# child by the tests (backend="test_video:<name>"): the child imports this module by name.


def hang_decoder(req, info):
    time.sleep(3600)


def segfault_decoder(req, info):
    os.kill(os.getpid(), signal.SIGSEGV)


def abort_decoder(req, info):
    os.abort()


def hog_decoder(req, info):
    return bytearray(4 * req.limits.memory_bytes)  # beyond RLIMIT_AS


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pool():
    with DecoderPool(workers=1) as p:
        yield p


@pytest.fixture
def good(make_clip) -> Path:
    return make_clip("good.mp4", n=30)


def assert_good_decodes(pool: DecoderPool, path: Path) -> None:
    d = pool.decode(path, 12, size=64)
    assert d.frames.shape == (12, 64, 85, 3)
    assert [frame_number(f) for f in d.frames] == uniform_indices(30, 12)


def assert_fails(pool, path, reason, good, timeout=20.0, **kw) -> VideoDecodeError:
    t0 = time.monotonic()
    with pytest.raises(VideoDecodeError) as ei:
        pool.decode(path, 12, size=64, timeout=timeout, **kw)
    assert time.monotonic() - t0 < timeout + 5
    assert ei.value.reason == reason, str(ei.value)
    assert_good_decodes(pool, good)
    return ei.value


# ------------------------------------------------------------------ samplers


def test_uniform_indices_examples():
    assert uniform_indices(36, 12) == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34]
    assert uniform_indices(1, 12) == [0] * 12  # one frame repeated
    assert uniform_indices(5, 12) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        uniform_indices(0, 12)


@given(st.integers(1, 5000), st.integers(1, 64))
def test_uniform_indices_properties(total, num):
    idx = uniform_indices(total, num)
    assert len(idx) == num
    assert all(0 <= i < total for i in idx)
    assert idx == sorted(idx)
    if total >= num:
        assert len(set(idx)) == num
    else:  # every frame is used when there are fewer frames than slots
        assert set(idx) == set(range(total))


def test_fps_indices_like_reference():
    times = [i / 10 for i in range(40)]  # 4 s at 10 fps
    assert fps_indices(times, 12) == [0, 10, 20, 30]
    long = [i / 10 for i in range(300)]  # 30 s: 30 ticks, subsampled to 12
    idx = fps_indices(long, 12)
    assert len(idx) == 12 and idx[0] == 0 and idx[-1] == 290


def test_output_size():
    assert output_size(96, 128, 64) == (64, 85)
    assert output_size(128, 96, 64) == (85, 64)
    assert output_size(96, 128, (50, 60)) == (50, 60)
    assert output_size(96, 128, None) == (96, 128)
    with pytest.raises(ValueError):
        output_size(96, 128, 0)


# ------------------------------------------------------------------ good files


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_decodes_the_right_frames(pool, good, backend):
    d = pool.decode(good, 12, size=(48, 64), backend=backend)
    assert d.frames.dtype == np.uint8 and d.frames.shape == (12, 48, 64, 3)
    assert [frame_number(f) for f in d.frames] == uniform_indices(30, 12)
    assert d.total_frames == 30
    f = pool.decode(good, 12, sampler="fps", backend=backend)  # 3 s at 10 fps
    assert f.frames.shape == (3, 96, 128, 3)
    assert [frame_number(x) for x in f.frames] == [0, 10, 20]


def test_load_frames_and_thumbnail(good):
    frames = load_frames(good, num_frames=4, size=32)
    assert frames.shape == (4, 32, 43, 3)  # 128 * 32 / 96 = 42.7
    thumb = thumbnail(good, size=40)
    assert thumb.shape == (40, 53, 3) and frame_number(thumb) == 15


def test_imap_keeps_order_and_yields_errors(tmp_path, make_clip):
    clips = [make_clip(f"c{n}.mp4", n=n) for n in (12, 20, 30)]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with DecoderPool(workers=2) as p:
        out = list(p.imap([clips[0], empty, clips[1], tmp_path / "nope.mp4", clips[2]], 4))
    assert [type(o).__name__ for o in out] == [
        "Decoded", "VideoDecodeError", "Decoded", "VideoDecodeError", "Decoded",
    ]  # fmt: skip
    assert [o.total_frames for o in out if not isinstance(o, Exception)] == [12, 20, 30]
    assert out[1].reason == "empty" and out[3].reason == "missing"


# ------------------------------------------------------------------ bad files


def test_zero_byte_file_is_empty(pool, tmp_path, good):
    p = tmp_path / "x.mp4"
    p.write_bytes(b"")
    assert_fails(pool, p, "empty", good)


def test_text_saved_as_mp4_is_not_a_video(pool, tmp_path, good):
    p = tmp_path / "x.mp4"
    p.write_text("this is not a video\n" * 200)
    assert_fails(pool, p, "not_a_video", good)


def test_bytes_flipped_in_the_middle_fail_cleanly_or_are_repaired(pool, tmp_path, good):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    src = tmp_path / "textured.mp4"
    write_video(src, [np.roll(base, 3 * i, 1) for i in range(30)], 10)  # ~50 KB, mostly mdat
    data = bytearray(src.read_bytes())
    a, b = int(0.45 * len(data)), int(0.55 * len(data))
    data[a:b] = b"\xff" * (b - a)
    bad = tmp_path / "flipped.mp4"
    bad.write_bytes(bytes(data))
    for backend in ("auto", "decord", "pyav"):
        try:  # a clean error, or frames with the repair logged: never a crash or hang
            d = pool.decode(bad, 12, size=64, backend=backend, timeout=20)
        except VideoDecodeError as e:
            assert e.reason in ("corrupt", "no_frames", "truncated"), str(e)
        else:
            assert d.frames.shape == (12, 64, 85, 3)
            assert d.notes, "a repaired decode must say so"
        assert_good_decodes(pool, good)


@pytest.mark.parametrize("faststart", [False, True])
def test_first_half_of_a_file_is_truncated(pool, tmp_path, make_clip, good, faststart):
    src = make_clip("full.mp4", n=30, faststart=faststart)
    data = src.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    assert_fails(pool, half, "truncated", good)


def test_audio_only_file_has_no_video_stream(pool, tmp_path, good):
    m4a = tmp_path / "a.m4a"
    with av.open(str(m4a), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        for k in range(20):
            f = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            f.sample_rate, f.pts = 16000, k * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    mp4 = tmp_path / "a.mp4"
    m4a.rename(mp4)
    assert_fails(pool, mp4, "no_video_stream", good)
    assert_fails(pool, mp4, "no_video_stream", good, backend="pyav")


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_short_clips_are_padded(pool, make_clip, n, backend):
    d = pool.decode(make_clip("short.mp4", n=n), 12, size=32, backend=backend)
    assert d.frames.shape == (12, 32, 43, 3)
    assert [frame_number(f) for f in d.frames] == uniform_indices(n, 12)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_vfr_matches_pyav_at_the_same_times(pool, tmp_path, backend):
    gaps = [0.25 if i % 3 == 0 else 0.03 for i in range(39)]
    times = np.concatenate([[0.0], np.cumsum(gaps)]).tolist()
    path = tmp_path / "vfr.mp4"
    write_video(path, clip_frames(40, (64, 80)), 25, times=times)
    with av.open(str(path)) as c:  # the reference: what PyAV shows, and when
        ref = [
            (float(f.time), frame_number(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)
        ]
    assert len(ref) == 40
    d = pool.decode(path, 12, sampler="fps", backend=backend)
    expected = []
    for t in range(int(ref[-1][0]) + 1):  # the frame on screen at t = 0, 1, 2 ... s
        expected.append([n for (ft, n) in ref if ft <= t + 1e-6][-1])
    assert [frame_number(f) for f in d.frames] == expected
    u = pool.decode(path, 12, sampler="uniform", backend=backend)
    assert [frame_number(f) for f in u.frames] == [ref[i][1] for i in uniform_indices(40, 12)]


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs the system ffprobe")
def test_declared_10h_duration_rejected_before_decoding(pool, make_clip, tmp_path, good):
    data = bytearray(make_clip("src.mp4", n=30).read_bytes())
    i = data.index(b"mvhd")  # version 0: flags, ctime, mtime, timescale, duration
    (timescale,) = struct.unpack(">I", data[i + 16 : i + 20])
    data[i + 20 : i + 24] = struct.pack(">I", timescale * 36000)
    p = tmp_path / "ten_hours.mp4"
    p.write_bytes(bytes(data))
    err = assert_fails(pool, p, "too_large", good)  # default probe: ffprobe reads the header
    assert "36000" in err.message


def test_probe_limits():
    ok = ProbeInfo("mov,mp4,m4a,3gp,3g2,mj2", 640, 480, 10.0, 300, "h264", 30.0)
    check_probe(ok)
    huge = ProbeInfo(ok.format_name, 16384, 16384, 10.0, 300, "h264", 30.0)
    with pytest.raises(VideoDecodeError, match="pixels") as e:
        check_probe(huge)
    assert e.value.reason == "too_large"
    for fmt in ("hls", "concat", "image2", "png_pipe"):
        with pytest.raises(VideoDecodeError) as e:
            check_probe(ProbeInfo(fmt, 64, 64, 1.0, 10, "h264", 10.0))
        assert e.value.reason == "unsupported_format"
    with pytest.raises(VideoDecodeError):
        check_probe(
            ProbeInfo(ok.format_name, 64, 64, 1.0, 10, "h264", 10.0), Limits(max_pixels=100)
        )


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_playlist_is_rejected_without_connecting(pool, tmp_path, good, ext):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    hits: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                hits.append(server.accept())

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    p = tmp_path / f"playlist{ext}"
    p.write_text(
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n"
        f"#EXTINF:10.0,\nhttp://127.0.0.1:{port}/x.ts\n#EXT-X-ENDLIST\n"
    )
    try:
        assert_fails(pool, p, "not_a_video", good)
        assert_fails(pool, p, "not_a_video", good, backend="pyav")
    finally:
        stop.set()
        t.join()
        server.close()
    assert hits == []


def test_sniff_families(tmp_path, good):
    assert sniff(str(good)) == "mp4"
    mkv = tmp_path / "x.mkv"
    mkv.write_bytes(b"\x1a\x45\xdf\xa3" + b"\0" * 60)
    assert sniff(str(mkv)) == "matroska"
    png = tmp_path / "x.mp4"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 60)
    with pytest.raises(VideoDecodeError):
        sniff(str(png))


def test_missing_file(pool, tmp_path, good):
    assert_fails(pool, tmp_path / "nope.mp4", "missing", good)


# ------------------------------------------------------------------ the child process


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0


@pytest.mark.parametrize(
    "hook, reason",
    [("hang_decoder", "timeout"), ("segfault_decoder", "crashed"), ("abort_decoder", "crashed"),
     ("hog_decoder", "too_large")],
)  # fmt: skip
def test_crashing_hanging_or_hogging_child_is_contained(good, hook, reason):
    with DecoderPool(workers=1, limits=Limits(memory_bytes=2**30)) as p:
        assert_good_decodes(p, good)
        (before,) = p.child_pids()
        err = assert_fails(p, good, reason, good, timeout=4.0, backend=f"test_video:{hook}")
        if reason != "too_large":  # the child was killed and reaped, a new one serves
            assert _gone(before)
            assert p.child_pids() and p.child_pids()[0] != before
        if hook == "segfault_decoder":
            assert "SIGSEGV" in err.message


def test_child_memory_is_flat(good):
    def rss(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    with DecoderPool(workers=1) as p:
        for _ in range(10):
            p.decode(good, 12, size=64, backend="decord")
        (pid,) = p.child_pids()
        warm = rss(pid)
        for _ in range(40):
            p.decode(good, 12, size=64, backend="decord")
        assert p.child_pids() == [pid]
        assert rss(pid) - warm < 20_000  # kB


def test_closed_pool_leaves_no_children(good):
    p = DecoderPool(workers=2)
    list(p.imap([good, good, good], 2))
    pids = p.child_pids()
    assert len(pids) == 2
    p.close()
    assert all(_gone(pid) for pid in pids)
