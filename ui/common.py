"""What every tab shares: error mapping, the model concurrency group, file URLs."""

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
CONCURRENCY = 2  # model-touching events at once (torch already uses every core per request)
MODEL = "model"  # the one concurrency id shared by every event that touches a model
MODEL_EVENT = {"concurrency_id": MODEL, "concurrency_limit": CONCURRENCY}
# Knob-driven refreshes: private, and only the newest pending call runs (no queued storm).
QUIET_EVENT = {"api_visibility": "private", "trigger_mode": "always_last", **MODEL_EVENT}
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
