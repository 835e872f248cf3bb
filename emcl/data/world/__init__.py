"""The demo world: a seeded, procedural corpus of short captioned clips in the MSR-VTT layout.

Two versions stay buildable (``emcl.paths.DEMO_WORLDS``, docs/design.md "The demo world"):
``v1`` (one group, one motion, an optional second-phase event) and ``v2`` (events in sequence,
distractors, textured and moving backgrounds, captions of varying completeness; the app's).
``common`` holds what both share, ``build`` the one pipeline that writes either, ``pretrain``
v2's frame-phrase pretraining corpus.

Layout written under ``out``::

    MSRVTT_data.json           {"videos": [...], "sentences": [{"video_id", "caption", "sen_id"}]}
    MSRVTT_train.9k.csv        video_id            (train ids; the name the reader expects)
    MSRVTT_JSFUSION_test.csv   key,vid_key,video_id,sentence   (one caption per test clip)
    videos/<id>.mp4            H.264 yuv420p, +faststart, 128x128, 12 fps
    frame_concepts.json        per clip, per frame of the 12-frame uniform sampler: concepts
    lexicon.json               caption word -> concept ("color:red", "motion:left", ...)
    caption_facts.json         v2: what each caption states (the ambiguity ceiling's input)
    world.json                 the parameters the world was built with (written last)

Ids: train ``video0 .. video{N-1}``, test ``video{N} .. video{N+M-1}``.
Determinism: clip specs and captions come from one ``numpy.random.default_rng`` stream per
clip, annotation files are written with sorted keys, and x264 runs single-threaded, so the same
seed gives byte-identical files whatever the worker count (tests/test_world_golden.py).

Build one with ``python -m emcl world --out DIR`` (emcl/cli/world.py) or :func:`ensure_world`.
"""

from emcl.data.world import v1, v2
from emcl.data.world.build import build_world, ensure_demo_world, ensure_world
from emcl.data.world.common import (
    COLORS,
    FPS,
    LEXICON,
    MOTIONS,
    SAMPLER_FRAMES,
    SHAPES,
    SIZE,
    VERSIONS,
    VIDEO_SPLITS,
    built_with,
    caption_words,
    rendered_splits,
    video_splits,
    world_is_complete,
    world_meta,
)

__all__ = [
    "COLORS",
    "FPS",
    "LEXICON",
    "MOTIONS",
    "SAMPLER_FRAMES",
    "SHAPES",
    "SIZE",
    "VERSIONS",
    "VIDEO_SPLITS",
    "build_world",
    "built_with",
    "caption_words",
    "ensure_demo_world",
    "ensure_world",
    "rendered_splits",
    "v1",
    "v2",
    "video_splits",
    "world_is_complete",
    "world_meta",
]
