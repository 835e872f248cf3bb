"""The UI's words: the knob guide (from emcl/explorer/knob_docs.py) and the Markdown
summaries."""

from __future__ import annotations

from typing import Any

from emcl.core.protocols import BLOCK, INFERENCE, TRAINED
from emcl.core.subspace import GROUP_TOL
from emcl.explorer.knob_docs import guide
from emcl.explorer.knobs import Knobs
from emcl.explorer.results import AlignResult, GroundingAverage, MetricsResult, SearchResult
from emcl.explorer.service import Explorer

# The panel's readout under the knobs (what the knobs mean: emcl/explorer/knob_docs.py).
EM_SIZE_GUIDE = """
- **EMCL's size** (under the knobs) — the median over the EM's rows of ‖β·μzᵀ‖ / ‖x‖, how
  large the added reconstruction is next to the feature it is added to. Below about 1 % EMCL
  cannot change a ranking much whatever the other knobs say (the demo's EMCL-Net features are
  unnormalised and long, so their ratio is small); above about 50 % the reconstruction, which
  the rows of one EM run share, dominates the features (docs/method.md §1.11). The line shows
  the open tab's EM run and names it (protocol, context, blocks or shortlist): the Search tab's
  last search, or the Metrics tab's table.
"""
PROTOCOL_NAMES = {TRAINED: "as trained", INFERENCE: "inference module"}


def knob_guide() -> str:
    """The panel's "What the knobs mean": each knob's meaning, then the readout."""
    return guide() + "\n" + EM_SIZE_GUIDE


SUBSPACE_HELP = f"""
**How this view is made** (our construction; the paper does not say how its Figure 1 was drawn).
The video's 12 frame features (after temporal aggregation) and the caption's word features
(BPE pieces averaged, punctuation dropped) are L2-normalised and stacked, `X = [frames; words]`.
One EM run with the knobs on the left (K, iterations, λ, init, seed) gives responsibilities
`z` [D × K]: subspace k weights feature channel j by `y_k[j] = z[j,k] / max_j z[j,k]`. Columns
whose weight profiles agree within {GROUP_TOL:g} are one *distinct* subspace (the selector).
In subspace k, frame i and word j have similarity `cos(f_i ⊙ y_k, w_j ⊙ y_k)`; each word is
linked to its closest frame and the line is labelled with that similarity. *Auto* links each
word in its dominant subspace (largest `Σ_j y_k[j] x_j² / Σ_j y_k[j]`, the heatmaps' shares).
The lower figure links the same words in the full space, `cos(f_i, w_j)`.
**Grounding** (demo world): the share of links whose frame shows the concept the word names
(`frame_concepts.json`, `lexicon.json`), scored only for words whose concept some but not all of
the clip's frames show (a concept in every frame is found by any frame); *chance* is the expected
score of a random frame of the same video; test-split figures carry 95 % bootstrap intervals over
the clips. **Word features**: the caption's token states, or each word encoded alone as a one-word
caption through the text tower; *best* uses whichever grounds better on the test split.
"""


def summary(explorer: Explorer) -> str:
    snap = explorer.snapshot
    base = snap.base.encoder
    lines = [
        f"**Gallery** {len(snap.records)} videos · {len(snap.captions)} captions · "
        f"{len(snap.skipped)} skipped",
        f"**Base** `{base.config.backbone}` ({base.fingerprint[:8]}) · "
        + (
            f"**EMCL** `{snap.emcl.encoder.config.backbone}` ({snap.emcl.encoder.fingerprint[:8]}, "
            f"trained K {explorer.trained.k})"
            if snap.emcl
            else "no jointly trained EMCL model"
        )
        + f" · {base.device.type}",
    ]
    return "  \n".join(lines)


def gallery_summary(explorer: Explorer) -> str:
    snap = explorer.snapshot
    splits: dict[str, int] = {}
    for r in snap.records:
        splits[r.split] = splits.get(r.split, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
    return (
        f"**{len(snap.records)} videos indexed** ({parts}); **{len(snap.skipped)} skipped** "
        "(listed below with the reason). Uploads are decoded in the guarded decoder, stored "
        "under generated names and added to both models' galleries."
    )


def metrics_caption(result: MetricsResult, knobs: Knobs) -> str:
    note = (
        f"{result.n_texts} captions × {result.n_videos} videos · {result.description} · "
        f"{result.knobs.summary()} · EMCL's size {rec_size(result.rec_ratio)} · "
        f"{result.ms:.0f} ms"
    )
    if knobs.isoftmax:
        note += f" · inverted softmax τ = {knobs.isoftmax_temp:g}"
    return note


def em_size_line(effective_k: int, rec_ratio: float, where: str) -> str:
    """Effective K and EMCL's size (the panel line under the knobs; ``elem_id`` emcl-effk)."""
    return (
        f"effective K: **{effective_k}** · EMCL's size ‖β·μzᵀ‖/‖x‖: "
        f'**<span class="emcl-rec-ratio">{rec_size(rec_ratio)}</span>** ({where}) — '
        f"{rec_hint(rec_ratio)}"
    )


def rec_size(rec_ratio: float) -> str:
    """The ratio in percent, three significant digits."""
    return f"{100 * rec_ratio:.3g} %"


def rec_hint(rec_ratio: float) -> str:
    """What a tiny or a huge reconstruction means (docs/method.md §1.11)."""
    if rec_ratio == 0.0:
        return "EMCL is off"
    if rec_ratio < 0.02:
        return "tiny: EMCL barely moves the features, rankings can hardly change"
    if rec_ratio > 0.5:
        return "large: the shared reconstruction dominates the features"
    return "EMCL moves the features noticeably"


def metrics_run(result: MetricsResult) -> str:
    """The EM run behind a metrics table's effective K and EMCL's size, in words."""
    if result.protocol == TRAINED:
        return "{} · median over every EM block of {} captions × {} videos".format(
            PROTOCOL_NAMES[TRAINED], *BLOCK[TRAINED]
        )
    return "{} · first EM block of {} × {}".format(PROTOCOL_NAMES[INFERENCE], *BLOCK[INFERENCE])


def metrics_em_line(result: MetricsResult) -> str:
    """The panel line of the Metrics tab: its table's EM run."""
    return em_size_line(result.effective_k, result.rec_ratio, f"Metrics · {metrics_run(result)}")


def search_em_line(result: SearchResult) -> str:
    """The panel line of the Search tab: the last search's EM run."""
    return em_size_line(result.effective_k, result.rec_ratio, f"Search · {result.em_run}")


def no_run_line(tab: str) -> str:
    """The panel line of a tab before its first EM run, or of a tab that reports none."""
    if tab == "search":
        return "effective K and EMCL's size: – (Search · no query yet)"
    return (
        "effective K and EMCL's size: shown on the Search and Metrics tabs, each for its own "
        "EM run; the Subspaces tab names its pair's run above its figures"
    )


def grounding_table(
    result: AlignResult, selection: str, averages: dict[str, GroundingAverage | None]
) -> str:
    """This pair's grounding, and the test split's for both word encodings with 95 %
    bootstrap intervals over the pairs, beside chance (docs/method.md §5)."""

    def pct(g: Any) -> str:
        return (
            "–" if g is None or g.score is None else f"{100 * g.score:.0f}% ({g.hits}/{g.scored})"
        )

    def split(average: GroundingAverage | None, which: str) -> str:
        if average is None:
            return "–"
        score = getattr(average, which)
        interval = getattr(average, f"{which}_interval")
        if score.score is None or interval is None:
            return "–"
        low, high = interval
        return f"{100 * score.score:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"

    def chance(g: Any) -> str:
        return "–" if g is None or g.chance_score is None else f"{100 * g.chance_score:.0f}%"

    if result.grounding.get("auto") is None:
        return "_No per-frame ground truth for this video: grounding is scored on the demo world._"
    rows = [("subspaces, auto", "auto"), ("full space", "full")]
    mine = result.words
    names = {"tokens": "token states", "alone": "words alone"}
    lines = [
        f"Grounding: links whose frame shows the word's concept, scored only for concepts "
        f"visible in some but not all frames. This pair uses **{names[mine]}**.",
        "",
        "| links | this pair | test split, token states (95 % CI) | test split, words alone "
        "(95 % CI) |",
        "|---|---|---|---|",
    ]
    here_rows = list(rows)
    if selection != "auto":
        here_rows.insert(1, (f"subspace {selection}", selection))
    for label, key in here_rows:
        if key in ("auto", "full"):
            cells = [split(averages.get(e), key) for e in ("tokens", "alone")]
        else:
            cells = ["–", "–"]
        lines.append(f"| {label} | {pct(result.grounding.get(key))} | {cells[0]} | {cells[1]} |")
    chances = [
        chance(averages[e].auto) if averages.get(e) is not None else "–"
        for e in ("tokens", "alone")
    ]
    lines.append(f"| chance | {chance(result.grounding['auto'])} | {chances[0]} | {chances[1]} |")
    pairs = next((a.pairs for a in averages.values() if a is not None), 0)
    lines.append(f"\n_{pairs} test pairs (each video with its first caption)._")
    return "\n".join(lines)
