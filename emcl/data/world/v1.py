"""Demo world v1: one group of one to three identical shapes doing one motion on a plain
background, optionally followed by a second-phase event: a new shape *appears*, the shapes
*turn* another colour, or they *disappear*. Every caption names everything; no two clips are
described identically. Kept byte-for-byte for the v1 checkpoints (tests/test_world_golden.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emcl.data.world.common import (
    APPEAR_WORDS,
    BACKGROUNDS,
    CAPTIONS_PER_CLIP,
    CHANGE_WORDS,
    COLOR_WORDS,
    COLORS,
    FPS,
    LEXICON,
    MOTION_WORDS,
    MOTIONS,
    RADIUS,
    SAMPLER_FRAMES,
    SHAPES,
    SIZE,
    VANISH_WORDS,
    Obj,
    WorldGenerator,
    caption_rng,
    centre,
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

VERSION = 1
EVENTS = ("none", "appear", "change", "disappear")


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
    path_params: tuple[float, ...]  # motion geometry (common.group_path)
    new_pos: tuple[float, float]

    def key(self) -> tuple:
        """What captions can express: clips with equal keys are indistinguishable in text."""
        extra = {"none": (), "appear": (self.new_color, self.new_shape, self.new_size),
                 "change": (self.new_color,), "disappear": ()}[self.event]  # fmt: skip
        return (self.color, self.shape, self.size, self.count, self.motion, self.event, *extra)


# ---------------------------------------------------------------------------- specs


def _free_spot(
    rng: np.random.Generator, size: str, group: list[tuple[float, float]]
) -> tuple[float, float]:
    """Where an appearing shape goes: of 24 random candidates, the one farthest from the
    group's objects at ``group`` (their centres at the event time)."""
    r_new = RADIUS[size]
    cand = rng.uniform(r_new + 2, SIZE - r_new - 2, size=(24, 2))  # [24, 2]
    dist = np.linalg.norm(cand[:, None] - np.array(group)[None], axis=-1).min(1)  # [24]
    return float(cand[dist.argmax(), 0]), float(cand[dist.argmax(), 1])


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
    if event == "appear":
        x, y = centre(motion, params, event_frame / max(n - 1, 1))
        new_pos = _free_spot(rng, new_size, [[x + dx, y + dy] for dx, dy in offs])
    return ClipSpec(
        video_id=video_id, split=split, num_frames=n,
        background=int(rng.integers(len(BACKGROUNDS))),
        color=color, shape=shape, size=size, count=count, motion=motion,
        event=event, event_frame=event_frame,
        new_color=new_color, new_shape=new_shape, new_size=new_size,
        path_params=tuple(round(p, 3) for p in params),
        new_pos=(round(new_pos[0], 3), round(new_pos[1], 3)),
    )  # fmt: skip


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


def scene(spec: ClipSpec, frame: int) -> list[Obj]:
    """The objects visible in one frame (drawing order)."""
    after = frame >= spec.event_frame
    objs = []
    if not (spec.event == "disappear" and after):
        objs = group_objects(
            shape=spec.shape,
            color=spec.new_color if spec.event == "change" and after else spec.color,
            size=spec.size,
            count=spec.count,
            motion=spec.motion,
            path=spec.path_params,
            u=frame / max(spec.num_frames - 1, 1),
            elapsed=frame,
        )
    if spec.event == "appear" and after:
        objs.append(
            Obj(spec.new_shape, spec.new_color, *spec.new_pos, RADIUS[spec.new_size], 0.0, "new")
        )
    return objs


def render_frame(spec: ClipSpec, frame: int) -> np.ndarray:
    """One RGB frame ``[SIZE, SIZE, 3]`` uint8."""
    bg = np.array(BACKGROUNDS[spec.background], np.float32)
    img = np.broadcast_to(bg * shade(), (SIZE, SIZE, 3)).copy()
    return draw(img, scene(spec, frame))


def frame_concepts(spec: ClipSpec, frame: int) -> list[str]:
    """Sorted concepts visible in one frame (what the ground truth says a word may link to)."""
    objs = scene(spec, frame)
    out: set[str] = set()
    for o in objs:
        out |= {f"color:{o.color}", f"shape:{o.shape}", f"size:{size_of(o.r)}"}
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


# ---------------------------------------------------------------------------- captions


def _event_phrases(
    spec: ClipSpec, rng: np.random.Generator, subj: str, mot: str
) -> tuple[str, str]:
    """(the event as a clause after "then", a caption naming the event first or inline)."""
    plural = spec.count > 1
    it, its = ("they", "their") if plural else ("it", "its")
    if spec.event == "appear":
        new = subject(rng, count=1, size=spec.new_size, color=spec.new_color,
                      shape=spec.new_shape, with_size=rng.random() < 0.5,
                      allow_one=False)  # fmt: skip
        verb = pick(rng, APPEAR_WORDS)[0]
        return f"{new} {verb}", f"{new} {verb} while {subj} {mot}"
    if spec.event == "change":
        col = pick(rng, COLOR_WORDS[spec.new_color])
        verb = pick(rng, CHANGE_WORDS)[plural]
        ev = pick(rng, [f"{it} {verb} {col}", f"{its} colour changes to {col}"])
        old = pick(rng, COLOR_WORDS[spec.color])
        return ev, f"{subj} {mot} and {'change' if plural else 'changes'} from {old} to {col}"
    verb = pick(rng, VANISH_WORDS)[plural]
    ev = pick(rng, [f"{it} {verb}", f"{it} {'are' if plural else 'is'} gone"])
    return ev, f"{subj} {mot} before {pick(rng, ['disappearing', 'vanishing'])}"


def captions(spec: ClipSpec, seed: int = 0, n: int = CAPTIONS_PER_CLIP) -> list[str]:
    """``n`` distinct paraphrases. Colour, shape, count, motion and the event are always named;
    the size word is sometimes left out (as people do)."""
    rng = caption_rng(seed, spec.video_id, VERSION)
    plural = spec.count > 1
    there = "there are" if plural else "there is"
    out: list[str] = []
    for _attempt in range(200):
        if len(out) >= n:
            break
        subj = subject(rng, count=spec.count, size=spec.size, color=spec.color, shape=spec.shape,
                       with_size=rng.random() < 0.7)  # fmt: skip
        mot = pick(rng, MOTION_WORDS[spec.motion])[plural]
        base_mot = pick(rng, MOTION_WORDS[spec.motion])[1]  # "we see two squares move ..."
        if spec.event == "none":
            templates = [
                f"{subj} {mot}", f"{there} {subj} that {mot}", f"in this video {subj} {mot}",
                f"we see {subj} {base_mot}", f"{subj} {mot} on a plain background",
                f"a clip where {subj} {mot}", f"you can see {subj} that {mot}",
            ]  # fmt: skip
        else:
            ev, front = _event_phrases(spec, rng, subj, mot)
            templates = [
                f"{subj} {mot}, then {ev}", f"{subj} {mot} and then {ev}",
                f"first {subj} {mot}; after that {ev}", front,
                f"{there} {subj} that {mot}, then {ev}", f"in this clip {subj} {mot}, later {ev}",
            ]  # fmt: skip
        cap = pick(rng, templates)
        if cap not in out:
            out.append(cap)
    return out


# ---------------------------------------------------------------------------- the world


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
    return msrvtt_files(specs, caps, seed=seed, version=VERSION) | {
        "frame_concepts.json": frame_concepts_file(clips),
        "lexicon.json": dict(sorted(LEXICON.items())),
    }


GENERATOR = WorldGenerator(
    version=VERSION,
    make_specs=make_specs,
    render_clip=render_clip,
    annotations=annotations,
    by_split=False,  # always rendered whole
)
