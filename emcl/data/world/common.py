"""What both demo-world versions share: the canvas, the vocabulary, the drawing primitives, the
caption helpers, the files every world writes and the reading of ``world.json``.

Nothing here draws a random number on its own: every draw takes the caller's generator, so a
version's RNG streams (and with them its bytes) are fixed by the version module alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emcl.fileio import atomic_write, atomic_write_json

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
RADIUS = {"small": 10.0, "large": 17.0}
SIZE_THRESHOLD = (RADIUS["small"] + RADIUS["large"]) / 2  # a drawn radius at or above is "large"
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
# v1's second-phase events; their words stay in every world's lexicon
APPEAR_WORDS = [("appears", "appear"), ("emerges", "emerge"), ("pops into view", "pop into view")]
VANISH_WORDS = [("disappears", "disappear"), ("vanishes", "vanish")]
CHANGE_WORDS = [("turns", "turn"), ("becomes", "become")]
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


def _lexicon() -> dict[str, str]:
    """Caption word -> concept ("color:red", "motion:left", ...): a word of a multi-word
    phrase maps through its last word."""
    lexicon: dict[str, str] = {}
    for color, words in COLOR_WORDS.items():
        lexicon.update({w: f"color:{color}" for w in words})
    for shape, pairs in SHAPE_WORDS.items():
        for sing, plur in pairs:
            lexicon.update({sing.split()[-1]: f"shape:{shape}", plur.split()[-1]: f"shape:{shape}"})
    for size, words in SIZE_WORDS.items():
        lexicon.update({w: f"size:{size}" for w in words})
    lexicon.update({"one": "count:1", "two": "count:2", "pair": "count:2", "three": "count:3"})
    for motion, words in _MOTION_KEYWORDS.items():
        lexicon.update({w: f"motion:{motion}" for w in words})
    lexicon.update({w: "event:appear" for pair in APPEAR_WORDS for w in pair if " " not in w})
    lexicon.update({"pops": "event:appear", "pop": "event:appear", "gone": "event:disappear",
                    "disappearing": "event:disappear", "vanishing": "event:disappear"})  # fmt: skip
    lexicon.update({w: "event:disappear" for pair in VANISH_WORDS for w in pair})
    return lexicon


LEXICON: dict[str, str] = _lexicon()


# ---------------------------------------------------------------------------- groups and drawing


@dataclass
class Obj:
    """One drawn shape in scene coordinates (px, y down)."""

    shape: str
    color: str
    x: float
    y: float
    r: float
    angle: float
    role: str  # "main" (a captioned group) | "new" (v1's appearing shape) | "distractor" (v2)


def group_offsets(count: int, motion: str, radius: float) -> list[tuple[float, float]]:
    """(dx, dy) of each object around the group centre: across the motion direction."""
    gap = 2 * radius + 5
    along_y = motion in ("right", "left")
    offs = [(i - (count - 1) / 2) * gap for i in range(count)]
    return [(0.0, o) if along_y else (o, 0.0) for o in offs]


def group_path(
    rng: np.random.Generator, count: int, motion: str, size: str
) -> tuple[list[tuple[float, float]], tuple[float, ...]]:
    """A group's object offsets and its path parameters (see :func:`centre`), drawn from
    ``rng`` so that the whole group stays inside the frame."""
    rmax = RADIUS["large"] if motion in ("grow", "shrink") else RADIUS[size]
    offs = group_offsets(count, motion, rmax)
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


def centre(motion: str, p: tuple[float, ...], u: float) -> tuple[float, float]:
    """Group centre at normalised time u in [0, 1] on path ``p`` (:func:`group_path`)."""
    if motion in ("right", "left"):
        return p[0] + (p[1] - p[0]) * u, p[2]
    if motion in ("up", "down"):
        return p[0], p[1] + (p[2] - p[1]) * u
    if motion == "bounce":
        return p[0], p[1] - p[2] * abs(math.sin(math.pi * p[3] * u))
    return p[0], p[1]


def group_objects(
    *,
    shape: str,
    color: str,
    size: str,
    count: int,
    motion: str,
    path: tuple[float, ...],
    u: float,
    elapsed: int,
) -> list[Obj]:
    """A group's objects (role "main") at normalised time ``u``, ``elapsed`` frames after it
    started: grow/shrink change the radius, spin the angle (``path[2]``: rad/s)."""
    r0 = RADIUS[size]
    r = {"grow": r0 + (RADIUS["large"] - r0) * u, "shrink": r0 + (RADIUS["small"] - r0) * u}.get(
        motion, r0
    )
    angle = path[2] * elapsed / FPS if motion == "spin" else 0.0
    cx, cy = centre(motion, path, u)
    rmax = RADIUS["large"] if motion in ("grow", "shrink") else r0
    return [
        Obj(shape, color, cx + dx, cy + dy, r, angle, "main")
        for dx, dy in group_offsets(count, motion, rmax)
    ]


def size_of(radius: float) -> str:
    """The size word a drawn radius shows (grow/shrink pass through both)."""
    return "large" if radius >= SIZE_THRESHOLD else "small"


def shade() -> np.ndarray:
    """The light top-down gradient every background is multiplied by, ``[SIZE, 1, 1]``."""
    return np.linspace(1.0, 0.93, SIZE, dtype=np.float32)[:, None, None]


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


def draw(
    img: np.ndarray, objects: Iterable[Obj], camera: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Paint ``objects`` at scene position - ``camera`` onto ``img`` ``[SIZE, SIZE, 3]`` float
    (in place) and return the frame as uint8."""
    for o in objects:
        ox, oy = o.x - camera[0], o.y - camera[1]
        x0, x1 = max(0, int(ox - o.r - 1)), min(SIZE, int(ox + o.r + 2))
        y0, y1 = max(0, int(oy - o.r - 1)), min(SIZE, int(oy + o.r + 2))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = (xx + 0.5 - ox) / o.r, (yy + 0.5 - oy) / o.r
        c, s = math.cos(o.angle), math.sin(o.angle)
        m = _mask(o.shape, c * dx + s * dy, -s * dx + c * dy)
        img[y0:y1, x0:x1][m] = COLORS[o.color]
    return img.astype(np.uint8)


# ---------------------------------------------------------------------------- captions


def hash_id(text: str) -> int:
    """A stable 32-bit hash (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode())


def caption_rng(seed: int, video_id: str, version: int) -> np.random.Generator:
    """The RNG stream of one clip's captions."""
    return np.random.default_rng([seed, hash_id(video_id), version, 7])


def pick(rng: np.random.Generator, items: list) -> Any:
    return items[int(rng.integers(len(items)))]


def subject(
    rng: np.random.Generator,
    *,
    count: int,
    size: str,
    color: str,
    shape: str,
    with_size: bool,
    allow_one: bool = True,
) -> str:
    """A noun phrase naming a group: "two big red boxes", "an orange star"."""
    if count > 1:
        det = pick(rng, COUNT_WORDS[count])
    else:  # "one" names count:1, which only the main group has
        det = "one" if allow_one and rng.random() < 0.15 else "a"
    sing, plur = pick(rng, SHAPE_WORDS[shape])
    noun = sing if count == 1 else plur
    words = [pick(rng, SIZE_WORDS[size])] if with_size else []
    words += [pick(rng, COLOR_WORDS[color]), noun]
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return f"{det} {' '.join(words)}"


def caption_words(caption: str) -> list[str]:
    """Lower-case word tokens (how lexicon.json keys are meant to be matched)."""
    return [w for w in "".join(ch if ch.isalpha() else " " for ch in caption.lower()).split() if w]


# ---------------------------------------------------------------------------- files


def write_world_file(obj: object, path: Path) -> None:
    """Compact JSON with sorted keys and a final newline: the byte-reproducible world format."""
    atomic_write_json(path, obj, sort_keys=True, indent=None, separators=(",", ":"))


def write_files(out: Path, files: dict[str, object]) -> None:
    """Write annotation files: CSV text as it is (UTF-8), JSON objects as world files."""
    for name, content in files.items():
        if isinstance(content, str):
            atomic_write(out / name, content)
        else:
            write_world_file(content, out / name)


def msrvtt_files(
    specs: list, captions_of: dict[str, list[str]], *, seed: int, version: int
) -> dict[str, object]:
    """The MSR-VTT layout's three files for a world: ``MSRVTT_data.json`` with every caption,
    the training list, and the test CSV with each test clip's first caption (written by the
    csv module, so captions holding commas are quoted)."""
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


def frame_concepts_file(clips: dict[str, dict]) -> dict[str, object]:
    """``frame_concepts.json``: the sampler its frames follow and, per clip, its ground truth."""
    return {
        "sampler": {"name": "uniform", "num_frames": SAMPLER_FRAMES,
                    "rule": "index_i = floor((i + 0.5) * num_frames_in_clip / 12)"},
        "fps": FPS,
        "clips": clips,
    }  # fmt: skip


# ---------------------------------------------------------------------------- world.json


@dataclass(frozen=True)
class WorldGenerator:
    """What one world version hands the build pipeline (emcl/data/world/build.py)."""

    version: int
    make_specs: Callable[[int, int, int], list]  # (n_train, n_test, seed) -> clip specs
    render_clip: Callable[[Any, Path], None]  # module-level: it travels to worker processes
    annotations: Callable[[list, int], dict[str, object]]  # (specs, seed) -> file name -> content
    by_split: bool  # renders only the requested splits, keeps rendered ones, records "splits"
    extra_meta: Callable[[list, int], dict[str, object]] | None = None  # more world.json fields


def world_params(version: int, seed: int, n_train: int, n_test: int) -> dict[str, object]:
    """The parameters every world.json records."""
    return {"version": version, "seed": seed, "n_train": n_train, "n_test": n_test,
            "size": SIZE, "fps": FPS, "sampler_frames": SAMPLER_FRAMES}  # fmt: skip


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


def world_is_complete(
    out: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    *,
    version: int = 1,
    splits: tuple[str, ...] = VIDEO_SPLITS,
) -> bool:
    """Whether ``out`` holds a finished world built with these parameters and the videos of
    ``splits``."""
    meta = world_meta(out)
    return built_with(meta, n_train, n_test, seed, version) and set(splits) <= rendered_splits(meta)


def video_splits(split: str) -> tuple[str, ...]:
    """The world splits whose videos a dataset split reads (emcl.data.datasets.Split): the test
    clips, the training clips (train, val, trainval) or both (all)."""
    return {"test": ("test",), "all": VIDEO_SPLITS}.get(split, ("train",))
