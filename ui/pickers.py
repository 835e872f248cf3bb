"""Video pickers that scale: a searchable box that suggests matching ids (by id, then by
caption) as the user types, instead of a dropdown listing every video in the gallery."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import gradio as gr

from emcl.explorer.knobs import KnobError
from emcl.explorer.service import Explorer
from emcl.explorer.snapshot import Snapshot

MAX_SUGGESTIONS = 20
LABEL_CHARS = 60
# id(snapshot) -> search index; an entry goes when its snapshot is collected (snapshots are
# not hashable: they hold dicts).
_INDEX: dict[int, tuple[list[str], list[str], list[str]]] = {}
_INDEX_LOCK = threading.Lock()


def _search_index(snap: Snapshot) -> tuple[list[str], list[str], list[str]]:
    """Ids, lower-cased ids and lower-cased captions of a snapshot (built once per snapshot)."""
    key = id(snap)
    with _INDEX_LOCK:
        index = _INDEX.get(key)
        if index is None:
            ids = [r.video_id for r in snap.records]
            lowered = [i.lower() for i in ids]
            captions = [" | ".join(r.captions).lower() for r in snap.records]
            index = _INDEX[key] = (ids, lowered, captions)
            weakref.finalize(snap, _INDEX.pop, key, None)
    return index


def suggest(explorer: Explorer, text: object, limit: int = MAX_SUGGESTIONS) -> list[str]:
    """Up to ``limit`` video ids matching ``text``: the exact id, then ids starting with it,
    then ids containing it, then videos whose captions contain it (gallery order within
    each group). Empty text gives the first videos."""
    ids, lowered, captions = _search_index(explorer.snapshot)
    needle = str(text or "").strip().lower()
    if not needle:
        return ids[:limit]
    found: dict[str, None] = {}
    tests = (
        lambda i: lowered[i] == needle,
        lambda i: lowered[i].startswith(needle),
        lambda i: needle in lowered[i],
        lambda i: needle in captions[i],
    )
    for test in tests:
        for i in range(len(ids)):
            if len(found) >= limit:
                return list(found)
            if test(i):
                found[ids[i]] = None
    return list(found)


def choices(explorer: Explorer, ids: list[str]) -> list[tuple[str, str]]:
    """``(label, id)`` pairs: the id and the start of its first caption."""
    out = []
    for video_id in ids:
        captions = explorer.record(video_id).captions
        caption = captions[0] if captions else ""
        if len(caption) > LABEL_CHARS:
            caption = caption[: LABEL_CHARS - 1] + "…"
        out.append((f"{video_id} — {caption}" if caption else video_id, video_id))
    return out


def resolve(explorer: Explorer, text: object) -> str:
    """The gallery id ``text`` names; anything else is refused with the nearest ids."""
    video_id = str(text or "").strip()
    if video_id in explorer.snapshot.position:
        return video_id
    if not video_id:
        raise KnobError("pick a video: type part of its id or caption and choose a suggestion")
    near = suggest(explorer, video_id, 5)
    hint = f"; did you mean {', '.join(near)}?" if near else ": pick one from the suggestions"
    raise KnobError(f"unknown video id {video_id[:80]!r}{hint}")


def picker(explorer: Explorer, value: str | None, **options: Any) -> gr.Dropdown:
    """A text box with suggestions (a Dropdown that accepts typing, fed by :func:`wire`)."""
    first = suggest(explorer, "")
    return gr.Dropdown(
        choices(explorer, first),
        value=value,
        allow_custom_value=True,
        filterable=True,
        info="type part of an id or a caption; suggestions follow",
        **options,
    )


def wire(box: gr.Dropdown, explorer: Explorer) -> None:
    """Refresh the suggestions as the user types."""

    def refresh(typed: gr.KeyUpData) -> Any:
        return gr.update(choices=choices(explorer, suggest(explorer, typed.input_value)))

    box.key_up(
        refresh,
        None,
        box,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
        trigger_mode="always_last",
    )


__all__ = ["MAX_SUGGESTIONS", "choices", "picker", "resolve", "suggest", "wire"]
