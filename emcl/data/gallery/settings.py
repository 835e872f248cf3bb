"""How one build decodes and encodes videos, and the cache key that separates them: one
sub-folder per (model fingerprint, sampler, decoder, precision), so a different model, sampler
or encoder precision never reuses features."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emcl.data.gallery.shards import CACHE_VERSION
from emcl.data.windows import DEFAULT_WINDOWS, WindowSpec
from emcl.model.config import PRECISIONS
from emcl.video.probe import Limits, Size

# Bulk indexing probes headers with PyAV's demuxer inside the decoder child: the same checks
# as ffprobe (allow-listed containers, size and duration caps) at ~1 ms instead of ~50 ms per
# file (bench: 160 vs 15 clips/s on 2 cores). PyAV 18.1 bundles FFmpeg 8.1.2.
BULK_LIMITS = Limits(probe="pyav")


@dataclass(frozen=True, kw_only=True)
class ExtractOptions:
    """How videos are decoded and encoded for one build; :meth:`settings` (the cache key's
    part) uses the first five."""

    num_frames: int
    size: Size  # resolved: never None here
    backend: str = "auto"
    windows: WindowSpec | None = DEFAULT_WINDOWS
    precision: str = "auto"  # the encoder's ``precision`` (emcl/model/encoder.py)
    batch_size: int = 32
    workers: int | None = None  # decoder children (default: one per CPU)
    timeout: float = 30.0
    limits: Limits = BULK_LIMITS
    progress: bool = True
    part: str | None = None  # one process's share of a sharded extraction (its shards' name tag)
    # Told (videos done, videos to do) as extraction advances: the app's status lines. Not
    # part of the cache key.
    report: Callable[[int, int], None] | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)

    def settings(self) -> dict[str, Any]:
        return gallery_settings(
            num_frames=self.num_frames, size=self.size, backend=self.backend,
            windows=self.windows, precision=self.precision,
        )  # fmt: skip

    @property
    def tag(self) -> str:
        """The part's name as it appears in shard names (letters and digits only)."""
        return "".join(ch for ch in self.part or "" if ch.isalnum())


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def encoder_precision(encoder: Any) -> str:
    """The precision an encoder computes in (``auto`` for one that does not say)."""
    return check_precision(getattr(encoder, "precision", "auto"))


def gallery_settings(
    *,
    num_frames: int,
    size: Size,
    backend: str,
    windows: WindowSpec | None,
    precision: str = "auto",
) -> dict[str, Any]:
    """The settings a cache folder is keyed by (and its manifest records). ``precision`` is in
    them only when it is not ``auto``: caches made before the setting existed keep their key."""
    settings = {
        "cache_version": CACHE_VERSION,
        "num_frames": num_frames,
        "size": list(size) if isinstance(size, tuple) else size,
        "sampler": "uniform",
        "backend": backend,
        "decord": _installed("decord"),
        "pyav": _installed("av"),
        "windows": windows.to_json() if windows is not None else None,
    }
    if check_precision(precision) != "auto":
        settings["precision"] = precision
    return settings


def _installed(package: str) -> str | None:
    """The package's version; None where it is absent (a PyAV-only machine has no decord)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_key(fingerprint: str, settings: dict[str, Any]) -> str:
    """Folder name of one (model, sampler, decoder) combination."""
    blob = json.dumps({"fingerprint": fingerprint, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def window_spec(settings: dict[str, Any]) -> WindowSpec | None:
    spec = settings.get("windows")
    return WindowSpec(**spec) if spec else None


def settings_size(settings: dict[str, Any]) -> Size:
    """The frame size as given to the decoder (JSON holds an ``(h, w)`` as a list)."""
    size = settings["size"]
    return tuple(size) if isinstance(size, list) else size


def default_size(encoder: Any) -> Size:
    """The encoder's ``image_size``, else 224."""
    s = getattr(encoder, "image_size", 224)
    return tuple(s) if isinstance(s, list | tuple) else int(s)


__all__ = [
    "BULK_LIMITS", "ExtractOptions", "cache_key", "check_precision",
    "default_size", "encoder_precision", "gallery_settings", "settings_size", "window_spec",
]  # fmt: skip
