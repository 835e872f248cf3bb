"""Per-frame ground truth of the demo world: which concepts each sampled frame shows
(``frame_concepts.json``) and which concept each word names (``lexicon.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class GroundTruth:
    """Per-frame concepts (demo world): ``frame_concepts.json`` and ``lexicon.json``."""

    concepts: dict[str, list[list[str]]]  # video id -> per sampled frame, the visible concepts
    lexicon: dict[str, str]  # word -> concept
    num_frames: int

    @classmethod
    def load(cls, root: Path) -> GroundTruth | None:
        concepts_file, lexicon_file = root / "frame_concepts.json", root / "lexicon.json"
        if not (concepts_file.is_file() and lexicon_file.is_file()):
            return None
        data = json.loads(concepts_file.read_text())
        clips = {vid: clip["concepts"] for vid, clip in data["clips"].items()}
        return cls(clips, json.loads(lexicon_file.read_text()), int(data["sampler"]["num_frames"]))
