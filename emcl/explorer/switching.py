"""Switching the served model pair: any checkpoint of the catalog as the Base side, a jointly
trained EMCL checkpoint (or none: EMCL at inference on the base) as the EMCL side.

A switch loads the two encoders and indexes the gallery's videos (uploads included) with them
on a worker below the searches' priority while the current pair keeps serving; when both
galleries are ready it publishes one new snapshot with the new models in one assignment
(:meth:`SnapshotStore.replace_models`, the next version, so every cache keyed by the version
misses). One switch at a time: a second is refused as busy. A failure (a checkpoint refused on
load, a decoder error, out of memory) leaves the current pair serving and is reported with its
reason until the next switch. Uploads added during a switch are indexed with the new models
under the store's write lock, just before the new snapshot is published.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emcl import paths
from emcl.data.datasets import VideoRecord
from emcl.data.gallery import add_videos
from emcl.explorer.checkpoints import JOINT, NONE, CatalogEntry, ModelSources, scan
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import KnobError
from emcl.explorer.latest import JobState
from emcl.explorer.store import ModelPair

# Decoding and encoding one clip with one demo model takes about 0.03 s of one CPU core
# (1,000 clips, both models: about 30 s on 2 cores); the estimate the status line shows.
SECONDS_PER_CLIP_CORE = 0.03
SERVING = "the current pair keeps serving"


@dataclass(frozen=True)
class SwitchStatus:
    """The served pair and the running (or last) switch's progress or failure."""

    running: bool
    fraction: float
    message: str
    error: str | None
    base: str  # the served pair's checkpoints, in words
    emcl: str
    version: int  # the snapshot's: it changes when a switch publishes

    def line(self) -> str:
        """The status line under the pickers."""
        if self.running:
            return f"**switching** ({self.fraction:.0%}): {self.message}"
        if self.error:
            return f"**the last switch failed**, the pair below still serves: {self.error}"
        return self.message

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def shown(path: Path | None, none: str = NONE) -> str:
    """A checkpoint folder in words: relative to the repository when inside it."""
    if path is None:
        return none
    try:
        return Path(path).resolve().relative_to(paths.REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def sources(ctx: ServiceContext) -> ModelSources:
    """The explorer's model settings (an explorer built by hand: the shipped folder only)."""
    return ctx.models if ctx.models is not None else ModelSources()


def catalog(ctx: ServiceContext) -> list[CatalogEntry]:
    """Every checkpoint found and every folder refused, with its reason."""
    return scan(sources(ctx), ctx.caches.checkpoints)


def _pick(entries: dict[str, CatalogEntry], name: object, side: str) -> CatalogEntry:
    """The catalog entry named ``name`` (never a path from the request), if it may be used."""
    if not isinstance(name, str) or name not in entries:
        raise KnobError(
            f"{side}: no checkpoint named {str(name)[:120]!r} in the catalog (press Refresh)"
        )
    entry = entries[name]
    if not entry.ok:
        raise KnobError(f"{side}: {name} is refused: {entry.reason}")
    return entry


def _estimate(ctx: ServiceContext, clips: int, models: int) -> str:
    device = ctx.snapshot.base.encoder.device
    where = f"{models} model{'s' if models > 1 else ''}"
    if device.type != "cpu":
        return f"re-indexing {clips:,} clips with {where} on the {device.type.upper()}; {SERVING}"
    cores = os.cpu_count() or 1
    seconds = clips * models * SECONDS_PER_CLIP_CORE / cores
    return (
        f"re-indexing {clips:,} clips with {where}, about {max(1, round(seconds)):,} s on "
        f"{cores} cores (less where their features are cached); {SERVING}"
    )


def switch(ctx: ServiceContext, base: object, emcl: object = NONE) -> SwitchStatus:
    """Start switching to the pair (``base``, ``emcl``), both catalog names (``emcl`` "none":
    no jointly trained model); returns at once with the switch's status. Refused, with the
    reason, while another switch runs or for a name the catalog does not offer."""
    settings = sources(ctx)
    if settings.build is None:
        raise KnobError("switching models needs the app's start-up settings (load_explorer)")
    entries = {e.name: e for e in catalog(ctx)}
    base_entry = _pick(entries, base, "Base side")
    emcl_entry = None if emcl in (None, "", NONE) else _pick(entries, emcl, "EMCL side")
    if emcl_entry is not None and emcl_entry.kind != JOINT:
        raise KnobError(
            f"EMCL side: {emcl_entry.name} is a {emcl_entry.kind} checkpoint; pick a jointly "
            f"trained EMCL checkpoint, or {NONE!r} for EMCL at inference on the base"
        )
    slot = ctx.store.switching
    if not slot.lock.acquire(blocking=False):
        state = slot.state or JobState()
        raise KnobError(
            f"busy: a switch is running ({state.fraction:.0%}, {state.message}); "
            "try again when it is done"
        )
    try:
        records = list(ctx.snapshot.base.gallery.records)
        target = (base_entry.path, emcl_entry.path if emcl_entry else None)
        estimate = _estimate(ctx, len(records), 1 if emcl_entry is None else 2)
        slot.target, slot.state = target, JobState(0.0, estimate)
        slot.worker.submit(lambda: _run(ctx, settings, target, records, estimate))
    except BaseException:
        slot.target = None
        slot.lock.release()
        raise
    return switch_status(ctx)


def _run(
    ctx: ServiceContext,
    settings: ModelSources,
    target: tuple[Path, Path | None],
    records: Sequence[VideoRecord],
    estimate: str,
) -> None:
    """The switch itself, on the switch worker; releases the slot however it ends."""
    slot = ctx.store.switching
    start = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        slot.state = JobState(0.9 * fraction, f"{message}; {estimate}")

    try:
        assert settings.build is not None
        # Built as at start-up (the worker runs under inference mode; the encoders must not
        # be inference tensors built there).
        with torch.inference_mode(False):
            pair = settings.build(target[0], target[1], records, report)
            slot.state = JobState(0.92, f"publishing: encoding the caption bank; {SERVING}")
            _publish(ctx, pair, records)
        seconds = time.perf_counter() - start
        words = f"{shown(target[0])} + {shown(target[1])}"
        slot.state = JobState(1.0, f"switched to {words} in {seconds:.1f} s")
    except Exception as error:  # any failure keeps the current pair serving
        slot.state = JobState(1.0, "failed", f"{type(error).__name__}: {error}")
    finally:
        slot.target = None
        slot.lock.release()


def _publish(ctx: ServiceContext, pair: ModelPair, records: Sequence[VideoRecord]) -> None:
    """Publish ``pair``'s snapshot; videos uploaded since the switch began are indexed with
    the new models first (under the write lock, so no upload slips in between)."""
    with ctx.store.write_lock:
        known = {r.video_id for r in records}
        added = [r for r in ctx.snapshot.base.gallery.records if r.video_id not in known]
        if added:
            pair = dataclasses.replace(
                pair,
                base_gallery=add_videos(pair.base_gallery, added, pair.base_encoder),
                emcl_gallery=(
                    add_videos(pair.emcl_gallery, added, pair.emcl_encoder)
                    if pair.emcl_encoder is not None and pair.emcl_gallery is not None
                    else None
                ),
            )
        ctx.store.replace_models(pair)


def switch_status(ctx: ServiceContext) -> SwitchStatus:
    """The served pair and the running or last switch (pollable; never waits)."""
    slot = ctx.store.switching
    state = slot.state
    base, emcl = slot.pair
    if state is None:
        state = JobState(1.0, f"serving {shown(base, 'a --model backbone')} + {shown(emcl)}")
    return SwitchStatus(
        running=slot.lock.locked(),
        fraction=state.fraction,
        message=state.message,
        error=state.error,
        base=shown(base, "a --model backbone"),
        emcl=shown(emcl),
        version=ctx.snapshot.version,
    )


__all__ = ["SwitchStatus", "catalog", "shown", "sources", "switch", "switch_status"]
