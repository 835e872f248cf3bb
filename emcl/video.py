"""Guarded video decoding, frame sampling and writing (RELIABILITY.md §1).

Every decode goes through :class:`DecoderPool` (``load_frames`` uses a shared default pool). A
pool owns persistent *child processes* (spawn context): each has an address-space cap
(RLIMIT_AS) and every request a wall-clock timeout. A segfault, abort, hang or runaway
allocation in FFmpeg/decord therefore ends as a :class:`VideoDecodeError` in the caller, the
dead child is reaped and the next request gets a fresh one. Children are reused, so bulk
decoding is not dominated by process start-up.

In the child, each file is first probed (ffprobe under a timeout, or PyAV's demuxer when
ffprobe is absent) and rejected before any decoding if it has no video stream, an unsupported
container (only mp4/mov/webm/matroska/avi: never hls, concat, image2), too many pixels or too
long a duration. Only then are the sampled frames decoded, small (resized in the decoder), with
decord (default) and PyAV as the fallback.

Samplers (frame indices refer to presentation order):
- ``uniform``: ``uniform_indices(n, T)`` -- slot i takes the frame under the centre of the
  i-th of T equal time slices. Always exactly T frames; a clip shorter than T frames repeats
  frames (each slot takes the nearest frame), e.g. n=1 gives T copies of frame 0.
- ``fps``: like the reference CLIP4Clip/EMCL loader, one frame per second (the frame shown at
  t = 0 s, 1 s, 2 s, ...), subsampled with ``np.linspace`` to at most T frames.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import importlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np

Sampler = Literal["uniform", "fps"]
Size = int | tuple[int, int] | None

REASONS: dict[str, str] = {
    "missing": "file does not exist",
    "empty": "file is empty",
    "not_a_video": "not a readable video",
    "unsupported_format": "container format not allowed",
    "no_video_stream": "no video stream",
    "truncated": "file is truncated",
    "too_large": "video exceeds the size/duration/memory limits",
    "no_frames": "no decodable frames",
    "corrupt": "decoder error",
    "timeout": "decoding timed out",
    "crashed": "decoder process died",
}

# Containers we decode. ffprobe/PyAV report these names; a file matching none is rejected
# (blocks hls/concat/image2 playlists that would make FFmpeg open other files or URLs).
ALLOWED_FORMATS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi"})
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


class VideoDecodeError(ValueError):
    """A video could not be decoded; ``reason`` is a short code from :data:`REASONS`."""

    def __init__(self, reason: str, message: str = "", path: str | os.PathLike | None = None):
        self.reason = reason
        self.message = message or REASONS.get(reason, reason)
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{self.message} [{reason}]")

    def __reduce__(self):  # keep reason/path across the process boundary
        return (type(self), (self.reason, self.message, self.path))


@dataclass(frozen=True)
class Limits:
    """Resource limits applied before and during decoding."""

    max_pixels: int = 4096 * 4096  # width * height
    max_duration_s: float = 3 * 3600.0
    max_bytes: int = 8 * 2**30
    memory_bytes: int = 3 * 2**30  # RLIMIT_AS of each decoder child
    probe_timeout_s: float = 10.0
    max_output_bytes: int = 512 * 2**20  # sampled frames returned per request
    # "ffprobe": the system binary (Debian security updates; ~50 ms start-up per file);
    # "pyav": the same header checks with PyAV's demuxer inside the child (~1 ms).
    probe: Literal["ffprobe", "pyav"] = "ffprobe"


DEFAULT_LIMITS = Limits()
DEFAULT_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- samplers


def uniform_indices(total_frames: int, num_frames: int) -> list[int]:
    """Indices of ``num_frames`` frames spread uniformly over ``total_frames``.

    Slot ``i`` takes frame ``floor((i + 0.5) * total / num)``: the frame under the centre of
    the i-th equal time slice. The result has exactly ``num_frames`` non-decreasing entries;
    when ``total_frames < num_frames`` frames repeat (each slot the nearest frame), so a
    1-frame clip yields ``num_frames`` copies of frame 0.
    """
    if total_frames < 1 or num_frames < 1:
        raise ValueError(
            f"need total_frames >= 1 and num_frames >= 1, got {total_frames}, {num_frames}"
        )
    return [(2 * i + 1) * total_frames // (2 * num_frames) for i in range(num_frames)]


def fps_indices(frame_times: Sequence[float], num_frames: int, fps: float = 1.0) -> list[int]:
    """Reference-style sampling: the frames shown at t = 0, 1/fps, 2/fps, ... (<= ``num_frames``).

    ``frame_times`` are the presentation times (s) of all frames in order, relative to the first.
    """
    n = len(frame_times)
    if n < 1 or num_frames < 1:
        raise ValueError("need at least one frame and num_frames >= 1")
    last = frame_times[-1]
    ticks = [k / fps for k in range(math.floor(last * fps + 1e-9) + 1)]
    idx = [max(0, bisect.bisect_right(frame_times, t + 1e-6) - 1) for t in ticks]
    if len(idx) > num_frames:  # same subsampling as the reference loader
        idx = [idx[j] for j in np.linspace(0, len(idx) - 1, num=num_frames, dtype=int)]
    return idx


def output_size(height: int, width: int, size: Size) -> tuple[int, int]:
    """Output (h, w): ``None`` keeps the size, an int sets the short side (aspect kept)."""
    if size is None:
        return height, width
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if height <= width:
            return size, max(1, round(width * size / height))
        return max(1, round(height * size / width)), size
    h, w = size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


# ----------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class ProbeInfo:
    """What the container header says, before decoding."""

    format_name: str
    width: int
    height: int
    duration_s: float | None
    num_frames: int | None
    codec: str
    fps: float | None


def check_probe(info: ProbeInfo, limits: Limits = DEFAULT_LIMITS, path: str | None = None) -> None:
    """Reject what must not be decoded (pure: ``info`` is all it needs)."""
    names = set(info.format_name.split(","))
    if not names & ALLOWED_FORMATS:
        raise VideoDecodeError(
            "unsupported_format", f"container '{info.format_name}' not allowed", path
        )
    if info.width <= 0 or info.height <= 0:
        raise VideoDecodeError("no_video_stream", "video stream has no frame size", path)
    if info.width * info.height > limits.max_pixels:
        raise VideoDecodeError(
            "too_large", f"{info.width}x{info.height} exceeds {limits.max_pixels} pixels", path
        )
    if info.duration_s is not None:
        if info.duration_s > limits.max_duration_s:
            raise VideoDecodeError(
                "too_large",
                f"duration {info.duration_s:.0f} s exceeds {limits.max_duration_s:.0f} s",
                path,
            )
        if info.duration_s < 0:
            raise VideoDecodeError("not_a_video", f"negative duration {info.duration_s}", path)
    if info.num_frames is not None and info.num_frames > 10**8:
        raise VideoDecodeError("too_large", f"{info.num_frames} frames declared", path)


def _ratio(text: str | None) -> float | None:
    try:
        num, _, den = (text or "").partition("/")
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _classify_ffmpeg_message(text: str, default: str = "not_a_video") -> str:
    low = text.lower()
    if "moov atom not found" in low or "end of file" in low or "truncat" in low:
        return "truncated"
    if "cannot find video stream" in low or "no video stream" in low:
        return "no_video_stream"
    if "cannot allocate memory" in low or "bad_alloc" in low:
        return "too_large"
    return default


def probe_ffprobe(path: str, limits: Limits = DEFAULT_LIMITS) -> ProbeInfo:
    """Read the header with the system ffprobe (file protocol only, hard timeout)."""
    cmd = [
        "ffprobe", "-v", "error", "-protocol_whitelist", "file",
        "-show_streams", "-show_format", "-of", "json", "-i", "file:" + os.path.abspath(path),
    ]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=limits.probe_timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise VideoDecodeError(
            "timeout", f"ffprobe took over {limits.probe_timeout_s:g} s", path
        ) from e
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip()[-300:]
        raise VideoDecodeError(_classify_ffmpeg_message(msg), f"ffprobe: {msg}", path)
    data = json.loads(res.stdout or b"{}")
    fmt = data.get("format", {})
    videos = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    videos = [s for s in videos if not s.get("disposition", {}).get("attached_pic")]
    if not videos:
        raise VideoDecodeError("no_video_stream", path=path)
    s = videos[0]
    nb = s.get("nb_frames")
    return ProbeInfo(
        format_name=str(fmt.get("format_name", "")),
        width=int(s.get("width") or 0),
        height=int(s.get("height") or 0),
        duration_s=_float(fmt.get("duration", s.get("duration"))),
        num_frames=int(nb) if nb and str(nb).isdigit() else None,
        codec=str(s.get("codec_name", "")),
        fps=_ratio(s.get("avg_frame_rate")) or _ratio(s.get("r_frame_rate")),
    )


def probe_pyav(path: str, limits: Limits = DEFAULT_LIMITS) -> ProbeInfo:
    """The same header read with PyAV's demuxer (used when ffprobe is not installed)."""
    import av

    try:
        with av.open(path, options={"protocol_whitelist": "file"}) as c:
            fmt = c.format.name
            duration = c.duration / 1e6 if c.duration is not None else None
            if not c.streams.video:
                raise VideoDecodeError("no_video_stream", path=path)
            s = c.streams.video[0]
            return ProbeInfo(
                format_name=fmt,
                width=int(s.codec_context.width or 0),
                height=int(s.codec_context.height or 0),
                duration_s=duration,
                num_frames=int(s.frames) or None,
                codec=s.codec_context.name,
                fps=float(s.average_rate) if s.average_rate else None,
            )
    except av.FFmpegError as e:
        raise VideoDecodeError(_classify_ffmpeg_message(str(e)), f"PyAV: {e}", path) from e


def probe(path: str, limits: Limits = DEFAULT_LIMITS) -> ProbeInfo:
    """Probe ``path`` (ffprobe if installed, else PyAV) and apply :func:`check_probe`.

    Runs FFmpeg's demuxer on untrusted bytes: call it inside a decoder child (the pool does).
    """
    _check_file(path, limits)
    sniff(path)
    use_ffprobe = limits.probe == "ffprobe" and shutil.which("ffprobe")
    info = probe_ffprobe(path, limits) if use_ffprobe else probe_pyav(path, limits)
    check_probe(info, limits, path)
    return info


_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}


def sniff(path: str) -> str:
    """Container family ("mp4", "matroska", "avi") from the first bytes, before FFmpeg reads it.

    Anything else (text, playlists such as ``#EXTM3U``, images) is ``not_a_video``. For MP4/MOV
    the top-level boxes are walked: one that runs past the end of the file means ``truncated``
    (a cut download: with ``moov`` at the end it is missing, with ``+faststart`` ``mdat`` is cut).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return "matroska"
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            return "avi"
        if len(head) < 8 or head[4:8] not in _MP4_FIRST_BOXES:
            raise VideoDecodeError("not_a_video", "unrecognised file signature", path)
        offset, seen = 0, set()
        for _ in range(100_000):
            if offset >= size:
                break
            f.seek(offset)
            hdr = f.read(16)
            if len(hdr) < 8:
                raise VideoDecodeError("truncated", f"box header cut at byte {offset}", path)
            box, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8]
            if box == 1 and len(hdr) == 16:
                box = int.from_bytes(hdr[8:16], "big")
            elif box == 0:  # extends to the end of the file
                box = size - offset
            if box < 8 or not all(32 <= c < 127 for c in kind):
                raise VideoDecodeError("not_a_video", f"invalid MP4 box at byte {offset}", path)
            if offset + box > size:
                raise VideoDecodeError(
                    "truncated",
                    f"'{kind.decode()}' box needs {offset + box} bytes, file has {size}",
                    path,
                )
            seen.add(kind)
            offset += box
        if b"moov" not in seen and b"moof" not in seen:
            raise VideoDecodeError("truncated", "no 'moov' box (index missing)", path)
        return "mp4"


def _check_file(path: str, limits: Limits) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise VideoDecodeError("missing", path=path) from e
    if not os.path.isfile(path):
        raise VideoDecodeError("not_a_video", "not a regular file", path)
    if st.st_size == 0:
        raise VideoDecodeError("empty", "file is empty (0 bytes)", path)
    if st.st_size > limits.max_bytes:
        raise VideoDecodeError("too_large", f"{st.st_size} bytes exceeds {limits.max_bytes}", path)


# ----------------------------------------------------------------------------- decoding (child)


@dataclass(frozen=True)
class DecodeRequest:
    """Everything a child needs to decode one file (picklable)."""

    path: str
    num_frames: int = 12
    size: Size = None
    sampler: Sampler = "uniform"
    backend: str = "auto"  # "auto" (decord, PyAV fallback) | "decord" | "pyav" | "module:function"
    limits: Limits = DEFAULT_LIMITS


@dataclass
class Decoded:
    """Sampled frames ``[T, H, W, 3]`` uint8 plus what happened while decoding them."""

    frames: np.ndarray
    indices: list[int]
    total_frames: int
    backend: str
    probe: ProbeInfo | None = None
    corrupt_frames: int = 0  # sampled slots filled from a neighbour because decoding stopped
    notes: list[str] = field(default_factory=list)


def _select(times: Sequence[float], req: DecodeRequest) -> list[int]:
    if req.sampler == "uniform":
        return uniform_indices(len(times), req.num_frames)
    if req.sampler == "fps":
        return fps_indices(times, req.num_frames)
    raise ValueError(f"unknown sampler {req.sampler!r}")


def decode_decord(req: DecodeRequest, info: ProbeInfo) -> Decoded:
    """decord backend: resize in the decoder, fetch only the sampled indices."""
    import decord

    h, w = output_size(info.height, info.width, req.size)
    try:
        vr = decord.VideoReader(req.path, ctx=decord.cpu(0), width=w, height=h, num_threads=1)
        n = len(vr)
        if n < 1 or n > 10**8:  # decord #88: INT64_MIN frame counts
            raise VideoDecodeError("no_frames", f"decord reports {n} frames", req.path)
        if req.sampler == "fps":
            times = vr.get_frame_timestamp(np.arange(n))[:, 0]
            times = (times - times[0]).tolist()
        else:
            times = [0.0] * n  # only the count matters
        idx = _select(times, req)
        uniq, inverse = np.unique(np.asarray(idx), return_inverse=True)
        frames = vr.get_batch(uniq.tolist()).asnumpy()[inverse]
        vr.seek(0)  # decord #197: releases decoder buffers
        del vr
    except decord.DECORDError as e:
        reason = _classify_ffmpeg_message(str(e), default="corrupt")
        raise VideoDecodeError(reason, f"decord: {str(e)[:300]}", req.path) from e
    return Decoded(frames, list(map(int, idx)), n, "decord", info)


def decode_pyav(req: DecodeRequest, info: ProbeInfo) -> Decoded:
    """PyAV backend: one demux pass for the frame times, one decode pass for the frames."""
    import av

    h, w = output_size(info.height, info.width, req.size)
    opts = {"protocol_whitelist": "file"}
    try:
        with av.open(req.path, options=opts) as c:
            s = c.streams.video[0]
            pts = sorted(p.pts for p in c.demux(s) if p.pts is not None and p.size > 0)
            tb = float(s.time_base or 0) or 1.0
        if not pts:
            raise VideoDecodeError("no_frames", "no video packets", req.path)
        times = [(p - pts[0]) * tb for p in pts]
        idx = _select(times, req)
        wanted: dict[int, list[int]] = {}
        for slot, i in enumerate(idx):
            wanted.setdefault(i, []).append(slot)
        out: list[np.ndarray | None] = [None] * len(idx)
        last_needed = max(idx)
        k = -1
        errors = 0
        with av.open(req.path, options=opts) as c:
            s = c.streams.video[0]
            for packet in c.demux(s):  # decode packet by packet so one bad packet is skipped
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    errors += 1
                    continue
                for frame in frames:
                    k += 1
                    for slot in wanted.get(k, ()):
                        out[slot] = frame.to_ndarray(format="rgb24", width=w, height=h)
                if k >= last_needed:
                    break
    except av.FFmpegError as e:
        reason = _classify_ffmpeg_message(str(e), default="corrupt")
        raise VideoDecodeError(reason, f"PyAV: {str(e)[:300]}", req.path) from e
    got = [i for i, f in enumerate(out) if f is not None]
    if not got:
        raise VideoDecodeError("no_frames", "no frame could be decoded", req.path)
    missing = len(out) - len(got)
    for slot in range(len(out)):  # fill from the nearest decoded slot
        if out[slot] is None:
            out[slot] = out[min(got, key=lambda g: abs(g - slot))]
    notes = [f"{missing} sampled frames missing, filled from neighbours"] if missing else []
    if errors:
        notes.append(f"{errors} packets failed to decode")
    return Decoded(np.stack(out), list(idx), len(pts), "pyav", info, missing, notes)


def _resolve_backend(name: str) -> Callable[[DecodeRequest, ProbeInfo], Decoded]:
    if name == "decord":
        return decode_decord
    if name == "pyav":
        return decode_pyav
    if ":" in name:  # extension point, e.g. "mypkg.decoders:torchcodec_decode" (or a test's)
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    raise ValueError(f"unknown backend {name!r}")


def _check_output(d: Decoded, req: DecodeRequest) -> None:
    f = d.frames
    h, w = output_size(d.probe.height, d.probe.width, req.size) if d.probe else f.shape[1:3]
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[3] != 3 or f.shape[1:3] != (h, w):
        raise VideoDecodeError("corrupt", f"decoder returned {f.dtype} {f.shape}", req.path)
    if len(f) != len(d.indices) or len(f) == 0:
        raise VideoDecodeError("corrupt", f"decoder returned {len(f)} frames", req.path)


def _is_blank(frames: np.ndarray) -> bool:
    return bool(frames.min() == frames.max())


def _as_decode_error(e: Exception, where: str, path: str) -> VideoDecodeError:
    if isinstance(e, VideoDecodeError):
        return e
    if isinstance(e, MemoryError):  # RLIMIT_AS reached
        return VideoDecodeError("too_large", f"{where}: out of memory while decoding", path)
    return VideoDecodeError("corrupt", f"{where}: {type(e).__name__}: {str(e)[:300]}", path)


def decode_request(req: DecodeRequest) -> Decoded:
    """Probe, check and decode one file in *this* process (the pool calls it in a child)."""
    info = probe(req.path, req.limits)
    if req.backend != "auto":
        d = _resolve_backend(req.backend)(req, info)
        _check_output(d, req)
        return d
    try:
        d = decode_decord(req, info)
        _check_output(d, req)
    except Exception as e:  # any decord failure: try the other backend before giving up
        first = _as_decode_error(e, "decord", req.path)
        try:  # PyAV's FFmpeg is newer and tolerates some files decord rejects
            d = decode_pyav(req, info)
            _check_output(d, req)
        except VideoDecodeError:
            raise first from None
        d.notes.append(f"decord failed ({first.reason}); decoded with PyAV")
        return d
    if _is_blank(d.frames):  # decord #233 returns all-zero frames silently; cross-check
        try:
            alt = decode_pyav(req, info)
            if not _is_blank(alt.frames):
                alt.notes.append("decord returned blank frames; decoded with PyAV")
                return alt
        except VideoDecodeError:
            pass
    return d


def _child_entry() -> None:
    """Entry point of a decoder child started by :class:`_Worker`."""
    conn = Connection(int(os.environ["EMCL_DECODER_FD"]))
    _child_main(conn, int(os.environ["EMCL_DECODER_MEM"]), os.environ["EMCL_DECODER_QUIET"] == "1")


def _child_main(conn: Connection, memory_bytes: int, quiet: bool) -> None:
    """Decoder child: serve DecodeRequests until the pipe closes."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if quiet:  # decord dumps file bytes to stderr on some failures (decord #299)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    try:
        import av

        av.logging.set_level(None)
    except Exception:  # PyAV missing: decord-only child
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    conn.send(("ready", os.getpid()))
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            d = decode_request(req)
            if d.frames.nbytes > req.limits.max_output_bytes:
                raise VideoDecodeError("too_large", f"{d.frames.nbytes} bytes of frames", req.path)
            conn.send(("ok", d))
        except Exception as e:  # MemoryError included: too_large
            conn.send(("err", _as_decode_error(e, "decoder", req.path)))


# ----------------------------------------------------------------------------- parent side


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Worker:
    """One decoder child plus its pipe. Not thread-safe: the pool lends it to one caller.

    Started with ``subprocess`` (not multiprocessing's spawn, which re-imports the caller's
    ``__main__`` -- e.g. the whole app -- in every child); requests and results travel as
    pickles over a socketpair.
    """

    STARTUP_TIMEOUT_S = 120.0

    def __init__(self, memory_bytes: int, quiet: bool):
        parent_sock, child_sock = socket.socketpair()
        boot = (
            "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
            "from emcl.video import _child_entry; _child_entry()"
        )
        env = dict(os.environ, EMCL_DECODER_FD=str(child_sock.fileno()),
                   EMCL_DECODER_MEM=str(memory_bytes), EMCL_DECODER_QUIET="1" if quiet else "0",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, json.dumps(sys.path)],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        if not self.conn.poll(self.STARTUP_TIMEOUT_S):
            self.kill()
            raise VideoDecodeError("crashed", "decoder process did not start")
        try:
            self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.kill()
            raise VideoDecodeError(
                "crashed", f"decoder process died at start ({_signal_name(code)})"
            ) from e

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.conn.close()
        return self.proc.returncode

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.wait(2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def call(self, req: DecodeRequest, timeout: float) -> Decoded:
        self.conn.send(req)
        if not self.conn.poll(timeout):
            self.kill()
            raise VideoDecodeError(
                "timeout", f"no result within {timeout:g} s; decoder killed", req.path
            )
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.kill()
            raise VideoDecodeError(
                "crashed", f"decoder died ({_signal_name(code)})", req.path
            ) from e
        if status == "ok":
            return payload
        raise payload


class DecoderPool:
    """Up to ``workers`` persistent decoder children, each lent to one request at a time.

    Thread-safe. ``decode`` blocks until a child is free; the timeout counts from when the
    request is sent. A child that crashes or times out is discarded and replaced lazily.
    """

    def __init__(
        self,
        workers: int = 1,
        limits: Limits = DEFAULT_LIMITS,
        quiet: bool = True,
    ):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.max_workers = workers
        self.limits = limits
        self.quiet = quiet
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def _borrow(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("DecoderPool is closed")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive:
                        return w
                    w.kill()
                    self._count -= 1
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return _Worker(self.limits.memory_bytes, self.quiet)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give_back(self, w: _Worker, ok: bool) -> None:
        with self._cond:
            self._cond.notify()
            if ok and w.alive and not self._closed:
                self._idle.append(w)
                return
            self._count -= 1
        w.close()  # outside the lock: waits briefly for the child to exit, then kills it

    def decode(
        self,
        path: str | os.PathLike,
        num_frames: int = 12,
        size: Size = None,
        sampler: Sampler = "uniform",
        timeout: float = DEFAULT_TIMEOUT_S,
        backend: str = "auto",
    ) -> Decoded:
        """Decode one file in a child; raises :class:`VideoDecodeError` on any failure."""
        if sampler not in ("uniform", "fps"):
            raise ValueError(f"sampler must be 'uniform' or 'fps', got {sampler!r}")
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        output_size(1, 1, size)  # validates size
        path = os.fspath(path)
        if not os.path.exists(path):  # cheap and safe: no child needed
            raise VideoDecodeError("missing", path=path)
        req = DecodeRequest(path, num_frames, size, sampler, backend, self.limits)
        w = self._borrow()
        ok = False
        try:
            try:
                d = w.call(req, timeout)
            except (BrokenPipeError, ConnectionResetError):  # child died while idle: once more
                w.kill()
                w = _Worker(self.limits.memory_bytes, self.quiet)
                d = w.call(req, timeout)
            ok = True
            return d
        except VideoDecodeError as e:
            ok = w.alive and e.reason not in ("timeout", "crashed")
            if e.reason == "crashed" and backend == "auto":  # decord segfault: try PyAV once
                return self._retry_pyav(req, timeout, e)
            raise
        finally:
            self._give_back(w, ok)

    def _retry_pyav(self, req: DecodeRequest, timeout: float, first: VideoDecodeError) -> Decoded:
        w = self._borrow()
        ok = False
        try:
            d = w.call(replace(req, backend="pyav"), timeout)
            d.notes.append(f"decord child died ({first.message}); decoded with PyAV")
            ok = True
            return d
        except VideoDecodeError as e:
            ok = w.alive and e.reason not in ("timeout", "crashed")
            raise first from e
        finally:
            self._give_back(w, ok)

    def imap(
        self,
        paths: Iterable[str | os.PathLike],
        num_frames: int = 12,
        size: Size = None,
        sampler: Sampler = "uniform",
        timeout: float = DEFAULT_TIMEOUT_S,
        backend: str = "auto",
    ) -> Iterator[Decoded | VideoDecodeError]:
        """Decode many files with all children busy; yields results *in input order*.

        Failures are yielded as :class:`VideoDecodeError` objects, not raised. At most
        ``2 * workers`` results are held in memory ahead of the consumer.
        """

        def one(p: str | os.PathLike) -> Decoded | VideoDecodeError:
            try:
                return self.decode(p, num_frames, size, sampler, timeout, backend)
            except VideoDecodeError as e:
                return e

        window = 2 * self.max_workers
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="emcl-decode") as ex:
            pending: deque[Future] = deque()
            for p in paths:
                pending.append(ex.submit(one, p))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def child_pids(self) -> list[int]:
        """Process ids of the idle children (for monitoring and tests)."""
        with self._cond:
            return [w.proc.pid for w in self._idle if w.alive]

    def close(self) -> None:
        """Stop all idle children (busy ones are stopped when given back)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for w in idle:
            w.close()

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default_pool: DecoderPool | None = None
_default_lock = threading.Lock()


def default_pool() -> DecoderPool:
    """The process-wide pool behind :func:`load_frames` (2 children at most)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = DecoderPool(workers=min(2, os.cpu_count() or 1))
            atexit.register(_default_pool.close)
        return _default_pool


def load_frames(
    path: str | os.PathLike,
    num_frames: int = 12,
    size: Size = None,
    sampler: Sampler = "uniform",
    timeout: float = DEFAULT_TIMEOUT_S,
    backend: str = "auto",
) -> np.ndarray:
    """Sampled RGB frames ``[T, H, W, 3]`` uint8, decoded in an isolated child.

    ``size``: int short side (aspect kept) or ``(h, w)``; ``None`` keeps the file's size.
    ``sampler``: ``"uniform"`` (exactly ``num_frames``, see :func:`uniform_indices`) or ``"fps"``
    (1 frame/s, at most ``num_frames``). Raises :class:`VideoDecodeError` within ``timeout``.
    """
    return default_pool().decode(path, num_frames, size, sampler, timeout, backend).frames


def thumbnail(
    path: str | os.PathLike, size: Size = 160, timeout: float = DEFAULT_TIMEOUT_S
) -> np.ndarray:
    """The middle frame ``[H, W, 3]`` uint8 (short side ``size``), for the UI."""
    return load_frames(path, num_frames=1, size=size, timeout=timeout)[0]


# ----------------------------------------------------------------------------- writing


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 12,
    *,
    crf: int = 20,
    preset: str = "fast",
    faststart: bool = True,
    times: Sequence[float] | None = None,
) -> None:
    """Write RGB frames ``[H, W, 3]`` uint8 as browser-playable H.264 yuv420p MP4 (PyAV).

    ``times`` (seconds, increasing) gives each frame its own presentation time (VFR clips);
    otherwise frames are ``1/fps`` apart. Single-threaded x264 so output is reproducible.
    """
    from fractions import Fraction

    import av

    path = os.fspath(path)
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(path, "w", format="mp4", options=opts) as c:
        rate = Fraction(fps).limit_denominator(1000)
        s = c.add_stream("libx264", rate=rate)
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        if times is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        started = False
        for i, arr in enumerate(frames):
            if not started:
                s.height, s.width = arr.shape[:2]
                started = True
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            if times is not None:
                frame.pts = round(times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in s.encode(frame):
                c.mux(packet)
        if not started:
            raise ValueError("no frames to write")
        for packet in s.encode():
            c.mux(packet)


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the extension is one we index (content is checked at decode time)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS
