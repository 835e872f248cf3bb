"""Demo world v2: clips with what real clips have and captions leave out.

Compared with v1 (emcl/data/world/v1.py), a clip has

- one to three **events in sequence**: each event is a group of identical shapes (colour, shape,
  size, count) doing one motion; its group enters when the event starts and leaves when it ends;
- **distractors** the captions never mention: zero to two small shapes drifting across the frame;
- a **textured background** (stripes, checks or dots) that may **scroll**, and **camera motion**
  (a slow pan that moves everything, the events' groups included);
- six captions of **varying completeness**: some name every event in order, some one event, some
  two of three; the size word is sometimes left out.

Same layout and determinism rules as v1. ``frame_concepts.json`` holds per sampled frame the
concepts of the active event (``concepts``, what a caption may name) and, separately, the
distractors' (``distractors``). ``caption_facts.json`` records what each caption states; from it
:func:`ambiguity_ceiling` gives the best expected t2v R@1 any model can reach on the test split
(a caption matches every clip that shows, in order, the events it names).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emcl.data.world.common import (
    BACKGROUNDS,
    CAPTIONS_PER_CLIP,
    COLORS,
    FPS,
    LEXICON,
    MOTION_WORDS,
    MOTIONS,
    SAMPLER_FRAMES,
    SHAPES,
    SIZE,
    Obj,
    WorldGenerator,
    caption_rng,
    draw,
    frame_concepts_file,
    group_objects,
    group_path,
    msrvtt_files,
    pick,
    shade,
    size_of,
    subject,
)
from emcl.fileio import atomic_output
from emcl.video.sampling import uniform_indices
from emcl.video.writing import write_video

VERSION = 2
DISTRACTOR_RADIUS = (5.0, 8.0)  # below the "small" radius (10 px): never a captioned size
TEXTURES = ("stripes", "checks", "dots")


@dataclass(frozen=True)
class Event:
    """One group doing one motion over frames ``[start, end)``."""

    color: str
    shape: str
    size: str
    count: int
    motion: str
    start: int
    end: int
    path: tuple[float, ...]  # motion geometry (common.group_path), over the event's own time

    def fact(self, with_size: bool = True) -> list:
        """What a caption naming this event states (size ``None`` when left out)."""
        return [self.color, self.shape, self.size if with_size else None, self.count, self.motion]


@dataclass(frozen=True)
class Distractor:
    color: str
    shape: str
    radius: float
    x: float  # position at frame 0 (scene coordinates)
    y: float
    vx: float  # px per frame, wrapping around the canvas
    vy: float


@dataclass(frozen=True)
class ClipSpecV2:
    video_id: str
    split: str
    num_frames: int
    events: tuple[Event, ...]
    distractors: tuple[Distractor, ...]
    background: int  # index into common.BACKGROUNDS
    texture: str
    texture_period: float  # px
    texture_angle: float  # rad (stripes)
    texture_contrast: float  # intensity amplitude
    scroll: tuple[float, float]  # texture velocity, px per frame (moving background)
    camera: tuple[float, float]  # total pan over the clip, px (moves everything)

    def event_at(self, frame: int) -> Event:
        return next(e for e in self.events if e.start <= frame < e.end)


# ---------------------------------------------------------------------------- specs


def _event(rng: np.random.Generator, start: int, end: int, previous: Event | None) -> Event:
    """One event's group and path; differs from the previous event's group."""
    for _ in range(100):
        color = str(rng.choice(list(COLORS)))
        shape = str(rng.choice(SHAPES))
        motions = [m for m in MOTIONS if not (m == "spin" and shape == "circle")]
        motion = str(rng.choice(motions))
        forced = {"grow": "small", "shrink": "large"}.get(motion)
        size = forced or str(rng.choice(["small", "large"]))
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        if previous is None or (color, shape, count, motion) != (
            previous.color, previous.shape, previous.count, previous.motion
        ):  # fmt: skip
            break
    _, path = group_path(rng, count, motion, size)
    return Event(color, shape, size, count, motion, start, end, tuple(round(p, 3) for p in path))


def _distractor(rng: np.random.Generator) -> Distractor:
    speed, heading = rng.uniform(0.3, 1.2), rng.uniform(0, 2 * math.pi)
    return Distractor(
        str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)),
        round(float(rng.uniform(*DISTRACTOR_RADIUS)), 3),
        round(float(rng.uniform(0, SIZE)), 3), round(float(rng.uniform(0, SIZE)), 3),
        round(speed * math.cos(heading), 3), round(speed * math.sin(heading), 3),
    )  # fmt: skip


def make_spec(seed: int, index: int, video_id: str, split: str, stream: int = 0) -> ClipSpecV2:
    """One clip's spec from its own RNG stream (``stream`` 1: the pretraining corpus,
    emcl/data/world/pretrain.py)."""
    rng = np.random.default_rng([seed, index, VERSION, stream])
    n_events = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    n = int(rng.integers(30 + 6 * n_events, 37 + 8 * n_events))  # 3-4 s, 4-5.25 s with 3 events
    weights = rng.uniform(0.8, 1.2, n_events)
    cuts = np.round(np.cumsum(weights) / weights.sum() * n).astype(int)
    bounds = [0, *cuts.tolist()]
    events: list[Event] = []
    for i in range(n_events):
        events.append(_event(rng, bounds[i], bounds[i + 1], events[-1] if events else None))
    n_distractors = int(rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3]))
    distractors = tuple(_distractor(rng) for _ in range(n_distractors))
    moving = rng.random() < 0.5
    scroll = tuple(round(float(v), 3) for v in rng.uniform(-1.0, 1.0, 2)) if moving else (0.0, 0.0)
    panning = rng.random() < 0.5
    camera = tuple(round(float(v), 3) for v in rng.uniform(-8.0, 8.0, 2)) if panning else (0.0, 0.0)
    return ClipSpecV2(
        video_id, split, n, tuple(events), distractors,
        int(rng.integers(len(BACKGROUNDS))), str(rng.choice(TEXTURES)),
        round(float(rng.uniform(8, 20)), 3), round(float(rng.uniform(0, math.pi)), 3),
        round(float(rng.uniform(10, 30)), 3), scroll, camera,  # type: ignore[arg-type]
    )  # fmt: skip


def make_specs(n_train: int, n_test: int, seed: int) -> list[ClipSpecV2]:
    """All clip specs (no redraws: clips may share descriptions; the ceiling accounts for it)."""
    return [
        make_spec(seed, i, f"video{i}", "train" if i < n_train else "test")
        for i in range(n_train + n_test)
    ]


# ---------------------------------------------------------------------------- rendering


def _camera(spec: ClipSpecV2, frame: int) -> tuple[float, float]:
    u = frame / max(spec.num_frames - 1, 1)
    return spec.camera[0] * u, spec.camera[1] * u


def objects(spec: ClipSpecV2, frame: int) -> list[Obj]:
    """Scene-coordinate objects of one frame: distractors (role "distractor"), then the active
    event's group (role "main")."""
    out = []
    for d in spec.distractors:
        x = (d.x + d.vx * frame) % SIZE
        y = (d.y + d.vy * frame) % SIZE
        out.append(Obj(d.shape, d.color, x, y, d.radius, 0.0, "distractor"))
    e = spec.event_at(frame)
    u = (frame - e.start) / max(e.end - e.start - 1, 1)
    return out + group_objects(
        shape=e.shape, color=e.color, size=e.size, count=e.count, motion=e.motion,
        path=e.path, u=u, elapsed=frame - e.start,
    )  # fmt: skip


def _offset(spec: ClipSpecV2, frame: int) -> tuple[int, int]:
    """Where the background window starts in texture coordinates (whole pixels): the camera
    moves it, and a moving background scrolls it."""
    cam = _camera(spec, frame)
    return round(cam[0] - spec.scroll[0] * frame), round(cam[1] - spec.scroll[1] * frame)


def _texture(spec: ClipSpecV2, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """The texture value in [-1, 1] on the integer grid ``[y0, y0 + height) x [x0, x0 + width)``."""
    y, x = np.mgrid[y0 : y0 + height, x0 : x0 + width].astype(np.float32)
    p = spec.texture_period
    if spec.texture == "stripes":
        c, s = math.cos(spec.texture_angle), math.sin(spec.texture_angle)
        return np.sin(2 * math.pi * (x * c + y * s) / p)
    if spec.texture == "checks":
        return ((np.floor(x / p) + np.floor(y / p)) % 2) * 2 - 1
    return (np.sin(2 * math.pi * x / p) * np.sin(2 * math.pi * y / p) > 0.5) * 2.0 - 1


@functools.lru_cache(maxsize=8)
def _canvas(spec: ClipSpecV2) -> tuple[np.ndarray, int, int]:
    """The texture over every frame's window at once (computed once per clip), with its origin."""
    offsets = np.array([_offset(spec, f) for f in range(spec.num_frames)])
    (x0, y0), (x1, y1) = offsets.min(0), offsets.max(0)
    return _texture(spec, int(x0), int(y0), SIZE + int(x1 - x0), SIZE + int(y1 - y0)), x0, y0


def background(spec: ClipSpecV2, frame: int, whole_clip: bool = True) -> np.ndarray:
    """Textured background ``[SIZE, SIZE, 3]`` float (the same pixels either way; the clip's
    canvas is faster when every frame is rendered)."""
    ox, oy = _offset(spec, frame)
    if whole_clip:
        canvas, x0, y0 = _canvas(spec)
        value = canvas[oy - y0 : oy - y0 + SIZE, ox - x0 : ox - x0 + SIZE]
    else:
        value = _texture(spec, ox, oy, SIZE, SIZE)
    base = np.array(BACKGROUNDS[spec.background], np.float32)
    return np.clip(base * shade() + (spec.texture_contrast * value)[..., None], 0, 255)


def render_frame(spec: ClipSpecV2, frame: int, whole_clip: bool = True) -> np.ndarray:
    """One RGB frame ``[SIZE, SIZE, 3]`` uint8 (objects drawn at scene position - camera)."""
    img = background(spec, frame, whole_clip)
    return draw(img, objects(spec, frame), camera=_camera(spec, frame))


def frame_concepts(spec: ClipSpecV2, frame: int) -> tuple[list[str], list[str]]:
    """(concepts of the active group, concepts of the distractors) in one frame, sorted."""
    main: set[str] = set()
    other: set[str] = set()
    e = spec.event_at(frame)
    for o in objects(spec, frame):
        if o.role == "main":
            main |= {f"color:{o.color}", f"shape:{o.shape}", f"size:{size_of(o.r)}"}
        else:
            other |= {f"color:{o.color}", f"shape:{o.shape}"}
    main |= {f"count:{e.count}", f"motion:{e.motion}"}
    return sorted(main), sorted(other)


def render_clip(spec: ClipSpecV2, path: Path) -> None:
    """Render and encode one clip (atomic: a reader never sees a half-written file)."""
    with atomic_output(path) as tmp:
        write_video(tmp, (render_frame(spec, i) for i in range(spec.num_frames)), FPS, crf=20)


# ---------------------------------------------------------------------------- captions


def _phrase(rng: np.random.Generator, e: Event, with_size: bool) -> tuple[str, str]:
    """(subject + verb, subject + base verb) for one event."""
    subj = subject(rng, count=e.count, size=e.size, color=e.color, shape=e.shape,
                   with_size=with_size)  # fmt: skip
    plural = e.count > 1
    return f"{subj} {pick(rng, MOTION_WORDS[e.motion])[plural]}", (
        f"{subj} {pick(rng, MOTION_WORDS[e.motion])[1]}"
    )


def _mentions(rng: np.random.Generator, n_events: int) -> list[int]:
    """Which events one caption names, in order: all, one, or (of three) two in a row."""
    r = rng.random()
    if n_events == 1 or r < 0.45:
        return list(range(n_events))
    if r < 0.8 or n_events == 2:
        return [int(rng.integers(n_events))]
    first = int(rng.integers(n_events - 1))
    return [first, first + 1]


def caption_with_facts(spec: ClipSpecV2, rng: np.random.Generator) -> tuple[str, list[list]]:
    """One caption and what it states: the named events' facts, in order."""
    mentioned = _mentions(rng, len(spec.events))
    sizes = [bool(rng.random() < 0.6) for _ in mentioned]
    parts = [_phrase(rng, spec.events[i], s) for i, s in zip(mentioned, sizes, strict=True)]
    facts = [spec.events[i].fact(s) for i, s in zip(mentioned, sizes, strict=True)]
    if len(parts) == 1:
        text, base = parts[0]
        caption = pick(rng, [text, f"in this video {text}", f"at some point {text}",
                             f"we see {base}", f"a clip where {text}"])  # fmt: skip
    elif len(parts) == 2:
        (a, _), (b, _) = parts
        caption = pick(rng, [f"{a}, then {b}", f"first {a}; after that {b}",
                             f"{a} and then {b}", f"in this clip {a}, later {b}"])  # fmt: skip
    else:
        (a, _), (b, _), (c, _) = parts
        caption = pick(rng, [f"first {a}, then {b}, and finally {c}",
                             f"{a}, then {b}, then {c}"])  # fmt: skip
    return caption, facts


def captions(spec: ClipSpecV2, seed: int = 0, n: int = CAPTIONS_PER_CLIP) -> list[tuple[str, list]]:
    """``n`` distinct captions with their facts."""
    rng = caption_rng(seed, spec.video_id, VERSION)
    out: list[tuple[str, list]] = []
    for _ in range(200):
        if len(out) >= n:
            break
        caption, facts = caption_with_facts(spec, rng)
        if caption not in (c for c, _ in out):
            out.append((caption, facts))
    return out


# ---------------------------------------------------------------------------- ground truth


def matches(facts: list[list], spec: ClipSpecV2) -> bool:
    """Whether ``spec`` shows the stated events in this order (a size of ``None`` is any)."""
    return facts_match(facts, [e.fact() for e in spec.events])


def facts_match(facts: list[list], shown: list[list]) -> bool:
    """Whether the events ``shown`` (their facts, in order) include the stated ``facts`` in this
    order (a stated size of ``None`` is any)."""
    position = 0
    for fact in facts:
        while position < len(shown):
            e = shown[position]
            position += 1
            if all(f is None or f == g for f, g in zip(fact, e, strict=True)):
                break
        else:
            return False
    return True


def ambiguity_ceiling(specs: list[ClipSpecV2], facts: list[list[list]]) -> float:
    """Expected t2v R@1 (%) of a model that knows everything: caption ``i`` (of clip ``i``) ranks
    every clip it matches first, in random order, so its R@1 is ``1 / #matches``."""
    having: dict[tuple, set[int]] = {}  # (colour, shape, count, motion) -> clips with it
    for row, spec in enumerate(specs):
        for e in spec.events:
            having.setdefault((e.color, e.shape, e.count, e.motion), set()).add(row)
    total = 0.0
    for own, stated in zip(specs, facts, strict=True):
        rows = set.intersection(*(having.get((f[0], f[1], f[3], f[4]), set()) for f in stated))
        hits = sum(matches(stated, specs[row]) for row in rows)
        if not matches(stated, own):
            raise AssertionError(f"{own.video_id}: its own caption does not match it")
        total += 1.0 / hits
    return 100.0 * total / len(specs)


def test_ceiling(specs: list[ClipSpecV2], seed: int) -> float:
    """The ambiguity ceiling of the test split with its one caption per clip (the first)."""
    tests = [s for s in specs if s.split == "test"]
    return ambiguity_ceiling(tests, [captions(s, seed)[0][1] for s in tests])


# ---------------------------------------------------------------------------- the world


def annotations(specs: list[ClipSpecV2], seed: int) -> dict[str, object]:
    """The annotation files' contents (v1's files plus ``caption_facts.json``)."""
    caps = {s.video_id: captions(s, seed) for s in specs}
    clips = {}
    for s in specs:
        idx = uniform_indices(s.num_frames, SAMPLER_FRAMES)
        seen = [frame_concepts(s, i) for i in idx]
        clips[s.video_id] = {
            "num_frames": s.num_frames,
            "indices": idx,
            "concepts": [main for main, _ in seen],
            "distractors": [other for _, other in seen],
            "event": [next(j for j, e in enumerate(s.events) if e.start <= i < e.end) for i in idx],
            "spec": asdict(s),
        }
    facts = {s.video_id: [f for _, f in caps[s.video_id]] for s in specs}
    caption_texts = {v: [c for c, _ in pairs] for v, pairs in caps.items()}
    return msrvtt_files(specs, caption_texts, seed=seed, version=VERSION) | {
        "frame_concepts.json": frame_concepts_file(clips),
        "caption_facts.json": facts,
        "lexicon.json": dict(sorted(LEXICON.items())),
    }


def _ceiling_meta(specs: list[ClipSpecV2], seed: int) -> dict[str, object]:
    """world.json's ``ceiling_t2v_R1``: the test split's ambiguity ceiling (None without one)."""
    has_test = any(s.split == "test" for s in specs)
    return {"ceiling_t2v_R1": round(test_ceiling(specs, seed), 2) if has_test else None}


GENERATOR = WorldGenerator(
    version=VERSION,
    make_specs=make_specs,
    render_clip=render_clip,
    annotations=annotations,
    by_split=True,  # the app needs only the test split's videos, a quarter of the rendering
    extra_meta=_ceiling_meta,
)


__all__ = [
    "GENERATOR",
    "TEXTURES",
    "VERSION",
    "ClipSpecV2",
    "Distractor",
    "Event",
    "ambiguity_ceiling",
    "annotations",
    "background",
    "captions",
    "facts_match",
    "frame_concepts",
    "make_spec",
    "make_specs",
    "matches",
    "objects",
    "render_clip",
    "render_frame",
    "test_ceiling",
]
