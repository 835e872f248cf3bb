"""The demo world: a seeded, procedural corpus of short captioned clips in the MSR-VTT layout.

Each clip shows one to three identical shapes (colour, shape, size) doing one motion on a plain
light background, optionally followed by a second-phase event: a new shape *appears*, the
shapes *turn* another colour, or they *disappear*. Every clip gets six paraphrased captions
(synonyms, templates, word order) and per-frame ground truth of what is visible.

Layout written under ``out``::

    MSRVTT_data.json           {"videos": [...], "sentences": [{"video_id", "caption", "sen_id"}]}
    MSRVTT_train.9k.csv        video_id            (train ids; the name the reader expects)
    MSRVTT_JSFUSION_test.csv   key,vid_key,video_id,sentence   (one caption per test clip)
    videos/<id>.mp4            H.264 yuv420p, +faststart, 128x128, 12 fps, 2-4 s
    frame_concepts.json        per clip, per frame of the 12-frame uniform sampler: concepts
    lexicon.json               caption word -> concept ("color:red", "motion:left", ...)
    world.json                 the parameters the world was built with

Ids: train ``video0 .. video{N-1}``, test ``video{N} .. video{N+M-1}``.
Determinism: clip specs and captions come from ``numpy.random.default_rng([seed, i])`` per clip,
annotation files are written with sorted keys, and x264 runs single-threaded, so the same seed
gives byte-identical files whatever the worker count.

Build one with ``python -m emcl world --out DIR`` (emcl/cli/world.py) or :func:`ensure_world`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emcl import paths
from emcl.fileio import atomic_output, atomic_write, atomic_write_json
from emcl.video.sampling import uniform_indices
from emcl.video.writing import write_video

VERSION = 1  # this module's world; v2 is emcl/data/world_v2.py
VERSIONS = (1, 2)
VIDEO_SPLITS = ("test", "train")  # the splits whose videos a world can hold (world.json "splits")
SIZE = 128  # canvas side (px)
FPS = 12
SAMPLER_FRAMES = 12  # frame_concepts.json describes uniform_indices(n, 12)
CAPTIONS_PER_CLIP = 6

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (230, 205, 25),
    "green": (35, 160, 60),
    "blue": (35, 85, 215),
    "purple": (135, 55, 185),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
MOTIONS = ("right", "left", "up", "down", "spin", "bounce", "grow", "shrink", "still")
EVENTS = ("none", "appear", "change", "disappear")
RADIUS = {"small": 10.0, "large": 17.0}
BACKGROUNDS = ((238, 238, 236), (244, 239, 224), (226, 234, 244), (232, 242, 232))

# --- vocabulary: every content word maps to exactly one concept (lexicon.json) -------------
COLOR_WORDS = {c: [c] for c in COLORS} | {"red": ["red", "crimson"], "purple": ["purple", "violet"]}
SHAPE_WORDS = {  # (singular, plural)
    "circle": [("circle", "circles"), ("ball", "balls"), ("disk", "disks")],
    "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks")],
    "triangle": [("triangle", "triangles")],
    "star": [("star", "stars")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
    "diamond": [("diamond", "diamonds"), ("rhombus", "rhombuses")],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
COUNT_WORDS = {1: ["a", "one"], 2: ["two", "a pair of"], 3: ["three"]}
MOTION_WORDS = {  # (third person singular, plural)
    "right": [("moves to the right", "move to the right"), ("slides right", "slide right"),
              ("drifts rightward", "drift rightward"), ("heads right", "head right")],
    "left": [("moves to the left", "move to the left"), ("slides left", "slide left"),
             ("drifts leftward", "drift leftward"), ("heads left", "head left")],
    "up": [("moves up", "move up"), ("rises", "rise"), ("floats upward", "float upward"),
           ("climbs", "climb")],
    "down": [("moves down", "move down"), ("falls", "fall"), ("sinks", "sink"),
             ("drops", "drop")],
    "spin": [("spins", "spin"), ("rotates", "rotate"), ("twirls", "twirl"),
             ("spins in place", "spin in place")],
    "bounce": [("bounces", "bounce"), ("hops", "hop"), ("keeps bouncing", "keep bouncing")],
    "grow": [("grows", "grow"), ("gets bigger", "get bigger"), ("expands", "expand"),
             ("grows larger", "grow larger")],
    "shrink": [("shrinks", "shrink"), ("gets smaller", "get smaller"),
               ("contracts", "contract"), ("becomes smaller", "become smaller")],
    "still": [("stays still", "stay still"), ("sits still", "sit still"),
              ("rests motionless", "rest motionless"), ("stands still", "stand still")],
}  # fmt: skip
APPEAR_WORDS = [("appears", "appear"), ("emerges", "emerge"), ("pops into view", "pop into view")]
VANISH_WORDS = [("disappears", "disappear"), ("vanishes", "vanish")]
CHANGE_WORDS = [("turns", "turn"), ("becomes", "become")]

LEXICON: dict[str, str] = {}
for _c, _ws in COLOR_WORDS.items():
    LEXICON.update({w: f"color:{_c}" for w in _ws})
for _s, _ws in SHAPE_WORDS.items():
    for _sing, _plur in _ws:
        LEXICON.update({_sing.split()[-1]: f"shape:{_s}", _plur.split()[-1]: f"shape:{_s}"})
for _z, _ws in SIZE_WORDS.items():
    LEXICON.update({w: f"size:{_z}" for w in _ws})
LEXICON.update({"one": "count:1", "two": "count:2", "pair": "count:2", "three": "count:3"})
_MOTION_KEYWORDS = {
    "right": ["right", "rightward"], "left": ["left", "leftward"],
    "up": ["up", "rises", "rise", "upward", "climbs", "climb"],
    "down": ["down", "falls", "fall", "sinks", "sink", "drops", "drop"],
    "spin": ["spins", "spin", "rotates", "rotate", "twirls", "twirl"],
    "bounce": ["bounces", "bounce", "hops", "hop", "bouncing"],
    "grow": ["grows", "grow", "bigger", "expands", "expand", "larger"],
    "shrink": ["shrinks", "shrink", "smaller", "contracts", "contract"],
    "still": ["still", "motionless"],
}  # fmt: skip
for _m, _ws in _MOTION_KEYWORDS.items():
    LEXICON.update({w: f"motion:{_m}" for w in _ws})
LEXICON.update({w: "event:appear" for pair in APPEAR_WORDS for w in pair if " " not in w})
LEXICON.update({"pops": "event:appear", "pop": "event:appear", "gone": "event:disappear",
                "disappearing": "event:disappear", "vanishing": "event:disappear"})  # fmt: skip
LEXICON.update({w: "event:disappear" for pair in VANISH_WORDS for w in pair})


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip and caption it (a pure function of seed and index)."""

    video_id: str
    split: str
    num_frames: int
    background: int
    color: str
    shape: str
    size: str
    count: int
    motion: str
    event: str  # none | appear | change | disappear
    event_frame: int  # first frame showing the event's result
    new_color: str  # change: the colour after; appear: the new shape's colour
    new_shape: str  # appear only
    new_size: str  # appear only
    path_params: tuple[float, ...]  # motion geometry (see _main_positions)
    new_pos: tuple[float, float]

    def key(self) -> tuple:
        """What captions can express: clips with equal keys are indistinguishable in text."""
        extra = {"none": (), "appear": (self.new_color, self.new_shape, self.new_size),
                 "change": (self.new_color,), "disappear": ()}[self.event]  # fmt: skip
        return (self.color, self.shape, self.size, self.count, self.motion, self.event, *extra)


# ---------------------------------------------------------------------------- specs


def _group_offsets(count: int, motion: str, radius: float) -> list[tuple[float, float]]:
    """(dx, dy) of each object around the group centre: across the motion direction."""
    gap = 2 * radius + 5
    along_y = motion in ("right", "left")
    offs = [(i - (count - 1) / 2) * gap for i in range(count)]
    return [(0.0, o) if along_y else (o, 0.0) for o in offs]


def group_path(
    rng: np.random.Generator, count: int, motion: str, size: str
) -> tuple[list[tuple[float, float]], tuple[float, ...]]:
    """A group's object offsets and its path parameters (see :func:`_centre`), drawn from
    ``rng`` so that the whole group stays inside the frame (world v2 draws its events' paths
    the same way)."""
    rmax = RADIUS["large"] if motion in ("grow", "shrink") else RADIUS[size]
    offs = _group_offsets(count, motion, rmax)
    span_x = max(abs(dx) for dx, _ in offs) + rmax + 2
    span_y = max(abs(dy) for _, dy in offs) + rmax + 2
    lo_x, hi_x, lo_y, hi_y = span_x, SIZE - span_x, span_y, SIZE - span_y
    cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
    travel = float(rng.uniform(0.55, 0.8))
    if motion in ("right", "left"):
        a, b = lo_x + (hi_x - lo_x) * (1 - travel) / 2, hi_x - (hi_x - lo_x) * (1 - travel) / 2
        params: tuple[float, ...] = (a, b, cy) if motion == "right" else (b, a, cy)
    elif motion in ("up", "down"):
        a, b = lo_y + (hi_y - lo_y) * (1 - travel) / 2, hi_y - (hi_y - lo_y) * (1 - travel) / 2
        params = (cx, b, a) if motion == "up" else (cx, a, b)
    elif motion == "bounce":
        base = min(hi_y, max(lo_y + 30, cy))
        params = (cx, base, min(30.0, base - lo_y), float(rng.choice([2, 3])))
    elif motion == "spin":
        params = (cx, cy, float(rng.choice([-1, 1]) * rng.uniform(1.2, 2.2) * math.pi))
    else:
        params = (cx, cy)
    return offs, params


def make_spec(seed: int, index: int, video_id: str, split: str) -> ClipSpec:
    """Draw one clip's spec from its own RNG stream (independent of other clips)."""
    rng = np.random.default_rng([seed, index, VERSION])
    color = str(rng.choice(list(COLORS)))
    shape = str(rng.choice(SHAPES))
    motions = [m for m in MOTIONS if not (m == "spin" and shape == "circle")]
    motion = str(rng.choice(motions))
    size = {"grow": "small", "shrink": "large"}.get(motion) or str(rng.choice(["small", "large"]))
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    event = str(rng.choice(EVENTS, p=[0.25, 0.3, 0.25, 0.2]))
    n = int(rng.integers(2 * FPS, 4 * FPS + 1))  # 2-4 s
    event_frame = round(n * rng.uniform(0.4, 0.6)) if event != "none" else n
    new_color = new_shape = new_size = ""
    if event == "change":
        new_color = str(rng.choice([c for c in COLORS if c != color]))
    elif event == "appear":
        new_color = str(rng.choice(list(COLORS)))
        new_shape = str(rng.choice([s for s in SHAPES if s != shape]))
        new_size = str(rng.choice(["small", "large"]))
    offs, params = group_path(rng, count, motion, size)
    new_pos = (0.0, 0.0)
    if event == "appear":  # the free spot farthest from the group at the event time
        r_new = RADIUS[new_size]
        cand = rng.uniform(r_new + 2, SIZE - r_new - 2, size=(24, 2))
        centres = np.array(
            [[x + dx, y + dy] for (x, y) in [_centre(motion, params, event_frame / max(n - 1, 1))]
             for dx, dy in offs]
        )  # fmt: skip
        dist = np.linalg.norm(cand[:, None] - centres[None], axis=-1).min(1)
        new_pos = (float(cand[dist.argmax(), 0]), float(cand[dist.argmax(), 1]))
    return ClipSpec(
        video_id, split, n, int(rng.integers(len(BACKGROUNDS))), color, shape, size, count,
        motion, event, event_frame, new_color, new_shape, new_size,
        tuple(round(p, 3) for p in params), (round(new_pos[0], 3), round(new_pos[1], 3)),
    )  # fmt: skip


def _centre(motion: str, p: tuple[float, ...], u: float) -> tuple[float, float]:
    """Group centre at normalised time u in [0, 1]."""
    if motion in ("right", "left"):
        return p[0] + (p[1] - p[0]) * u, p[2]
    if motion in ("up", "down"):
        return p[0], p[1] + (p[2] - p[1]) * u
    if motion == "bounce":
        return p[0], p[1] - p[2] * abs(math.sin(math.pi * p[3] * u))
    return p[0], p[1]


def make_specs(n_train: int, n_test: int, seed: int) -> list[ClipSpec]:
    """All clip specs; a clip whose caption key repeats an earlier one is redrawn, so no two
    clips in the world are described identically."""
    specs, seen = [], set()
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        for attempt in range(1000):
            s = make_spec(seed, i + attempt * 1_000_003, f"video{i}", split)
            if s.key() not in seen:
                break
        seen.add(s.key())
        specs.append(s)
    return specs


# ---------------------------------------------------------------------------- rendering


@dataclass
class _Obj:
    shape: str
    color: str
    x: float
    y: float
    r: float
    angle: float
    role: str  # "main" | "new"


def scene(spec: ClipSpec, frame: int) -> list[_Obj]:
    """The objects visible in one frame (drawing order)."""
    u = frame / max(spec.num_frames - 1, 1)
    p = spec.path_params
    r0 = RADIUS[spec.size]
    r = {"grow": r0 + (RADIUS["large"] - r0) * u, "shrink": r0 + (RADIUS["small"] - r0) * u}.get(
        spec.motion, r0
    )
    angle = p[2] * frame / FPS if spec.motion == "spin" else 0.0  # p[2]: rad/s
    after = frame >= spec.event_frame
    color = spec.new_color if spec.event == "change" and after else spec.color
    cx, cy = _centre(spec.motion, p, u)
    rmax = RADIUS["large"] if spec.motion in ("grow", "shrink") else r0
    objs = []
    if not (spec.event == "disappear" and after):
        objs = [
            _Obj(spec.shape, color, cx + dx, cy + dy, r, angle, "main")
            for dx, dy in _group_offsets(spec.count, spec.motion, rmax)
        ]
    if spec.event == "appear" and after:
        objs.append(
            _Obj(spec.new_shape, spec.new_color, *spec.new_pos, RADIUS[spec.new_size], 0.0, "new")
        )
    return objs


def _mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in unit local coordinates (radius 1, y down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.82
    if shape == "diamond":
        return abs(u) + abs(v) <= 1.0
    if shape == "cross":
        return ((abs(u) <= 0.32) & (abs(v) <= 0.95)) | ((abs(v) <= 0.32) & (abs(u) <= 0.95))
    if shape == "triangle":  # apex up, centred on the circumcircle
        s3 = math.sqrt(3.0)
        return (v <= 0.5) & (s3 * u - v <= 1.0) & (-s3 * u - v <= 1.0)
    if shape == "star":  # five points: radius oscillates between inner and outer
        theta = np.arctan2(u, -v)
        rr = np.sqrt(u * u + v * v)
        k = (theta * 5 / (2 * math.pi)) % 1.0
        tri = abs(k - 0.5) * 2  # 1 at the points, 0 between
        return rr <= 0.42 + 0.58 * tri**1.5
    raise ValueError(shape)


def render_frame(spec: ClipSpec, frame: int) -> np.ndarray:
    """One RGB frame [SIZE, SIZE, 3] uint8."""
    bg = np.array(BACKGROUNDS[spec.background], np.float32)
    shade = np.linspace(1.0, 0.93, SIZE, dtype=np.float32)[:, None, None]  # light top-down gradient
    img = np.broadcast_to(bg * shade, (SIZE, SIZE, 3)).copy()
    for o in scene(spec, frame):
        x0, x1 = max(0, int(o.x - o.r - 1)), min(SIZE, int(o.x + o.r + 2))
        y0, y1 = max(0, int(o.y - o.r - 1)), min(SIZE, int(o.y + o.r + 2))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = (xx + 0.5 - o.x) / o.r, (yy + 0.5 - o.y) / o.r
        c, s = math.cos(o.angle), math.sin(o.angle)
        m = _mask(o.shape, c * dx + s * dy, -s * dx + c * dy)
        img[y0:y1, x0:x1][m] = COLORS[o.color]
    return img.astype(np.uint8)


def frame_concepts(spec: ClipSpec, frame: int) -> list[str]:
    """Sorted concepts visible in one frame (what the ground truth says a word may link to)."""
    objs = scene(spec, frame)
    threshold = (RADIUS["small"] + RADIUS["large"]) / 2
    out: set[str] = set()
    for o in objs:
        out |= {
            f"color:{o.color}",
            f"shape:{o.shape}",
            f"size:{'large' if o.r >= threshold else 'small'}",
        }
    mains = [o for o in objs if o.role == "main"]
    if mains:
        out |= {f"count:{len(mains)}", f"motion:{spec.motion}"}
    if spec.event != "none" and frame >= spec.event_frame:
        out.add(f"event:{spec.event}")
    return sorted(out)


def render_clip(spec: ClipSpec, path: Path) -> None:
    """Render and encode one clip (atomic: a reader never sees a half-written file)."""
    with atomic_output(path) as tmp:
        write_video(tmp, (render_frame(spec, i) for i in range(spec.num_frames)), FPS, crf=20)


def _render_many(args: tuple[list[ClipSpec], str]) -> int:
    specs, videos = args
    for s in specs:
        render_clip(s, Path(videos) / f"{s.video_id}.mp4")
    return len(specs)


# ---------------------------------------------------------------------------- captions


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _subject(
    rng: np.random.Generator,
    count: int,
    size: str,
    color: str,
    shape: str,
    with_size: bool,
    allow_one: bool = True,
) -> str:
    if count > 1:
        det = _pick(rng, COUNT_WORDS[count])
    else:  # "one" names count:1, which only the main group has
        det = "one" if allow_one and rng.random() < 0.15 else "a"
    sing, plur = _pick(rng, SHAPE_WORDS[shape])
    noun = sing if count == 1 else plur
    words = [_pick(rng, SIZE_WORDS[size])] if with_size else []
    words += [_pick(rng, COLOR_WORDS[color]), noun]
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return f"{det} {' '.join(words)}"


def captions(spec: ClipSpec, seed: int = 0, n: int = CAPTIONS_PER_CLIP) -> list[str]:
    """``n`` distinct paraphrases. Colour, shape, count, motion and the event are always named;
    the size word is sometimes left out (as people do)."""
    rng = np.random.default_rng([seed, hash_id(spec.video_id), VERSION, 7])
    plural = spec.count > 1
    it, its = ("they", "their") if plural else ("it", "its")
    there = "there are" if plural else "there is"
    out: list[str] = []
    for _attempt in range(200):
        if len(out) >= n:
            break
        subj = _subject(rng, spec.count, spec.size, spec.color, spec.shape, rng.random() < 0.7)
        mot = _pick(rng, MOTION_WORDS[spec.motion])[plural]
        base_mot = _pick(rng, MOTION_WORDS[spec.motion])[1]  # "we see two squares move ..."
        if spec.event == "none":
            templates = [
                f"{subj} {mot}", f"{there} {subj} that {mot}", f"in this video {subj} {mot}",
                f"we see {subj} {base_mot}", f"{subj} {mot} on a plain background",
                f"a clip where {subj} {mot}", f"you can see {subj} that {mot}",
            ]  # fmt: skip
        else:
            if spec.event == "appear":
                new = _subject(
                    rng, 1, spec.new_size, spec.new_color, spec.new_shape, rng.random() < 0.5, False
                )
                verb = _pick(rng, APPEAR_WORDS)[0]
                ev = f"{new} {verb}"
                front = f"{new} {verb} while {subj} {mot}"
            elif spec.event == "change":
                col = _pick(rng, COLOR_WORDS[spec.new_color])
                verb = _pick(rng, CHANGE_WORDS)[plural]
                ev = _pick(rng, [f"{it} {verb} {col}", f"{its} colour changes to {col}"])
                old = _pick(rng, COLOR_WORDS[spec.color])
                front = f"{subj} {mot} and {'change' if plural else 'changes'} from {old} to {col}"
            else:
                verb = _pick(rng, VANISH_WORDS)[plural]
                ev = _pick(rng, [f"{it} {verb}", f"{it} {'are' if plural else 'is'} gone"])
                front = f"{subj} {mot} before {_pick(rng, ['disappearing', 'vanishing'])}"
            templates = [
                f"{subj} {mot}, then {ev}", f"{subj} {mot} and then {ev}",
                f"first {subj} {mot}; after that {ev}", front,
                f"{there} {subj} that {mot}, then {ev}", f"in this clip {subj} {mot}, later {ev}",
            ]  # fmt: skip
        cap = _pick(rng, templates)
        if cap not in out:
            out.append(cap)
    return out


def hash_id(text: str) -> int:
    """A stable 32-bit hash (Python's hash() is salted per process)."""
    import zlib

    return zlib.crc32(text.encode())


def caption_words(caption: str) -> list[str]:
    """Lower-case word tokens (how lexicon.json keys are meant to be matched)."""
    return [w for w in "".join(ch if ch.isalpha() else " " for ch in caption.lower()).split() if w]


# ---------------------------------------------------------------------------- the world


def _dump(obj: object, path: Path) -> None:
    """Compact JSON with sorted keys and a final newline: the byte-reproducible world format."""
    atomic_write_json(path, obj, sort_keys=True, indent=None, separators=(",", ":"))


def msrvtt_files(
    specs: list, captions_of: dict[str, list[str]], seed: int, version: int
) -> dict[str, object]:
    """The MSR-VTT layout's three files for a world (any version): ``MSRVTT_data.json`` with
    every caption, the training list, and the test CSV with each test clip's first caption
    (written by the csv module, so captions holding commas are quoted)."""
    videos = [
        {"video_id": s.video_id, "id": i, "split": s.split, "category": 0,
         "url": "", "start time": 0.0, "end time": round(s.num_frames / FPS, 3)}
        for i, s in enumerate(specs)
    ]  # fmt: skip
    sentences, k = [], 0
    for s in specs:
        for c in captions_of[s.video_id]:
            sentences.append({"video_id": s.video_id, "caption": c, "sen_id": k})
            k += 1
    data = {"info": {"description": f"EMCL Explorer demo world v{version}, seed {seed}"},
            "videos": videos, "sentences": sentences}  # fmt: skip
    train_csv = io.StringIO()
    w = csv.writer(train_csv, lineterminator="\n")
    w.writerow(["video_id"])
    w.writerows([s.video_id] for s in specs if s.split == "train")
    test_csv = io.StringIO()
    w = csv.writer(test_csv, lineterminator="\n")
    w.writerow(["key", "vid_key", "video_id", "sentence"])
    tests = [s for s in specs if s.split == "test"]
    for j, s in enumerate(tests):
        w.writerow([f"ret{j}", f"msr{s.video_id[5:]}", s.video_id, captions_of[s.video_id][0]])
    return {
        "MSRVTT_data.json": data,
        "MSRVTT_train.9k.csv": train_csv.getvalue(),
        "MSRVTT_JSFUSION_test.csv": test_csv.getvalue(),
    }


def annotations(specs: list[ClipSpec], seed: int) -> dict[str, object]:
    """The annotation files' contents: file name -> JSON object or CSV text."""
    caps = {s.video_id: captions(s, seed) for s in specs}
    clips = {}
    for s in specs:
        idx = uniform_indices(s.num_frames, SAMPLER_FRAMES)
        clips[s.video_id] = {
            "num_frames": s.num_frames,
            "indices": idx,
            "concepts": [frame_concepts(s, i) for i in idx],
            "spec": asdict(s),
        }
    concepts = {
        "sampler": {"name": "uniform", "num_frames": SAMPLER_FRAMES,
                    "rule": "index_i = floor((i + 0.5) * num_frames_in_clip / 12)"},
        "fps": FPS,
        "clips": clips,
    }  # fmt: skip
    return msrvtt_files(specs, caps, seed, VERSION) | {
        "frame_concepts.json": concepts,
        "lexicon.json": dict(sorted(LEXICON.items())),
    }


def build_world(
    out: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
    version: int = VERSION,
    splits: tuple[str, ...] = VIDEO_SPLITS,
) -> dict[str, object]:
    """Generate the world under ``out`` and return its parameters (also saved as world.json).

    Videos are rendered in ``workers`` processes (default: all CPUs); annotation files are
    written last, so a world with ``world.json`` present is complete. ``version=2`` builds
    world v2 (emcl/data/world_v2.py), with only the videos of ``splits``; 1, the default, is
    this module's world, always whole.
    """
    if version not in VERSIONS:
        raise ValueError(f"world version must be one of {VERSIONS}, got {version!r}")
    if version == 2:
        from emcl.data import world_v2

        return world_v2.build_world(out, n_train, n_test, seed, workers, progress, splits)
    t0 = time.perf_counter()
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    (out / "world.json").unlink(missing_ok=True)
    specs = make_specs(n_train, n_test, seed)
    workers = max(1, min(workers or os.cpu_count() or 1, len(specs)))
    chunk = 16
    jobs = [(specs[i : i + chunk], str(videos)) for i in range(0, len(specs), chunk)]
    done = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), desc="demo world", unit="clip")
    if workers == 1:
        for j in jobs:
            done += _render_many(j)
            bar and bar.update(len(j[0]))
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_render_many, jobs):
                done += n
                bar and bar.update(n)
    bar and bar.close()
    for name, content in annotations(specs, seed).items():
        if isinstance(content, str):
            atomic_write(out / name, content)  # UTF-8, newlines written as they are
        else:
            _dump(content, out / name)
    meta = {"version": VERSION, "seed": seed, "n_train": n_train, "n_test": n_test,
            "size": SIZE, "fps": FPS, "sampler_frames": SAMPLER_FRAMES}  # fmt: skip
    _dump(meta, out / "world.json")
    return meta | {"seconds": round(time.perf_counter() - t0, 1), "workers": workers}


def world_is_complete(
    out: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    version: int = VERSION,
    splits: tuple[str, ...] = VIDEO_SPLITS,
) -> bool:
    """Whether ``out`` holds a finished world built with these parameters and the videos of
    ``splits``."""
    meta = world_meta(out)
    return built_with(meta, n_train, n_test, seed, version) and set(splits) <= rendered_splits(meta)


def world_meta(out: str | os.PathLike) -> dict:
    """The world's ``world.json`` ({} when missing or unreadable: no finished world there)."""
    try:
        return json.loads((Path(out) / "world.json").read_text())
    except (OSError, ValueError):
        return {}


def built_with(meta: dict, n_train: int, n_test: int, seed: int, version: int) -> bool:
    """Whether a world.json describes a world with these parameters."""
    found = (meta.get("version"), meta.get("seed"), meta.get("n_train"), meta.get("n_test"))
    return found == (version, seed, n_train, n_test)


def rendered_splits(meta: dict) -> set[str]:
    """The splits whose videos a world.json says are there (one without "splits": every split)."""
    return set(meta.get("splits", VIDEO_SPLITS))


def ensure_world(
    root: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int,
    progress: bool = False,
    version: int = VERSION,
    splits: tuple[str, ...] = VIDEO_SPLITS,
) -> None:
    """Build the world under ``root`` unless a finished one with these parameters and the videos
    of ``splits`` is there (v2 renders only the missing splits' videos; v1 renders all)."""
    if not world_is_complete(root, n_train, n_test, seed, version, splits):
        build_world(root, n_train, n_test, seed, progress=progress, version=version, splits=splits)


def video_splits(split: str) -> tuple[str, ...]:
    """The world splits whose videos a dataset split reads (emcl.data.datasets.Split): the test
    clips, the training clips (train, val, trainval) or both (all)."""
    return {"test": ("test",), "all": VIDEO_SPLITS}.get(split, ("train",))


def ensure_demo_world(data: str | os.PathLike, progress: bool = True, split: str = "all") -> None:
    """Build a demo world (one of ``paths.DEMO_WORLDS``) with the videos ``split`` reads if
    ``data`` is its folder under the cache root and they are missing. Any other folder is the
    user's dataset and is only read."""
    for w in paths.DEMO_WORLDS.values():
        folder = paths.demo_world_dir(version=w.version)
        if Path(data).resolve() == folder.resolve():
            ensure_world(folder, w.n_train, w.n_test, w.seed, progress, w.version,
                         video_splits(split))  # fmt: skip
