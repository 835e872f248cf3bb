"""Probing: what a file's header says, and the checks that run before any decoding.

In the decoder child each file is first probed (ffprobe under a timeout, or PyAV's demuxer
when ffprobe is absent or :attr:`Limits.probe` asks for it) and rejected before any decoding
if it has no video stream, an unsupported container (only mp4/mov/webm/matroska/avi: never
hls, concat, image2), too many pixels or too long a duration (docs/reliability.md §1).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from emcl.video.errors import VideoDecodeError, ffmpeg_reason

# Output size of sampled frames: None keeps the file's size, an int sets the short side
# (aspect kept), (h, w) is exact (see emcl.video.sampling.output_size).
Size = int | tuple[int, int] | None
# Containers we decode. ffprobe/PyAV report these names; a file matching none is rejected
# (blocks hls/concat/image2 playlists that would make FFmpeg open other files or URLs).
ALLOWED_FORMATS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi"})
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


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
        raise VideoDecodeError(ffmpeg_reason(msg), f"ffprobe: {msg}", path)
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
        raise VideoDecodeError(ffmpeg_reason(str(e)), f"PyAV: {e}", path) from e


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


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the extension is one we index (content is checked at decode time)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


__all__ = [
    "ALLOWED_FORMATS", "DEFAULT_LIMITS", "VIDEO_EXTENSIONS", "Limits", "ProbeInfo", "Size",
    "check_probe", "is_video_file", "probe", "probe_ffprobe", "probe_pyav", "sniff",
]  # fmt: skip
