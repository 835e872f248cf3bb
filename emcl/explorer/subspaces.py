"""The Subspaces tab's service: frame–word links of one (video, caption) pair in the EM
subspaces (supplement Figure 1; the construction is in emcl/core/subspace.py and
docs/method.md §5), scored against the demo world's per-frame ground truth."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from emcl.core.subspace import Grounding, align_batch, grounding, keep_word, total
from emcl.core.subspace import align as align_pair
from emcl.explorer.knobs import KnobError, Knobs, clean_text
from emcl.explorer.results import AlignResult, GroundingAverage
from emcl.explorer.snapshot import ModelView, Snapshot
from emcl.video.decoder import load_frames
from emcl.video.sampling import center_crop

if TYPE_CHECKING:
    from emcl.explorer.service import Explorer, Progress

GROUNDING_CHUNK = 128  # pairs per batched EM call over the test split


def align(explorer: Explorer, video_id: object, caption: object, knobs: Knobs) -> AlignResult:
    """Frame–word alignment in the EM subspaces of one (video, caption) pair, scored against
    per-frame ground truth where the world has it."""
    snap = explorer.snapshot
    explorer.video_path(video_id)  # refuses anything but a known id
    text, cut = clean_text(caption, "the caption")
    view = snap.view(knobs.mode)
    params, prior = knobs.params(), explorer.prior(knobs)
    frames = view.frames[snap.position[video_id]].float()  # [T, D]
    vectors, words, dropped, truncated = _word_vectors(view, text)
    if not words:
        raise KnobError("the caption has no words to align (only punctuation?)")
    with torch.inference_mode():
        alignment = align_pair(frames, vectors, words, params, prior)
    scores: dict[str, Grounding | None] = {}
    concepts = _concepts(explorer, str(video_id), frames.shape[0])
    selections: list[tuple[str, int | None]] = [("auto", -1), ("full", None)]
    selections += [(f"s{s + 1}", s) for s in range(alignment.n_subspaces)]
    for label, selection in selections:
        if concepts is None:
            scores[label] = None
            continue
        frame, _ = alignment.links(selection)
        lexicon = explorer.ground_truth.lexicon  # type: ignore[union-attr]
        scores[label] = grounding(words, frame.tolist(), concepts, lexicon)
    return AlignResult(str(video_id), text, alignment, scores, truncated or cut, dropped)


def _word_vectors(view: ModelView, text: str) -> tuple[Tensor, list[str], list[str], bool]:
    """Kept word features ``[L, D]``, their words, the dropped punctuation, truncated?"""
    with torch.inference_mode():
        out = view.encoder.encode_texts([text])
    words, mask = out["words"][0], out["word_mask"][0]
    vectors = out["word_tokens"][0][mask]  # [L, D]
    keep = [i for i, w in enumerate(words) if keep_word(w)]
    dropped = [w for w in words if not keep_word(w)]
    return vectors[keep], [words[i] for i in keep], dropped, bool(out["truncated"][0])


def _concepts(explorer: Explorer, video_id: str, num_frames: int) -> list[list[str]] | None:
    truth = explorer.ground_truth
    if truth is None or truth.num_frames != num_frames or video_id not in truth.concepts:
        return None
    return truth.concepts[video_id]


def grounding_average(
    explorer: Explorer, knobs: Knobs, progress: Progress
) -> GroundingAverage | None:
    """Grounding of auto (subspace) and full-space links pooled over every captioned video
    with ground truth (its first caption). ``None`` without ground truth."""
    snap = explorer.snapshot
    view = snap.view(knobs.mode)
    if explorer.ground_truth is None:
        return None
    key = (snap.version, view.name, knobs.em_key())
    return explorer.caches.groundings.get_or_compute(
        key, lambda: _grounding_average(explorer, snap, view, knobs, progress)
    )


def _grounding_average(
    explorer: Explorer, snap: Snapshot, view: ModelView, knobs: Knobs, progress: Progress
) -> GroundingAverage | None:
    truth = explorer.ground_truth
    assert truth is not None
    params, prior = knobs.params(), explorer.prior(knobs)
    num_frames = view.frames.shape[1]
    pairs = [
        (r.video_id, r.captions[0])
        for r in snap.records
        if r.captions and _concepts(explorer, r.video_id, num_frames) is not None
    ]
    if not pairs:
        return None
    vectors, mask, words = explorer.caches.bank_words.get_or_compute(
        (snap.version, view.name), lambda: _encode_words(view, [c for _, c in pairs])
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
    return GroundingAverage(total(auto), total(full), len(pairs))


def _encode_words(view: ModelView, captions: list[str]) -> tuple[Tensor, Tensor, list]:
    """Kept word vectors of many captions, zero-padded: ``[B, L, D]``, mask ``[B, L]``."""
    with torch.inference_mode():
        out = view.encoder.encode_texts(captions)
    kept = [[i for i, w in enumerate(ws) if keep_word(w)] for ws in out["words"]]
    width = max((len(k) for k in kept), default=0)
    vectors = torch.zeros(len(captions), width, out["word_tokens"].shape[-1])
    mask = torch.zeros(len(captions), width, dtype=torch.bool)
    for b, keep in enumerate(kept):
        vectors[b, : len(keep)] = out["word_tokens"][b, keep]
        mask[b, : len(keep)] = True
    words = [[out["words"][b][i] for i in keep] for b, keep in enumerate(kept)]
    return vectors, mask, words


def frames_rgb(explorer: Explorer, video_id: object, size: int = 96) -> np.ndarray:
    """The sampled frames ``[T, s, s, 3]`` uint8 shown in the subspace view, decoded in the
    guarded decoder with the gallery's sampler (so they are the frames the model saw)."""
    path = explorer.video_path(video_id)
    num_frames = explorer.snapshot.base.frames.shape[1]

    def decode() -> np.ndarray:
        frames = load_frames(path, num_frames=num_frames, size=size)  # [T, h, w, 3]
        return np.ascontiguousarray(center_crop(frames, size))  # [T, s, s, 3] as the gallery

    return explorer.caches.frames.get_or_compute((str(path), num_frames, size), decode)
