"""Why a video could not be decoded: the reason codes and the one error type carrying them.

Every decode failure (probe, decoder, crashed or hung child) reaches the caller as a
:class:`VideoDecodeError` whose ``reason`` is a key of :data:`REASONS` (docs/reliability.md §1).
"""

from __future__ import annotations

import os

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


def ffmpeg_reason(text: str, default: str = "not_a_video") -> str:
    """The reason code an FFmpeg/decord error message stands for (``default`` if none fits)."""
    low = text.lower()
    if "moov atom not found" in low or "end of file" in low or "truncat" in low:
        return "truncated"
    if "cannot find video stream" in low or "no video stream" in low:
        return "no_video_stream"
    if "cannot allocate memory" in low or "bad_alloc" in low:
        return "too_large"
    return default


def as_decode_error(e: Exception, where: str, path: str) -> VideoDecodeError:
    """Any exception from a decoder as a :class:`VideoDecodeError` (``where``: which decoder)."""
    if isinstance(e, VideoDecodeError):
        return e
    if isinstance(e, MemoryError):  # RLIMIT_AS reached
        return VideoDecodeError("too_large", f"{where}: out of memory while decoding", path)
    return VideoDecodeError("corrupt", f"{where}: {type(e).__name__}: {str(e)[:300]}", path)


__all__ = ["REASONS", "VideoDecodeError", "as_decode_error", "ffmpeg_reason"]
