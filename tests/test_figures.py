"""Every figure the app reports, against a hand computation, with inputs on both sides of
each threshold it uses.

Figures: effective K (docs/method.md §1.5b), EMCL's size ‖β·μzᵀ‖/‖x‖ (§1.11), the modality
gap, grounding against chance (§5), rank changes, and the words and tables that show them
(ui/text.py, ui/plots.py). The EM is the plain one of tests/test_columns_reference.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from test_columns_reference import (
    KNOBS,
    METRICS_BLOCK,
    TRAINED_BLOCK,
    lower_median,
    numerical_rank,
    plain_emcl,
    pool,
    ratios,
    setting_of,
    trained_prior,
)
from torch import Tensor

from emcl.core.em import effective_k
from emcl.core.subspace import Grounding, align_batch, grounding, total
from emcl.explorer.projection import modality_gap
from emcl.retrieval.ranking import Hit
from ui.plots import change_badge, map_figure, results_html, sweep_figure
from ui.text import (
    em_size_line,
    grounding_table,
    metrics_caption,
    metrics_em_line,
    rec_hint,
    rec_size,
)


def z_with_singular_values(values: list[float], d: int = 12) -> torch.Tensor:
    """A ``[d, K]`` matrix with exactly these singular values."""
    k = len(values)
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    return (u * torch.tensor(values, dtype=torch.float64)) @ v.T


# ---------------------------------------------------------------------------------------------
# Effective K: singular values above 1e-3 of the largest
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([1.0, 0.5, 1.01e-3, 0.99e-3], 3),  # just above and just below the cut
        ([2.0, 2.02e-3, 1.98e-3, 0.0], 2),  # the cut scales with the largest
        ([5.0, 4.0, 3.0, 2.0], 4),
        ([0.3, 0.0, 0.0, 0.0], 1),
        ([0.0, 0.0, 0.0, 0.0], 0),  # no EM: nothing is effective
    ],
)
def test_effective_k_counts_singular_values_above_the_cut(values, want):
    z = z_with_singular_values(values)
    assert int(effective_k(z.float())) == want == numerical_rank(z)
    batched = torch.stack([z, z_with_singular_values([1.0, 1.0, 1.0, 1.0])]).float()
    assert effective_k(batched).tolist() == [want, 4]


# ---------------------------------------------------------------------------------------------
# The metrics table's effective K and EMCL's size, both protocols, both modes
# ---------------------------------------------------------------------------------------------
def inference_em_size(explorer, knobs) -> tuple[int, float]:
    """The first 64 × 64 block of the active model: 64 videos, then 64 captions, unit norm."""
    view = explorer.snapshot.view(knobs.mode)
    videos = F.normalize(view.gallery.video_embeddings.float(), dim=-1)
    rows = [view.gallery.video_ids.index(r.video_id) for r in explorer.snapshot.records]
    with torch.inference_mode():
        texts = view.encoder.encode_texts(list(explorer.snapshot.captions))["sentence"].float()
    x = torch.cat(
        [videos[rows][: METRICS_BLOCK[1]], F.normalize(texts, dim=-1)[: METRICS_BLOCK[0]]]
    )
    prior = trained_prior(explorer) if knobs.init == "prior" else None
    run = plain_emcl(x, setting_of(knobs), prior)
    return numerical_rank(run.z), lower_median(ratios(x, run, knobs.beta))


def trained_em_size(explorer, knobs) -> tuple[int, float]:
    """Every 32 × 32 EMCL-Net block of the active model: EMCL's size is the median over all
    their rows (pooled videos and captions); effective K the median over the first video
    block's full caption blocks."""
    snap = explorer.snapshot
    view = snap.view(knobs.mode)
    rows = [view.gallery.video_ids.index(r.video_id) for r in snap.records]
    frames = view.gallery.frame_embeddings[rows].double()
    with torch.inference_mode():
        texts = view.encoder.encode_texts(list(snap.captions))["sentence"].double()
    prior = trained_prior(explorer) if knobs.init == "prior" else None
    bt, bv = TRAINED_BLOCK
    sizes, first_column = [], []
    for v0 in range(0, len(frames), bv):
        for t0 in range(0, len(texts), bt):
            t, vids = texts[t0 : t0 + bt], range(v0, min(v0 + bv, len(frames)))
            x = torch.stack([pool(t[a], frames[b]) for a in range(len(t)) for b in vids] + list(t))
            run = plain_emcl(x, setting_of(knobs), prior)
            sizes += ratios(x, run, knobs.beta)
            if v0 == 0 and len(t) == bt:
                first_column.append(numerical_rank(run.z))
    return lower_median(first_column), lower_median(sizes)


@pytest.mark.parametrize("protocol", ["trained", "inference"])
@pytest.mark.parametrize("mode", ["inference", "joint"])
def test_metrics_effective_k_and_size_equal_a_hand_computation(explorer, protocol, mode):
    knobs = replace(KNOBS, mode=mode, k=7, lam=0.05, beta=5.0)
    result = explorer.metrics(knobs, protocol)
    by_hand = trained_em_size if protocol == "trained" else inference_em_size
    k, size = by_hand(explorer, knobs)
    assert result.effective_k == k and 1 < k <= knobs.k
    assert result.rec_ratio == pytest.approx(size, rel=1e-4)
    # The text under the knobs and the table's caption report this result's own figures.
    line = metrics_em_line(result)
    assert line.startswith(f"effective K: **{k}** ") and f">{rec_size(size)}<" in line
    where = "median over every EM block" if protocol == "trained" else "first EM block"
    assert where in line and rec_hint(size) in line
    assert f"EMCL's size {rec_size(size)}" in metrics_caption(result, knobs)
    n_videos = len(explorer.snapshot.records)
    assert f"{len(explorer.snapshot.captions)} captions × {n_videos} videos" in metrics_caption(
        result, knobs
    )


def test_trained_effective_k_is_the_lower_median_of_the_first_video_block():
    """Three caption blocks whose rows span 2, 6 and 11 feature dimensions against one video
    block: their effective Ks differ, so a mean or another block's value would show."""
    from emcl.core.em import EMParams
    from emcl.retrieval.emclnet_table import EmclNetTable

    g = torch.Generator().manual_seed(4)
    dim, bt, bv, n_frames = 16, 4, 3, 2
    frames = torch.zeros(bv, n_frames, dim)
    frames[..., :2] = torch.randn(bv, n_frames, 2, generator=g)
    texts = torch.zeros(3 * bt, dim)
    for block, width in enumerate((2, 6, 11)):
        texts[block * bt : (block + 1) * bt, :width] = torch.randn(bt, width, generator=g)
    params = EMParams(k=12, iters=3, lam=0.5, beta=1.0, init="data", seed=2)
    table = EmclNetTable(texts, frames, block=(bt, bv))
    ks = []
    for block in range(3):
        t = texts[block * bt : (block + 1) * bt].double()
        x = torch.stack([pool(t[a], frames[b]) for a in range(bt) for b in range(bv)] + list(t))
        ks.append(numerical_rank(plain_emcl(x, setting_of(params)).z))
    assert len(set(ks)) == 3 and lower_median(ks) != round(sum(ks) / 3)
    assert table.terms(params).effective_k == lower_median(ks)


def test_the_two_protocols_report_their_own_size(explorer):
    """A caption must not show the other protocol's EMCL size: the two differ here."""
    knobs = replace(KNOBS, beta=5.0)
    trained, inference = explorer.metrics(knobs, "trained"), explorer.metrics(knobs, "inference")
    assert rec_size(trained.rec_ratio) != rec_size(inference.rec_ratio)
    assert rec_size(trained.rec_ratio) in metrics_caption(trained, knobs)
    assert rec_size(inference.rec_ratio) not in metrics_caption(trained, knobs)


def test_metrics_with_em_off_report_zero(explorer):
    for protocol in ("trained", "inference"):
        result = explorer.metrics(replace(KNOBS, iters=0), protocol)
        assert (result.effective_k, result.rec_ratio) == (0, 0.0)
        assert "EMCL is off" in metrics_em_line(result)


# ---------------------------------------------------------------------------------------------
# EMCL's size in words
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "word"),
    [
        (0.0, "EMCL is off"),
        (1e-9, "tiny"),
        (0.0199, "tiny"),
        (0.0201, "noticeably"),
        (0.4999, "noticeably"),
        (0.5, "noticeably"),
        (0.5001, "large"),
        (3.0, "large"),
    ],
)
def test_size_hint_on_each_side_of_its_cuts(ratio, word):
    assert word in rec_hint(ratio)
    assert rec_hint(ratio) in em_size_line(3, ratio, "here")


@pytest.mark.parametrize(
    ("ratio", "text"),
    [(0.0, "0 %"), (0.012345, "1.23 %"), (0.5, "50 %"), (1.2345, "123 %"), (0.0001234, "0.0123 %")],
)
def test_size_is_shown_in_percent_with_three_digits(ratio, text):
    assert rec_size(ratio) == text
    assert f">{text}<" in em_size_line(2, ratio, "here")


# ---------------------------------------------------------------------------------------------
# Rank changes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "other", "top_k", "text"),
    [
        (1, 3, 8, "↑1"),
        (-1, 2, 8, "↓1"),
        (0, 4, 8, "="),
        (5, 8, 8, "↑5"),  # base rank exactly top-k: still inside it
        (5, 9, 8, "new"),  # one below top-k: entered from below
        (None, None, 8, "new"),  # not among the base candidates
        (12, 15, 20, "↑12"),
        (-7, 1, 20, "↓7"),
    ],
)
def test_change_badge_on_each_side_of_its_cuts(change, other, top_k, text):
    badge = change_badge(change, other, top_k)
    label = re.sub(r"<[^>]+>", "", badge)
    assert label == text
    if other is not None:
        assert f"base rank {other}" in badge or text == "="
    assert change_badge(change, other, top_k, is_emcl=False) == ""


def hit(index: int, rank: int, other: int | None, score: float, cosine: float) -> Hit:
    change = other - rank if other is not None else None
    return Hit(f"v{index}", index, score, rank, other, change, cosine=cosine)


def test_result_cards_show_the_rank_change_and_the_scores():
    rows = [hit(0, 1, 3, 0.5, 0.5), hit(1, 2, 1, 0.5004, 0.5), hit(2, 3, 9, 0.5006, 0.5)]
    html = results_html(rows, 8, lambda v: f"/{v}", lambda v: "", "emcl")
    labels = [
        re.sub(r"<[^>]+>", "", m)
        for m in re.findall(r'<span class="emcl-change[^>]*>.*?</span>', html)
    ]
    assert labels == ["↑2", "↓1", "new"]
    # The ranking score is shown beside the cosine only when it differs by more than 5e-4.
    assert html.count("emcl-rank-score") == 1 and ">0.50<" in html
    assert "emcl-change" not in results_html(rows, 8, str, str, "base")


def test_search_rank_changes_are_base_rank_minus_emcl_rank(explorer):
    snap = explorer.snapshot
    text = snap.captions[11]
    knobs = replace(KNOBS, context="gallery", top_k=30)
    result = explorer.rank(text, knobs)
    with torch.inference_mode():
        query = F.normalize(snap.base.encoder.encode_texts([text])["sentence"][0].float(), dim=-0)
    rows = [snap.base.gallery.video_ids.index(r.video_id) for r in snap.records]
    cosine = F.normalize(snap.base.gallery.video_embeddings[rows].float(), dim=-1) @ query
    order = torch.argsort(cosine, descending=True, stable=True).tolist()
    base_rank = {p: r + 1 for r, p in enumerate(order)}
    moved = set()
    for h in result.emcl:
        assert h.rank_change == base_rank[h.index] - h.rank
        badge = change_badge(h.rank_change, h.other_rank, knobs.top_k)
        assert badge == change_badge(base_rank[h.index] - h.rank, base_rank[h.index], knobs.top_k)
        moved.add(re.sub(r"<[^>]+>", "", badge)[0])
    assert {"↑", "↓"} <= moved  # the setting moves videos both ways: both signs exercised


# ---------------------------------------------------------------------------------------------
# The modality gap
# ---------------------------------------------------------------------------------------------
def test_modality_gap_by_hand():
    videos = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # unit: (1, 0), (0, 1): centroid (.5, .5)
    texts = torch.tensor([[3.0, 0.0], [0.0, 0.0001], [6.0, 0.0]])  # (1,0),(0,1),(1,0)
    want = ((0.5 - 2 / 3) ** 2 + (0.5 - 1 / 3) ** 2) ** 0.5
    assert modality_gap(videos, texts) == pytest.approx(want, abs=1e-6)
    assert modality_gap(texts, videos) == pytest.approx(want, abs=1e-6)
    assert modality_gap(videos, videos * 7) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("max_points", [2000, 40])
def test_map_gaps_equal_a_hand_computation(explorer, max_points):
    """Before and after one EM run over every mapped point (the gallery context); with a
    sample, over the sampled points only."""
    snap = explorer.snapshot
    knobs = replace(KNOBS, beta=6.0)
    result = explorer.embedding_map(knobs, method="pca", max_points=max_points)
    view = snap.view(knobs.mode)
    videos = [snap.position[i.removeprefix("video:")] for i in result.item_ids if i[0] == "v"]
    captions = [int(i.removeprefix("text:")) for i in result.item_ids if i[0] == "t"]
    if max_points < len(snap.records):
        assert len(videos) == max_points // 2 and result.note.startswith("SAMPLE")
    rows = [view.gallery.video_ids.index(snap.records[p].video_id) for p in videos]
    with torch.inference_mode():
        sentences = view.encoder.encode_texts([snap.captions[c] for c in captions])["sentence"]
    x = torch.cat(
        [F.normalize(view.gallery.video_embeddings[rows].float(), dim=-1),
         F.normalize(sentences.float(), dim=-1)]
    )  # fmt: skip
    after = plain_emcl(x, setting_of(knobs)).out

    def gap(rows: torch.Tensor) -> float:
        unit = F.normalize(rows, dim=-1)
        return float((unit[: len(videos)].mean(0) - unit[len(videos) :].mean(0)).norm())

    assert result.gap_before == pytest.approx(gap(x.double()), abs=1e-5)
    assert result.gap_after == pytest.approx(gap(after), abs=1e-4)
    assert abs(result.gap_after - result.gap_before) > 1e-3  # EMCL moved the centroids
    figure = map_figure(
        result.coords_before, result.coords_after, result.modality, result.labels,
        result.item_ids, result.gap_before, result.gap_after, result.method,
    )  # fmt: skip
    titles = [a.text for a in figure.layout.annotations]
    assert titles[0].endswith(f"{gap(x.double()):.3f}") and titles[0].startswith("before")
    assert titles[1].endswith(f"{gap(after):.3f}") and titles[1].startswith("after")


# ---------------------------------------------------------------------------------------------
# Grounding against chance
# ---------------------------------------------------------------------------------------------
LEXICON = {"red": "red", "ball": "ball", "jumps": "jump", "blue": "blue", "star": "star"}


def test_grounding_scores_only_words_seen_in_some_but_not_all_frames():
    frames = [["red", "ball"], ["red", "ball", "jump"], ["red", "star"], ["red", "blue"]]
    words = ["the", "red", "ball", "jumps", "blue", "star"]
    links = [0, 0, 0, 0, 3, 1]
    g = grounding(words, links, frames, LEXICON)
    # "red" is in all 4 frames and "the" names nothing: unscored. ball 2/4 (hit), jump 1/4
    # (miss: frame 0), blue 1/4 (hit), star 1/4 (miss: frame 1).
    assert g.correct == [None, None, True, False, True, False]
    assert (g.hits, g.scored) == (2, 4)
    assert g.chance == pytest.approx(2 / 4 + 1 / 4 + 1 / 4 + 1 / 4)
    assert g.score == pytest.approx(0.5) and g.chance_score == pytest.approx(1.25 / 4)
    # On each side of "some but not all": shown in 1 and in 3 of 4 frames is scored, in 0 or 4 not.
    for shown, scored in ((0, False), (1, True), (3, True), (4, False)):
        concept_frames = [["ball"] if t < shown else [] for t in range(4)]
        assert (grounding(["ball"], [0], concept_frames, LEXICON).scored == 1) is scored
    every = grounding(words, links, frames, LEXICON, informative_only=False)
    assert (every.hits, every.scored, every.chance) == (3, 5, 2.25)  # "red" (4 of 4) counted
    pooled = total([g, every])
    assert (pooled.hits, pooled.scored) == (5, 9)
    assert pooled.chance_score == pytest.approx((1.25 + 2.25) / 9)


@pytest.fixture(scope="module")
def truth(explorer_inputs) -> tuple[dict, dict]:
    """The demo world's ground truth read from its files (not through the explorer)."""
    world = explorer_inputs["world"]
    data = json.loads((world / "frame_concepts.json").read_text())
    lexicon = json.loads((world / "lexicon.json").read_text())
    return {v: c["concepts"] for v, c in data["clips"].items()}, lexicon


def hand_grounding(words, links, frames, lexicon) -> tuple[int, int, float]:
    hits = scored = 0
    chance = 0.0
    for word, frame in zip(words, links, strict=True):
        concept = lexicon.get("".join(ch for ch in word.lower() if ch.isalpha()))
        shown = sum(concept in f for f in frames) if concept else 0
        if concept and 0 < shown < len(frames):
            hits += concept in frames[frame]
            scored += 1
            chance += shown / len(frames)
    return hits, scored, chance


def informative_pairs(explorer, concepts, lexicon) -> list[tuple[str, str]]:
    snap = explorer.snapshot
    found = []
    for video, caption in zip(snap.caption_video, snap.captions, strict=True):
        n_frames = len(concepts[video])
        for word in caption.split():
            concept = lexicon.get("".join(ch for ch in word.lower() if ch.isalpha()))
            if concept and 0 < sum(concept in f for f in concepts[video]) < n_frames:
                found.append((video, caption))
                break
    return found


def pair_inputs(view, video: str, caption: str) -> tuple[list[str], Tensor, Tensor]:
    """The kept words, their token states ``[L, D]`` and the video's frames ``[T, D]``."""
    with torch.inference_mode():
        out = view.encoder.encode_texts([caption])
    words = out["words"][0]
    keep = [i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)]
    vectors = out["word_tokens"][0][out["word_mask"][0]][keep].float()
    frames = view.gallery.frame_embeddings[view.gallery.video_ids.index(video)].float()
    return [words[i] for i in keep], vectors, frames


def test_pair_grounding_size_and_effective_k_equal_a_hand_computation(explorer, truth):
    """On a pair whose subspace and full-space links score differently (so the two figures
    cannot be swapped unnoticed)."""
    concepts, lexicon = truth
    knobs = replace(KNOBS, init="data", lam=0.02, k=8, beta=2.0)
    view = explorer.snapshot.view(knobs.mode)
    for video, caption in informative_pairs(explorer, concepts, lexicon):
        result = explorer.align(video, caption, knobs, words="tokens")
        a = result.alignment
        words, vectors, frames = pair_inputs(view, video, caption)
        # Full space: each word's closest frame by cosine; auto: the links the view draws.
        full = (F.normalize(vectors, dim=-1) @ F.normalize(frames, dim=-1).T).argmax(1).tolist()
        by_hand = {
            "full": hand_grounding(words, full, concepts[video], lexicon),
            "auto": hand_grounding(words, a.links(-1)[0].tolist(), concepts[video], lexicon),
        }
        if by_hand["full"][0] != by_hand["auto"][0]:
            break
    else:
        raise AssertionError("no pair whose subspace and full-space links score differently")
    assert a.words == words and a.links(None)[0].tolist() == full
    x = torch.cat([F.normalize(frames, dim=-1), F.normalize(vectors, dim=-1)])
    run = plain_emcl(x, setting_of(knobs))
    assert a.effective_k == numerical_rank(run.z) and a.effective_k > 1
    assert a.rec_ratio == pytest.approx(lower_median(ratios(x, run, knobs.beta)), rel=1e-4)
    for label, (hits, scored, chance) in by_hand.items():
        g = result.grounding[label]
        assert (g.hits, g.scored) == (hits, scored) and scored > 0
        assert g.chance == pytest.approx(chance)
        assert 0 < g.chance_score < 1
    table = grounding_table(result, "auto", {"tokens": None, "alone": None})
    for label, (hits, scored, _) in by_hand.items():
        row = "| subspaces, auto |" if label == "auto" else "| full space |"
        cells = table.split(row)[1].split("\n")[0]
        assert f"{100 * hits / scored:.0f}% ({hits}/{scored})" in cells
    chance_row = table.split("| chance |")[1].split("\n")[0]
    assert f"{100 * by_hand['auto'][2] / by_hand['auto'][1]:.0f}%" in chance_row


def test_split_grounding_pools_every_pair(explorer, truth):
    """The test split's figure: every scored link of every (video, first caption) weighs one,
    beside chance, in the table with its interval. Full-space links by hand; the subspace
    links from align_batch (tests/test_subspace.py checks it against one pair at a time)."""
    concepts, lexicon = truth
    knobs = replace(KNOBS, init="data", lam=0.02, k=8, beta=2.0)
    average = explorer.grounding_average(knobs, words="tokens")
    snap = explorer.snapshot
    view = snap.view(knobs.mode)
    pairs = [(r.video_id, r.captions[0]) for r in snap.records if r.video_id in concepts]
    assert average.pairs == len(pairs)
    with torch.inference_mode():
        out = view.encoder.encode_texts([c for _, c in pairs])
    kept = [[i for i, w in enumerate(ws) if any(ch.isalnum() for ch in w)] for ws in out["words"]]
    width = max(len(k) for k in kept)
    vectors = torch.zeros(len(pairs), width, out["word_tokens"].shape[-1])
    mask = torch.zeros(len(pairs), width, dtype=torch.bool)
    for b, keep in enumerate(kept):
        vectors[b, : len(keep)], mask[b, : len(keep)] = out["word_tokens"][b, keep].float(), True
    rows = [view.gallery.video_ids.index(v) for v, _ in pairs]
    frames = view.gallery.frame_embeddings[rows].float()  # [B, T, D]
    auto = align_batch(frames, vectors, mask, knobs.params()).auto
    full = (F.normalize(vectors, dim=-1) @ F.normalize(frames, dim=-1).mT).argmax(-1)  # [B, L]
    sums = {"auto": [0, 0, 0.0], "full": [0, 0, 0.0]}
    for b, (video, _) in enumerate(pairs):
        words = [out["words"][b][i] for i in kept[b]]
        for label, links in (("auto", auto), ("full", full)):
            found = hand_grounding(words, links[b, : len(words)].tolist(), concepts[video], lexicon)
            sums[label] = [s + f for s, f in zip(sums[label], found, strict=True)]
    for label in ("auto", "full"):
        g: Grounding = getattr(average, label)
        hits, scored, chance = sums[label]
        assert (g.hits, g.scored) == (hits, scored)
        assert g.chance == pytest.approx(chance, rel=1e-9)
        assert g.score == pytest.approx(hits / scored)
        assert g.chance_score == pytest.approx(chance / scored)
    assert average.auto.hits != average.full.hits  # the two link sets are told apart
    result = explorer.align(*pairs[0], knobs, words="tokens")
    table = grounding_table(result, "auto", {"tokens": average, "alone": None})
    low, high = average.auto_interval
    cell = f"{100 * average.auto.score:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
    assert cell in table.split("| subspaces, auto |")[1].split("\n")[0]
    chance = table.split("| chance |")[1].split("\n")[0].split("|")
    assert chance[1].strip() == f"{100 * sums['auto'][2] / sums['auto'][1]:.0f}%"


# ---------------------------------------------------------------------------------------------
# Sweeps: each point is the metrics table at that value
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "protocol"), [("beta", "trained"), ("iters", "inference")])
def test_sweep_points_are_the_table_at_each_value(explorer, name, protocol):
    knobs = replace(KNOBS, mode="joint")
    result = explorer.sweep(knobs, name, protocol=protocol)
    series = result.series["Base + EMCL at inference"]
    joint = result.series["EMCL checkpoint + EM (joint)"]
    for i in (1, len(result.values) - 1):
        value = result.values[i]
        point = replace(knobs, **{name: int(value) if name == "iters" else value})
        table = dict(explorer.metrics(point, protocol).rows)
        assert series[i] == table["Base + EMCL at inference"]
        assert joint[i] == table["EMCL checkpoint + EM (joint)"]
    assert result.reference["Base"] == table["Base"]
    figure = sweep_figure(result.name, result.values, result.series, result.reference)
    first = figure.data[0]
    assert list(first.x) == result.values
    assert list(first.y) == [m["t2v"]["R1"] for m in series]
