"""Every ranking column and metrics row against an independent computation written here.

The reference below is the EM of docs/method.md §1.3 written out plainly (float64, one block at
a time), the rankings are loops over rows, and the metrics count ranks by hand: nothing is
imported from emcl.core. Settings are non-trivial on purpose (β ≠ 0, K > 1, several
iterations, λ ≠ 1, several EM blocks with a short last one, a shortlist shorter than the
gallery), so a column that agrees with these numbers cannot be off by a setting that a trivial
point would hide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from emcl.core.em import EMParams
from emcl.explorer.knobs import Knobs
from emcl.retrieval.blocks import PROTOCOLS
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import rank_query

# The protocol names of rank_query: the inference module, and the one the checkpoints were
# trained with (docs/method.md §2.1, §2.2).
INFERENCE = "inference"
TRAINED = next(p for p in PROTOCOLS if p != INFERENCE)
SEARCH_BLOCK = 64  # videos per EM run in the search's block context (docs/design.md)
METRICS_BLOCK = (64, 64)  # captions × videos per EM run, inference-module metrics
TRAINED_BLOCK = (32, 32)  # ... and as trained (EMCL-Net)
FRAME_TEMP = 3.0  # EMCL-Net's pooling temperature (docs/method.md §2.3)


# ---------------------------------------------------------------------------------------------
# The reference EM (docs/method.md §1.3, §1.9), one block [N, D] at a time
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    k: int
    iters: int
    lam: float
    beta: float
    init: str  # "reference" | "data" | "prior"
    seed: int = 0


NO_EM = Setting(k=1, iters=0, lam=1.0, beta=0.0, init="data")  # the base column: EMCL off


def setting_of(knobs: Knobs | EMParams) -> Setting:
    return Setting(knobs.k, knobs.iters, knobs.lam, knobs.beta, knobs.init, knobs.seed)


def initial_bases(x: Tensor, s: Setting, prior: Tensor | None) -> Tensor:  # [N, K]
    """The first bases: the authors' seeded sign vector, K seeded feature columns of ``x``, or
    the trained prior; the constant ones copied over the rows."""
    n, d = x.shape
    generator = torch.Generator().manual_seed(s.seed)
    if s.init == "prior":
        return prior.double().reshape(1, -1).expand(n, s.k)
    if s.init == "reference":
        m = torch.empty(1, s.k).normal_(0.0, math.sqrt(2.0 / s.k), generator=generator)
        return (m / (1e-6 + m.norm(dim=0))).double().expand(n, s.k)
    draws = [torch.randperm(d, generator=generator) for _ in range(-(-s.k // d))]
    columns = torch.cat(draws)[: s.k]
    mu = x[:, columns].float().double()
    return mu / (1e-6 + mu.norm(dim=0))


@dataclass(frozen=True)
class Plain:
    out: Tensor  # [N, D] x + β·μzᵀ
    rec: Tensor  # [N, D] μzᵀ
    z: Tensor  # [D, K]


def plain_emcl(x: Tensor, s: Setting, prior: Tensor | None = None) -> Plain:
    """EMCL on one block ``x`` ``[N, D]`` as docs/method.md §1.3 writes it."""
    x = x.double()
    mu = initial_bases(x, s, prior)
    z = torch.zeros(x.shape[1], s.k, dtype=torch.float64)
    for _ in range(s.iters):
        z = torch.softmax(x.T @ mu / s.lam, dim=1)  # E-step, over K
        z = z / (1e-6 + z.sum(dim=0))  # columns sum to 1 over D
        mu = x @ z  # M-step
        mu = mu / (1e-6 + mu.norm(dim=0))  # unit-norm bases
    rec = mu @ z.T
    out = x + s.beta * rec if s.iters and s.beta else x.clone()
    return Plain(out, rec, z)


def numerical_rank(z: Tensor) -> int:
    """Singular values above 1e-3 of the largest (docs/method.md §1.5b), by an SVD."""
    values = torch.linalg.svdvals(z.double())
    top = float(values.max()) if len(values) else 0.0
    return int((values > 1e-3 * top).sum()) if top > 0 else 0


def ratios(x: Tensor, plain: Plain, beta: float) -> list[float]:
    """|β μzᵀ| / |x| per row (docs/method.md §1.11)."""
    return [beta * float(plain.rec[i].norm()) / float(x[i].double().norm()) for i in range(len(x))]


def lower_median(values: list[float]) -> float:
    """The median as the app reports it: the lower middle value for an even count."""
    return sorted(values)[(len(values) - 1) // 2]


def unit(v: Tensor) -> Tensor:
    return v.double() / v.double().norm()


def pool(query: Tensor, frames: Tensor) -> Tensor:
    """EMCL-Net's text-conditioned pooling of one video's frames ``[T, D]`` (docs/method.md
    §2.1): a softmax over frames of ``<t, v_f> / 3``, then the weighted sum."""
    weights = torch.softmax(frames.double() @ query.double() / FRAME_TEMP, dim=0)
    return (weights[:, None] * frames.double()).sum(dim=0)


def by_score(rows: list[int], score: dict[int, float]) -> list[int]:
    return sorted(rows, key=lambda i: -score[i])  # Python's sort is stable


# ---------------------------------------------------------------------------------------------
# One query: the reference columns
# ---------------------------------------------------------------------------------------------
@dataclass
class Columns:
    base_order: list[int]
    emcl_order: list[int]
    base: dict[int, float]  # row -> base score
    emcl: dict[int, float]  # row -> EMCL score (base score outside the EM's candidates)
    cosine: dict[int, float]  # row -> cosine after EMCL
    effective_k: int
    em_rows: int
    rec_ratio: float

    def rank(self, column: str) -> dict[int, int]:
        order = self.base_order if column == "base" else self.emcl_order
        return {row: r + 1 for r, row in enumerate(order)}


def groups_of(order: list[int], context: str, shortlist: int, block: int) -> list[list[int]]:
    """The rows of each EM run (docs/design.md, "EM contexts")."""
    if context == "shortlist":
        return [order[:shortlist]]
    if context == "gallery":
        return [order]
    return [order[i : i + block] for i in range(0, len(order), block)]


def reference_columns(
    query: Tensor,  # [D]
    videos: Tensor,  # [M, D] (any norm)
    s: Setting,
    *,
    context: str,
    shortlist: int,
    block: int,
    frames: Tensor | None = None,  # [M, T, D]: the trained protocol
    prior: Tensor | None = None,
) -> Columns:
    q = unit(query)
    rows = list(range(len(videos)))
    if frames is None:
        items = {i: unit(videos[i]) for i in rows}
    else:
        items = {i: pool(q, frames[i]) for i in rows}
    base = {i: float(unit(items[i]) @ q) for i in rows}
    base_order = by_score(rows, base)
    emcl, cosine = dict(base), dict(base)
    effective, sizes, em_rows = [], [], 0
    groups = groups_of(base_order, context, shortlist, block)
    for group in groups:
        x = torch.stack([items[i] for i in group] + [q])  # [C + 1, D]: videos, then the query
        run = plain_emcl(x, s, prior)
        for j, i in enumerate(group):
            cosine[i] = float(unit(run.out[j]) @ unit(run.out[-1]))
            # The inference module ranks by the dot product, EMCL-Net by the cosine.
            emcl[i] = cosine[i] if frames is not None else float(run.out[j] @ run.out[-1])
        effective.append(numerical_rank(run.z))
        sizes += ratios(x, run, s.beta)
        em_rows = max(em_rows, len(x))
    candidates = [i for group in groups for i in group]
    emcl_order = by_score(candidates, emcl) + [i for i in base_order if i not in set(candidates)]
    return Columns(
        base_order, emcl_order, base, emcl, cosine, min(effective), em_rows, lower_median(sizes)
    )


def assert_column(hits, want_order: list[int], score, cosine, rank, other_rank, is_emcl: bool):
    """Every field of a column's hits against the reference."""
    assert [h.index for h in hits] == want_order[: len(hits)]
    for h in hits:
        assert h.score == pytest.approx(score[h.index], abs=2e-4)
        assert h.cosine == pytest.approx(cosine[h.index], abs=2e-4)
        assert h.rank == rank[h.index]
        assert h.other_rank == other_rank.get(h.index)
        change = other_rank[h.index] - rank[h.index] if is_emcl else None
        assert h.rank_change == change


# ---------------------------------------------------------------------------------------------
# rank_query on a synthetic gallery: both protocols, every context, three initialisations
# ---------------------------------------------------------------------------------------------
N_VIDEOS, DIM, N_FRAMES = 70, 24, 5
SHORTLIST, BLOCK = 20, 16  # 70 videos: four blocks of 16 and a short last block of 6
SETTINGS = {
    "data": Setting(k=5, iters=3, lam=0.4, beta=2.5, init="data", seed=3),
    # The reference init splits by rounding at a sharp λ (docs/method.md §1.5): λ = 1 here.
    "reference": Setting(k=6, iters=4, lam=1.0, beta=4.0, init="reference", seed=7),
    "prior": Setting(k=4, iters=5, lam=0.5, beta=1.5, init="prior"),
}
PRIOR = torch.tensor([[0.9, -0.4, 0.15, -0.8]])


@pytest.fixture(scope="module")
def synthetic() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(11)
    frames = torch.randn(N_VIDEOS, N_FRAMES, DIM, generator=g) + 0.5  # a shared direction
    query = frames[9, 2] + 0.7 * torch.randn(DIM, generator=g)
    return {"frames": frames, "videos": frames.mean(dim=1), "query": query}


@pytest.mark.parametrize("protocol", [INFERENCE, TRAINED])
@pytest.mark.parametrize("context", ["shortlist", "block", "gallery"])
@pytest.mark.parametrize("init", sorted(SETTINGS))
def test_rank_query_columns_equal_the_reference(synthetic, protocol, context, init):
    s = SETTINGS[init]
    ids = [f"v{i}" for i in range(N_VIDEOS)]
    index = GalleryIndex.build(ids, synthetic["videos"], frames=synthetic["frames"])
    params = EMParams(k=s.k, iters=s.iters, lam=s.lam, beta=s.beta, init=s.init, seed=s.seed)
    prior = PRIOR if init == "prior" else None
    got = rank_query(
        synthetic["query"],
        index,
        params,
        prior=prior,
        context=context,
        shortlist_size=SHORTLIST,
        block_videos=BLOCK,
        top_k=N_VIDEOS,
        protocol=protocol,
    )
    want = reference_columns(
        synthetic["query"],
        synthetic["videos"],
        s,
        context=context,
        shortlist=SHORTLIST,
        block=BLOCK,
        frames=synthetic["frames"] if protocol == TRAINED else None,
        prior=prior,
    )
    base_rank, emcl_rank = want.rank("base"), want.rank("emcl")
    assert got.base_rank == base_rank and got.emcl_rank == emcl_rank
    assert_column(got.base, want.base_order, want.base, want.base, base_rank, emcl_rank, False)
    assert_column(got.emcl, want.emcl_order, want.emcl, want.cosine, emcl_rank, base_rank, True)
    assert got.context == context
    assert got.em_rows == want.em_rows
    assert got.effective_k == want.effective_k
    assert got.rec_ratio == pytest.approx(want.rec_ratio, rel=1e-4)
    assert want.emcl_order != want.base_order  # the setting moves the ranking: not a no-op


def test_the_short_last_block_runs_alone(synthetic):
    """A short last block padded or merged with the previous one gives other scores."""
    s = SETTINGS["data"]
    ids = [f"v{i}" for i in range(N_VIDEOS)]
    index = GalleryIndex.build(ids, synthetic["videos"])
    params = EMParams(k=s.k, iters=s.iters, lam=s.lam, beta=s.beta, init=s.init, seed=s.seed)
    got = rank_query(synthetic["query"], index, params, context="block", block_videos=BLOCK,
                     top_k=N_VIDEOS)  # fmt: skip
    want = reference_columns(
        synthetic["query"], synthetic["videos"], s, context="block", shortlist=0, block=BLOCK
    )
    last = want.base_order[-(N_VIDEOS % BLOCK) :]
    merged = reference_columns(
        synthetic["query"], synthetic["videos"], s, context="block", shortlist=0, block=BLOCK + 6
    )
    scores = {h.index: h.score for h in got.emcl}
    for row in last:
        assert scores[row] == pytest.approx(want.emcl[row], abs=2e-4)
    assert any(abs(want.emcl[r] - merged.emcl[r]) > 1e-3 for r in last)


# ---------------------------------------------------------------------------------------------
# The explorer's columns: both modes, every context, with and without the inverted softmax
# ---------------------------------------------------------------------------------------------
KNOBS = Knobs(
    mode="inference", beta=3.0, k=6, iters=4, lam=0.3, init="data", seed=5,
    context="shortlist", shortlist=20, isoftmax=False, isoftmax_temp=0.05, top_k=50,
)  # fmt: skip


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class World:
    """The fixture explorer's inputs, read straight from its galleries and encoders."""

    ids: list[str]  # gallery order
    captions: list[str]
    owner: list[int]  # caption -> video row
    videos: dict[str, Tensor]  # model -> [M, D] video embeddings
    frames: dict[str, Tensor]  # model -> [M, T, D]
    sentences: dict[str, Tensor]  # model -> [Nt, D] caption features as emitted
    encoders: dict


@pytest.fixture(scope="module")
def world(explorer) -> World:
    snap = explorer.snapshot
    ids = [r.video_id for r in snap.records]
    videos, frames, sentences, encoders = {}, {}, {}, {}
    for name, view in (("base", snap.base), ("emcl", snap.emcl)):
        rows = [view.gallery.video_ids.index(v) for v in ids]
        videos[name] = view.gallery.video_embeddings[rows].float()
        frames[name] = view.gallery.frame_embeddings[rows].float()
        with torch.inference_mode():
            sentences[name] = view.encoder.encode_texts(list(snap.captions))["sentence"].float()
        encoders[name] = view.encoder
    owner = [ids.index(v) for v in snap.caption_video]
    return World(ids, list(snap.captions), owner, videos, frames, sentences, encoders)


def encode(world: World, model: str, text: str) -> Tensor:
    with torch.inference_mode():
        return world.encoders[model].encode_texts([text])["sentence"][0].float()


def trained_prior(explorer) -> Tensor:
    return explorer.snapshot.emcl.encoder.model.emcl.prior.detach().clone()


def bank_scores(world: World, model: str, s: Setting, whole: bool, prior) -> Tensor:
    """Captions × videos ``[Nt, M]`` in the inference-module protocol: one EM run per
    64 × 64 block (per the whole bank when ``whole``), scores the outputs' dot products."""
    texts = F.normalize(world.sentences[model].double(), dim=-1)
    videos = F.normalize(world.videos[model].double(), dim=-1)
    nt, nv = len(texts), len(videos)
    bt, bv = (nt, nv) if whole else METRICS_BLOCK
    out = torch.empty(nt, nv, dtype=torch.float64)
    for t0 in range(0, nt, bt):
        for v0 in range(0, nv, bv):
            t, v = texts[t0 : t0 + bt], videos[v0 : v0 + bv]
            run = plain_emcl(torch.cat([v, t]), s, prior) if s.iters and s.beta else None
            vo, to = (run.out[: len(v)], run.out[len(v) :]) if run is not None else (v, t)
            for a in range(len(t)):
                for b in range(len(v)):
                    out[t0 + a, v0 + b] = to[a] @ vo[b]
    return out


def qb_norm(
    order: list[int], score: dict[int, float], bank: Tensor, keep: list[int], tau: float, n: int
) -> tuple[list[int], dict[int, float]]:
    """Inverted softmax for one query: the first ``n`` rows of ``order`` re-scored as
    ``s · softmax over [this query; the bank]`` of ``s / τ`` (docs/method.md §3)."""
    head, new = order[:n], dict(score)
    for p in head:
        column = [score[p]] + [float(bank[c, p]) for c in keep]
        top = max(column)
        total = sum(math.exp((v - top) / tau) for v in column)
        new[p] = score[p] * math.exp((score[p] - top) / tau) / total
    return by_score(head, new) + order[n:], new


def reference_search(explorer, world: World, text: str, knobs: Knobs) -> dict:
    """Both columns of Explorer.rank for ``text``, computed from the models' own outputs."""
    s = setting_of(knobs)
    model = "base" if knobs.mode == "inference" else "emcl"
    prior = trained_prior(explorer) if knobs.init == "prior" else None
    ranked = reference_columns(
        encode(world, model, text), world.videos[model], s, context=knobs.context,
        shortlist=knobs.shortlist, block=SEARCH_BLOCK, prior=prior,
    )  # fmt: skip
    plain = reference_columns(
        encode(world, "base", text), world.videos["base"], NO_EM, context="gallery",
        shortlist=0, block=0,
    )  # fmt: skip
    orders = {"base": plain.base_order, "emcl": ranked.emcl_order}
    scores = {"base": plain.base, "emcl": ranked.emcl}
    if knobs.isoftmax:
        keep = [c for c, cap in enumerate(world.captions) if normalise(cap) != normalise(text)]
        size = len(world.ids)
        banks = {
            "base": (bank_scores(world, "base", NO_EM, False, None), size),
            "emcl": (
                bank_scores(world, model, s, knobs.context == "gallery", prior),
                min(knobs.shortlist, size) if knobs.context == "shortlist" else size,
            ),
        }
        for column, (bank, n) in banks.items():
            orders[column], scores[column] = qb_norm(
                orders[column], scores[column], bank, keep, knobs.isoftmax_temp, n
            )
    ranks = {c: {row: r + 1 for r, row in enumerate(o)} for c, o in orders.items()}
    targets = [i for i, c in zip(world.owner, world.captions, strict=True)
               if normalise(c) == normalise(text)]  # fmt: skip
    return {
        "order": orders,
        "score": scores,
        "cosine": {"base": plain.base, "emcl": ranked.cosine},
        "rank": ranks,
        "targets": targets,
        "columns": ranked,
    }


@pytest.mark.parametrize("isoftmax", [False, True])
@pytest.mark.parametrize("context", ["shortlist", "block", "gallery"])
@pytest.mark.parametrize("mode", ["inference", "joint"])
def test_explorer_columns_equal_the_reference(explorer, world, mode, context, isoftmax):
    text = world.captions[7]  # a known caption: its video is the ground truth
    knobs = replace(KNOBS, mode=mode, context=context, isoftmax=isoftmax)
    got = explorer.rank(text, knobs)
    want = reference_search(explorer, world, text, knobs)
    ranks = want["rank"]
    for column, other in (("base", "emcl"), ("emcl", "base")):
        hits = getattr(got, column)
        assert len(hits) == knobs.top_k
        assert_column(
            hits, want["order"][column], want["score"][column], want["cosine"][column],
            ranks[column], ranks[other], column == "emcl",
        )  # fmt: skip
        targets = set(want["targets"])
        assert [h.is_target for h in hits] == [h.index in targets for h in hits]
        assert got.target_rank[column] == min(ranks[column][t] for t in targets)
    assert got.targets == tuple(world.ids[t] for t in want["targets"])
    columns = want["columns"]
    assert got.effective_k == columns.effective_k
    assert got.em_rows == columns.em_rows
    assert got.rec_ratio == pytest.approx(columns.rec_ratio, rel=1e-4)
    assert want["order"]["emcl"] != want["order"]["base"]


def test_joint_mode_with_the_trained_prior_equals_the_reference(explorer, world):
    """The checkpoint's own EM settings and its momentum prior (the joint default)."""
    knobs = replace(explorer.defaults("joint"), shortlist=24, top_k=40, protocol=INFERENCE)
    assert knobs.init == "prior"
    text = "two small red circles move"
    got = explorer.rank(text, knobs)
    want = reference_search(explorer, world, text, knobs)
    ranks = want["rank"]
    assert_column(got.emcl, want["order"]["emcl"], want["score"]["emcl"], want["cosine"]["emcl"],
                  ranks["emcl"], ranks["base"], True)  # fmt: skip
    assert_column(got.base, want["order"]["base"], want["score"]["base"], want["cosine"]["base"],
                  ranks["base"], ranks["emcl"], False)  # fmt: skip
    assert got.rec_ratio == pytest.approx(want["columns"].rec_ratio, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# The metrics table's rows
# ---------------------------------------------------------------------------------------------
def plain_metrics(sim: Tensor, owner: list[int]) -> dict[str, dict[str, float]]:
    """R@1/5/10, MdR and MnR by counting, for a captions × videos matrix without ties: a
    caption's rank is one plus the videos scored above its own; v2t ranks each video's caption
    groups by their best caption."""

    def summary(ranks: list[int]) -> dict[str, float]:
        out = {f"R{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
        return out | {"MdR": float(np.median(ranks)), "MnR": float(np.mean(ranks))}

    t2v = []
    for a in range(sim.shape[0]):
        mine = float(sim[a, owner[a]])
        t2v.append(1 + sum(float(sim[a, b]) > mine for b in range(sim.shape[1])))
    groups = sorted(set(owner))
    v2t = []
    for v in groups:
        best = {
            g: max(float(sim[a, v]) for a in range(len(owner)) if owner[a] == g) for g in groups
        }
        v2t.append(1 + sum(best[g] > best[v] for g in groups))
    return {"t2v": summary(t2v), "v2t": summary(v2t)}


def plain_inverted_softmax(sim: Tensor, tau: float, dim: int) -> Tensor:
    """``S ⊙ softmax(S / τ)`` over the query axis, times Nt (docs/method.md §3)."""
    return sim * torch.softmax(sim / tau, dim=dim) * sim.shape[0]


def trained_scores(world: World, model: str, s: Setting | None, prior) -> Tensor:
    """Captions × videos as trained (EMCL-Net): text-conditioned pooling of the unnormalised
    features, one EM run per 32 × 32 block on ``[pooled a-major; texts]``, cosines."""
    texts, frames = world.sentences[model].double(), world.frames[model].double()
    nt, nv = len(texts), len(frames)
    bt, bv = TRAINED_BLOCK
    out = torch.empty(nt, nv, dtype=torch.float64)
    for t0 in range(0, nt, bt):
        for v0 in range(0, nv, bv):
            t = texts[t0 : t0 + bt]
            vids = range(v0, min(v0 + bv, nv))
            pooled = [pool(t[a], frames[b]) for a in range(len(t)) for b in vids]  # a-major
            x = torch.stack(pooled + list(t))
            if s is not None and s.iters and s.beta:
                x = plain_emcl(x, s, prior).out
            for a in range(len(t)):
                for j, b in enumerate(vids):
                    out[t0 + a, b] = unit(x[len(pooled) + a]) @ unit(x[a * len(vids) + j])
    return out


def assert_rows(got: dict, want: dict, tolerance: float = 1e-6) -> None:
    for direction in ("t2v", "v2t"):
        for key, value in want[direction].items():
            assert got[direction][key] == pytest.approx(value, abs=tolerance), (direction, key)


@pytest.mark.parametrize("isoftmax", [False, True])
@pytest.mark.parametrize("context", ["block", "gallery"])
def test_inference_protocol_rows_equal_the_reference(explorer, world, context, isoftmax):
    knobs = replace(KNOBS, context=context, isoftmax=isoftmax, isoftmax_temp=0.05)
    got = dict(explorer.metrics(knobs, "inference").rows)
    s, whole = setting_of(knobs), context == "gallery"
    matrices = {
        "Base": bank_scores(world, "base", NO_EM, whole, None),
        "Base + EMCL at inference": bank_scores(world, "base", s, whole, None),
        "EMCL checkpoint, no EM": bank_scores(world, "emcl", NO_EM, whole, None),
        "EMCL checkpoint + EM (joint)": bank_scores(world, "emcl", s, whole, None),
    }
    assert list(got) == list(matrices)
    for label, sim in matrices.items():
        if isoftmax:
            t2v = plain_metrics(plain_inverted_softmax(sim, 0.05, 0), world.owner)["t2v"]
            v2t = plain_metrics(plain_inverted_softmax(sim, 0.05, 1), world.owner)["v2t"]
            want = {"t2v": t2v, "v2t": v2t}
        else:
            want = plain_metrics(sim, world.owner)
        assert_rows(got[label], want)
    assert got["Base + EMCL at inference"] != got["Base"]


@pytest.mark.parametrize("init", ["data", "prior"])
def test_trained_protocol_rows_equal_the_reference(explorer, world, init):
    if init == "prior":
        knobs = explorer.defaults("joint")  # the checkpoint's own K, λ, β and its prior
    else:
        knobs = replace(KNOBS, beta=40.0 / 3, k=5, iters=3, lam=0.5, mode="joint")
    got = dict(explorer.metrics(knobs).rows)
    s = setting_of(knobs)
    prior = trained_prior(explorer) if init == "prior" else None
    rows = {
        "Base": trained_scores(world, "base", None, None),
        "Base + EMCL at inference": trained_scores(world, "base", s, prior),
        "EMCL checkpoint, no EM": trained_scores(world, "emcl", None, None),
        "EMCL checkpoint + EM (joint)": trained_scores(world, "emcl", s, prior),
    }
    assert list(got) == list(rows)
    for label, sim in rows.items():
        assert_rows(got[label], plain_metrics(sim, world.owner))
