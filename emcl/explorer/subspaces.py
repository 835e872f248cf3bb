"""The Subspaces tab's service: frame–word links of one (video, caption) pair in the EM
subspaces (supplement Figure 1; the construction is in emcl/core/subspace.py and
docs/method.md §5), scored against the demo world's per-frame ground truth."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from emcl.core.subspace import (
    Grounding,
    align_batch,
    bootstrap_interval,
    grounding,
    keep_word,
    total,
)
from emcl.core.subspace import align as align_pair
from emcl.data.windows import load_window
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import KnobError, Knobs, choice, clean_text
from emcl.explorer.latest import JobState
from emcl.explorer.results import AlignResult, GroundingAverage, Progress, no_progress
from emcl.explorer.snapshot import ModelView, Snapshot
from emcl.retrieval.moments import parse_span
from emcl.retrieval.ranking import Span
from emcl.video.decoder import load_frames
from emcl.video.sampling import center_crop

GROUNDING_CHUNK = 128  # pairs per batched EM call over the test split
# Word features for the view (docs/method.md §5): "tokens" are the text tower's token states
# (contrastive training never aligned them with frames); "alone" encodes each word on its
# own through the whole text tower, as a one-word caption, the feature training did align.
WORD_ENCODINGS = ("tokens", "alone")


def align(
    ctx: ServiceContext,
    video_id: object,
    caption: object,
    knobs: Knobs,
    span: object = None,
    words: str | None = None,
) -> AlignResult:
    """Frame–word alignment in the EM subspaces of one (video, caption) pair, scored against
    per-frame ground truth where the world has it. ``span``: a long video's window ("60-70"
    or (60, 70), seconds; the nearest window is used), None for the whole video. ``words``:
    the word encoding (:data:`WORD_ENCODINGS`; ``None``: the one that grounds better on the
    test split, :func:`default_words`)."""
    snap = ctx.snapshot
    snap.record(video_id)  # refuses anything but a known id
    text, cut = clean_text(caption, "the caption")
    view = snap.view(knobs.mode)
    params, prior = knobs.params(), ctx.prior(knobs)
    window = _window(view, snap.position[video_id], span)
    frames = (window[1] if window else view.frames[snap.position[video_id]]).float()  # [T, D]
    encoding = default_words(ctx, knobs) if words is None else words
    choice("word encoding", encoding, WORD_ENCODINGS)
    vectors, words, dropped, truncated = _word_vectors(ctx, view, text, encoding)
    if not words:
        raise KnobError("the caption has no words to align (only punctuation?)")
    with torch.inference_mode():
        alignment = align_pair(frames, vectors, words, params, prior)
    scores: dict[str, Grounding | None] = {}
    concepts = None if window else _concepts(ctx, str(video_id), frames.shape[0])
    selections: list[tuple[str, int | None]] = [("auto", -1), ("full", None)]
    selections += [(f"s{s + 1}", s) for s in range(alignment.n_subspaces)]
    for label, selection in selections:
        if concepts is None:
            scores[label] = None
            continue
        frame, _ = alignment.links(selection)
        lexicon = ctx.ground_truth.lexicon  # type: ignore[union-attr]
        scores[label] = grounding(words, frame.tolist(), concepts, lexicon)
    return AlignResult(str(video_id), text, alignment, scores, truncated or cut, dropped, encoding)


def _window(view: ModelView, position: int, span: object) -> tuple[Span, Tensor] | None:
    """The window of a long video nearest ``span`` (its span and frame features ``[T, D]``),
    or None for the whole video."""
    if span is None or isinstance(span, str):
        try:
            span = parse_span(span)
        except ValueError as error:
            raise KnobError(str(error)) from None
    if span is None:
        return None
    if view.moments is None:
        raise KnobError("no video in this gallery has windows: clear the window")
    try:
        return view.moments.window(position, span)  # type: ignore[arg-type]
    except ValueError as error:
        raise KnobError(str(error)) from None


def _word_vectors(
    ctx: ServiceContext, view: ModelView, text: str, encoding: str
) -> tuple[Tensor, list[str], list[str], bool]:
    """Kept word features ``[L, D]``, their words, the dropped punctuation, truncated?"""
    with torch.inference_mode():
        out = view.encoder.encode_texts([text])
    words, mask = out["words"][0], out["word_mask"][0]
    vectors = out["word_tokens"][0][mask]  # [L, D]
    keep = [i for i, w in enumerate(words) if keep_word(w)]
    dropped = [w for w in words if not keep_word(w)]
    kept = [words[i] for i in keep]
    if encoding == "alone":
        return _words_alone(ctx, view, kept), kept, dropped, bool(out["truncated"][0])
    return vectors[keep], kept, dropped, bool(out["truncated"][0])


def _words_alone(ctx: ServiceContext, view: ModelView, words: list[str]) -> Tensor:
    """Each word's sentence feature as a one-word caption ``[L, D]`` (cached per word)."""
    dim = view.sentences.shape[-1]
    vectors = []
    for word in words:
        vector, _ = ctx.encode_query(view, word.strip() or word)
        vectors.append(vector)
    return torch.stack(vectors) if vectors else torch.zeros(0, dim)


def _concepts(ctx: ServiceContext, video_id: str, num_frames: int) -> list[list[str]] | None:
    truth = ctx.ground_truth
    if truth is None or truth.num_frames != num_frames or video_id not in truth.concepts:
        return None
    return truth.concepts[video_id]


def grounding_average(
    ctx: ServiceContext, knobs: Knobs, progress: Progress = no_progress, words: str = "tokens"
) -> GroundingAverage | None:
    """Grounding of auto (subspace) and full-space links pooled over every captioned video
    with ground truth (its first caption), with 95 % bootstrap intervals over the pairs.
    ``None`` without ground truth."""
    choice("word encoding", words, WORD_ENCODINGS)
    snap = ctx.snapshot
    view = snap.view(knobs.mode)
    if ctx.ground_truth is None:
        return None
    return ctx.caches.groundings.get_or_compute(
        _grounding_key(snap, view, knobs, words),
        lambda: _grounding_average(ctx, snap, view, knobs, progress, words),
    )


def _grounding_key(snap: Snapshot, view: ModelView, knobs: Knobs, words: str) -> tuple:
    # β only scales what the EM adds: the links, hence the grounding, do not depend on it.
    return (snap.version, view.name, knobs.em_run_key(), words)


def grounding_status(
    ctx: ServiceContext, knobs: Knobs, words: str = "tokens"
) -> GroundingAverage | JobState | None:
    """:func:`grounding_average` without waiting: the average when it is known; otherwise
    its computation is started in the background (ctx.jobs, below the searches' priority)
    and its progress returned; ``None`` without ground truth."""
    choice("word encoding", words, WORD_ENCODINGS)
    snap = ctx.snapshot
    view = snap.view(knobs.mode)
    if ctx.ground_truth is None:
        return None
    if not _grounded_pairs(ctx, snap, view):
        return None
    key = _grounding_key(snap, view, knobs, words)
    known = ctx.caches.groundings.get(key)
    if known is not None:
        return known
    state = ctx.jobs.start(
        ("grounding", *key), lambda progress: grounding_average(ctx, knobs, progress, words)
    )
    return ctx.caches.groundings.get(key) or state  # it may have finished meanwhile


def default_words(ctx: ServiceContext, knobs: Knobs) -> str:
    """The word encoding whose subspace links ground better on the test split, at the
    defaults of ``knobs.mode`` (fixed per snapshot, not per knob move); ``tokens`` without
    ground truth."""
    defaults = ctx.defaults(knobs.mode)
    scores = {}
    for encoding in WORD_ENCODINGS:
        average = grounding_average(ctx, defaults, no_progress, encoding)
        if average is None or average.auto.score is None:
            return "tokens"
        scores[encoding] = average.auto.score
    return max(WORD_ENCODINGS, key=lambda e: (scores[e], e == "tokens"))


def _grounded_pairs(ctx: ServiceContext, snap: Snapshot, view: ModelView) -> list[tuple[str, str]]:
    """(video, first caption) of every captioned video with per-frame ground truth."""
    num_frames = view.frames.shape[1]
    return [
        (r.video_id, r.captions[0])
        for r in snap.records
        if r.captions and _concepts(ctx, r.video_id, num_frames) is not None
    ]


def warm_up(ctx: ServiceContext) -> None:
    """The default word encoding of every mode (the test split's grounding at its defaults),
    so the first Subspaces figure does not wait for it."""
    modes = ["inference"] + (["joint"] if ctx.snapshot.emcl is not None else [])
    for mode in modes:
        default_words(ctx, ctx.defaults(mode))


def _grounding_average(
    ctx: ServiceContext,
    snap: Snapshot,
    view: ModelView,
    knobs: Knobs,
    progress: Progress,
    encoding: str,
) -> GroundingAverage | None:
    truth = ctx.ground_truth
    assert truth is not None
    params, prior = knobs.params(), ctx.prior(knobs)
    pairs = _grounded_pairs(ctx, snap, view)
    if not pairs:
        return None
    vectors, mask, words = ctx.caches.bank_words.get_or_compute(
        (snap.version, view.name, encoding),
        lambda: _encode_words(ctx, view, [c for _, c in pairs], encoding),
    )
    auto, full = [], []
    for start in range(0, len(pairs), GROUNDING_CHUNK):
        progress(start / len(pairs), "grounding over the test split")
        part = pairs[start : start + GROUNDING_CHUNK]
        frames = view.frames[[snap.position[v] for v, _ in part]].float()  # [B, T, D]
        window = slice(start, start + GROUNDING_CHUNK)
        with torch.inference_mode():
            links = align_batch(frames, vectors[window], mask[window], params, prior)
        for b, (video_id, _) in enumerate(part):
            these = words[start + b]
            n = len(these)
            concepts = truth.concepts[video_id]
            auto.append(grounding(these, links.auto[b, :n].tolist(), concepts, truth.lexicon))
            full.append(grounding(these, links.full[b, :n].tolist(), concepts, truth.lexicon))
    progress(1.0, "done")
    return GroundingAverage(
        encoding,
        total(auto),
        total(full),
        len(pairs),
        bootstrap_interval(auto),
        bootstrap_interval(full),
    )


def _encode_words(
    ctx: ServiceContext, view: ModelView, captions: list[str], encoding: str
) -> tuple[Tensor, Tensor, list]:
    """Kept word vectors of many captions, zero-padded: ``[B, L, D]``, mask ``[B, L]``."""
    with torch.inference_mode():
        out = view.encoder.encode_texts(captions)
    kept = [[i for i, w in enumerate(ws) if keep_word(w)] for ws in out["words"]]
    if encoding == "alone":
        vocabulary = sorted({out["words"][b][i] for b, keep in enumerate(kept) for i in keep})
        alone = dict(zip(vocabulary, _words_alone(ctx, view, vocabulary), strict=True))
    width = max((len(k) for k in kept), default=0)
    vectors = torch.zeros(len(captions), width, out["word_tokens"].shape[-1])
    mask = torch.zeros(len(captions), width, dtype=torch.bool)
    for b, keep in enumerate(kept):
        if encoding == "alone":
            vectors[b, : len(keep)] = torch.stack([alone[out["words"][b][i]] for i in keep])
        else:
            vectors[b, : len(keep)] = out["word_tokens"][b, keep]
        mask[b, : len(keep)] = True
    words = [[out["words"][b][i] for i in keep] for b, keep in enumerate(kept)]
    return vectors, mask, words


def frames_rgb(
    ctx: ServiceContext, video_id: object, size: int = 96, span: object = None
) -> np.ndarray:
    """The sampled frames ``[T, s, s, 3]`` uint8 shown in the subspace view, decoded in the
    guarded decoder with the gallery's sampler (so they are the frames the model saw); of the
    window nearest ``span`` for a long video's window."""
    snap = ctx.snapshot
    path = snap.video_path(video_id)
    num_frames = snap.base.frames.shape[1]
    window = _window(snap.base, snap.position[video_id], span)
    exact = window[0] if window else None

    def decode() -> np.ndarray:
        if exact is not None:
            frames = load_window(path, exact, num_frames, size)  # [T, h, w, 3]
        else:
            frames = load_frames(path, num_frames=num_frames, size=size)  # [T, h, w, 3]
        return np.ascontiguousarray(center_crop(frames, size))  # [T, s, s, 3] as the gallery

    return ctx.caches.frames.get_or_compute((str(path), num_frames, size, exact), decode)
