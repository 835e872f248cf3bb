"""What a model's wrong top-1 clips get wrong, attribute by attribute (world v2's ground truth).

For each test caption (the first of its clip, as in the test CSV) the top-1 clip of the t2v
ranking is either its own clip, another clip the caption also describes (the world's ambiguity:
no model can tell them apart), or a clip it does not describe. For the last kind, each stated
event is compared with the top-1 clip's closest event (the one agreeing on most attributes) and
every attribute that differs is counted. The counts say where the model is weak: a model that
cannot read motion off frames confuses clips that differ only in how their shapes move.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from emcl.data.world.v2 import facts_match

ATTRIBUTES = ("color", "shape", "size", "count", "motion")  # the order of Event.fact()


def world_truth(world: str | Path, video_ids: list[str] | tuple[str, ...]) -> tuple[list, list]:
    """(stated facts of each clip's test caption, facts of each clip's events), in the order of
    ``video_ids``; from the world's ``caption_facts.json`` and ``frame_concepts.json``."""
    root = Path(world)
    captions = json.loads((root / "caption_facts.json").read_text())
    clips = json.loads((root / "frame_concepts.json").read_text())["clips"]
    stated = [captions[v][0] for v in video_ids]  # the test CSV holds each clip's first caption
    shown = [
        [[e[a] for a in ATTRIBUTES] for e in clips[v]["spec"]["events"]] for v in video_ids
    ]  # fmt: skip
    return stated, shown


def _closest(fact: list, events: list[list]) -> list:
    return max(events, key=lambda e: sum(f is None or f == g for f, g in zip(fact, e, strict=True)))


def top1_errors(sim: torch.Tensor, stated: list[list], shown: list[list]) -> dict[str, Any]:
    """``sim`` is ``[Nt, Nv]`` with caption ``i`` belonging to clip ``i``. Returns the shares (%)
    of captions whose top-1 is their own clip, another clip they describe, or a clip they do not
    describe, and per attribute the mean number of stated events it gets wrong per wrong top-1."""
    if len({sim.shape[0], sim.shape[1], len(stated), len(shown)}) != 1:
        raise ValueError(f"need one caption per clip: sim {tuple(sim.shape)}, {len(stated)} clips")
    top1 = sim.argmax(dim=1).tolist()
    own = described = 0
    wrong = dict.fromkeys(ATTRIBUTES, 0)
    for i, j in enumerate(top1):
        if j == i:
            own += 1
        elif facts_match(stated[i], shown[j]):
            described += 1
        else:
            for fact in stated[i]:
                closest = _closest(fact, shown[j])
                for name, f, g in zip(ATTRIBUTES, fact, closest, strict=True):
                    wrong[name] += f is not None and f != g
    n = len(top1)
    n_wrong = n - own - described
    return {
        "own_clip": 100 * own / n,
        "another_described_clip": 100 * described / n,
        "undescribed_clip": 100 * n_wrong / n,
        "wrong_per_miss": {a: (wrong[a] / n_wrong if n_wrong else 0.0) for a in ATTRIBUTES},
    }


__all__ = ["ATTRIBUTES", "top1_errors", "world_truth"]
