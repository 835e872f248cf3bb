"""What every tab shares: error mapping, the concurrency groups, file URLs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr
import torch

from emcl.explorer.knobs import KnobError
from emcl.explorer.service import Explorer
from emcl.video.errors import VideoDecodeError

QUEUE_SIZE = 32
CONCURRENCY = 2  # events of no group below, at once
# Concurrency groups (docs/reliability.md §4): each kind of work queues on its own, so a search
# never waits behind a metrics run or a map; the long computations also run below the request
# threads' CPU priority (emcl/explorer/latest.py), so a search gets the cores as well.
SEARCH = "search"  # /rank, /search: tens of milliseconds each
METRICS = "metrics"  # /metrics, sweeps, the knob refresh: waiting calls share the next run
# (so many may wait inside; a waiting call holds a thread, not a core)
MAPS = "maps"  # /align, /embedding_map, /map_item, the grounding poll
UPLOADS = "uploads"  # /add_videos: one at a time
GROUP_LIMITS = {SEARCH: 4, METRICS: 16, MAPS: 2, UPLOADS: 1}
SEARCH_EVENT = {"concurrency_id": SEARCH, "concurrency_limit": GROUP_LIMITS[SEARCH]}
METRICS_EVENT = {"concurrency_id": METRICS, "concurrency_limit": GROUP_LIMITS[METRICS]}
MAPS_EVENT = {"concurrency_id": MAPS, "concurrency_limit": GROUP_LIMITS[MAPS]}
UPLOADS_EVENT = {"concurrency_id": UPLOADS, "concurrency_limit": GROUP_LIMITS[UPLOADS]}
# Knob-driven refreshes: private, and only the newest pending call runs (no queued storm).
QUIET = {"api_visibility": "private", "trigger_mode": "always_last"}
QUIET_EVENT = {**QUIET, **METRICS_EVENT}  # the knob refresh: metrics (and the columns)
QUIET_MAPS_EVENT = {**QUIET, **MAPS_EVENT}  # the Subspaces tab's redraw
PROGRESS = gr.Progress()  # Gradio passes each call its own tracker in place of this default


def user_errors(fn: Callable) -> Callable:
    """Run a handler under inference mode; refusals (bad knobs, unknown ids, undecodable
    files) become a gr.Error with the reason. The signature stays visible to Gradio."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            with torch.inference_mode():
                return fn(*args, **kwargs)
        except (KnobError, VideoDecodeError) as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapped


def video_url(path: Path) -> str:
    """Gradio's file route for a file under ``allowed_paths`` (relative to the page)."""
    return "gradio_api/file=" + quote(str(path))


def first_caption(explorer: Explorer, video_id: str) -> str:
    """A gallery video's first caption, or ``""`` (shown beside results and map points)."""
    captions = explorer.record(video_id).captions
    return captions[0] if captions else ""


def progress_callback(progress: gr.Progress) -> Callable[[float, str], None]:
    """The explorer's ``progress(fraction, message)`` on Gradio's tracker."""
    return lambda fraction, message: progress(fraction, desc=message)
