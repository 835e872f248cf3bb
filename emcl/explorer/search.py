"""The Search tab's service: base and EMCL rankings of the gallery for one text query."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from emcl.core.em import EMParams
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import KnobError, Knobs, clean_text
from emcl.explorer.metrics import similarity
from emcl.explorer.results import SearchResult
from emcl.explorer.snapshot import Snapshot, normalise_caption
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import SEARCH_BLOCK, Hit, Ranking, rank_query

NO_EM = EMParams(k=1, iters=0, lam=1.0, beta=0.0, init="reference", seed=0)


def example_queries(ctx: ServiceContext, n: int = 8) -> list[str]:
    """``n`` captions spread over the caption bank (examples for the search box)."""
    captions = ctx.snapshot.captions
    if not captions:
        return []
    step = max(1, len(captions) // n)
    return list(captions[::step][:n])


def rank(ctx: ServiceContext, query: object, knobs: Knobs) -> SearchResult:
    """Base and EMCL rankings of the gallery for ``query`` (see :class:`Knobs`)."""
    start = time.perf_counter()
    text, cut = clean_text(query)
    snap = ctx.snapshot
    snap.view(knobs.mode)  # refuses joint mode without a jointly trained checkpoint
    if len(snap.base.index) == 0:
        raise KnobError("the gallery has no rankable videos")
    with torch.inference_mode():
        plain, ranking, truncated = _rankings(ctx, snap, text, knobs)
        columns = _Columns.from_rankings(plain, ranking)
        notices = list(ranking.notices)
        key = normalise_caption(text)
        if knobs.isoftmax:
            columns = _inverted_softmax(ctx, snap, knobs, key, columns)
            notices.append(
                f"inverted softmax (τ={knobs.isoftmax_temp:g}) with the gallery's "
                f"{len(snap.captions)} captions as the query bank"
            )
    if truncated or cut:
        notices.insert(0, "the query was longer than the text encoder's context and was truncated")
    targets = snap.lookup.get(key, ())
    target_pos = {snap.position[v] for v in targets}
    return SearchResult(
        query=text,
        knobs=knobs,
        base=columns.hits(snap, "base", target_pos, knobs.top_k),
        emcl=columns.hits(snap, "emcl", target_pos, knobs.top_k),
        effective_k=ranking.effective_k,
        context=knobs.context,
        em_rows=ranking.em_rows,
        rec_ratio=ranking.rec_ratio,
        ms=(time.perf_counter() - start) * 1000.0,
        targets=tuple(targets),
        target_rank={c: columns.best_rank(c, target_pos) for c in ("base", "emcl")},
        notices=notices,
        gallery_size=len(snap.base.index),
    )


def _rankings(
    ctx: ServiceContext, snap: Snapshot, text: str, knobs: Knobs
) -> tuple[Ranking, Ranking, bool]:
    """(the base column's ranking, the EMCL column's ranking, whether the text was cut).

    In ``inference`` mode both columns come from one call on the base model; in ``joint``
    mode the base column is the base checkpoint without EM and the EMCL column the jointly
    trained checkpoint with EM."""
    # Every hit (with its score) is needed only to re-sort with the inverted softmax;
    # otherwise the top-k hits plus rank_query's full rank maps are enough.
    need = len(snap.base.index) if knobs.isoftmax else knobs.top_k
    options = {
        "context": knobs.context,
        "shortlist_size": knobs.shortlist,
        "top_k": need,
        "block_videos": SEARCH_BLOCK,
    }
    params, prior = knobs.params(), ctx.prior(knobs)
    query_base, cut_base = ctx.encode_query(snap.base, text)
    base_index, base_items = snap.base.ranked()  # long videos: their windows (best one wins)
    # Large galleries: the ANN's candidates, scored exactly (the inverted softmax and the
    # gallery and block contexts rank every video, so they stay exact).
    exact = knobs.isoftmax or knobs.context != "shortlist"
    rows = max(knobs.shortlist, need)

    def shortlist(index: GalleryIndex, query: Tensor) -> GalleryIndex:
        return index if exact else index.for_query(query, rows)

    base_index = shortlist(base_index, query_base)
    try:
        if knobs.mode == "inference":
            ranking = rank_query(
                query_base, base_index, params, prior=prior, items=base_items, **options
            )
            return ranking, ranking, cut_base
        emcl_view = snap.view(knobs.mode)
        query_emcl, cut_emcl = ctx.encode_query(emcl_view, text)
        plain = rank_query(
            query_base, base_index, NO_EM, shortlist_size=1, top_k=need, items=base_items
        )
        emcl_index, emcl_items = emcl_view.ranked()
        emcl_index = shortlist(emcl_index, query_emcl)
        ranking = rank_query(
            query_emcl, emcl_index, params, prior=prior, items=emcl_items, **options
        )
        return plain, ranking, cut_base or cut_emcl
    except ValueError as error:
        raise KnobError(str(error)) from None


class _Columns:
    """Both columns as gallery positions in rank order, their scores and rank maps, and the
    rankings' own hits by position (their matched window and cosine travel with them)."""

    def __init__(
        self,
        order: dict[str, list[int]],
        score: dict[str, dict[int, float]],
        rank: dict[str, dict[int, int]],
        ranked: dict[str, dict[int, Hit]],
    ):
        self.order, self.score, self.rank, self.ranked = order, score, rank, ranked

    @classmethod
    def from_rankings(cls, plain: Ranking, ranking: Ranking) -> _Columns:
        hits = {"base": plain.base, "emcl": ranking.emcl}
        return cls(
            order={column: [h.index for h in found] for column, found in hits.items()},
            score={column: {h.index: h.score for h in found} for column, found in hits.items()},
            rank={"base": plain.base_rank, "emcl": ranking.emcl_rank},
            ranked={column: {h.index: h for h in found} for column, found in hits.items()},
        )

    def hits(self, snap: Snapshot, column: str, targets: set[int], top_k: int) -> list[Hit]:
        other = "base" if column == "emcl" else "emcl"
        mine, theirs = self.rank[column], self.rank[other]
        return [
            Hit(
                video_id=snap.records[p].video_id,
                index=p,
                score=float(self.score[column][p]),
                rank=mine[p],
                # Joint mode with an ANN shortlist: the other model may not have ranked p.
                other_rank=theirs.get(p),
                rank_change=theirs[p] - mine[p] if column == "emcl" and p in theirs else None,
                is_target=p in targets,
                span=self.ranked[column][p].span,
                cosine=self.ranked[column][p].cosine,
            )
            for p in self.order[column][:top_k]
        ]

    def best_rank(self, column: str, targets: set[int]) -> int | None:
        found = [self.rank[column][p] for p in targets if p in self.rank[column]]
        return min(found) if found else None


def _inverted_softmax(
    ctx: ServiceContext, snap: Snapshot, knobs: Knobs, query_key: str, columns: _Columns
) -> _Columns:
    """Both columns re-sorted by the inverted softmax, with the caption bank scored the same
    way as each column (the EMCL column's bank with EM at these knobs)."""
    size = len(snap.base.index)
    emcl_candidates = min(knobs.shortlist, size) if knobs.context == "shortlist" else size
    emcl_bank = similarity(ctx, snap, snap.view(knobs.mode), knobs, "inference")
    banks = {"base": (snap.base.base_sim, size), "emcl": (emcl_bank, emcl_candidates)}
    order, score = {}, {}
    for column, (bank, n_rerank) in banks.items():
        order[column], score[column] = qb_norm(
            snap,
            bank,
            knobs.isoftmax_temp,
            query_key,
            columns.order[column],
            columns.score[column],
            n_rerank,
        )
    rank = {c: {pos: r + 1 for r, pos in enumerate(order[c])} for c in order}
    return _Columns(order, score, rank, columns.ranked)


def qb_norm(
    snap: Snapshot,
    bank: Tensor,  # [Nt, M] the caption bank's scores, scored like the column
    tau: float,
    query_key: str,
    order: list[int],
    scores: dict[int, float],
    n_rerank: int,
) -> tuple[list[int], dict[int, float]]:
    """Inverted softmax for one query (QB-Norm): each video's score times the softmax of its
    scores over [this query; the caption bank] (docs/method.md §3). A bank caption equal to
    the query is left out, so a known caption gets the metrics' inverted softmax. Re-sorts the
    first ``n_rerank`` positions (the EM candidates); the rest keep their order below them."""
    keep = [i for i, c in enumerate(snap.captions) if normalise_caption(c) != query_key]
    bank = bank[keep]
    head = order[:n_rerank]
    s = torch.tensor([scores[p] for p in head], dtype=torch.float64)  # [C]
    columns = bank[:, head].double()  # [Nt', C] (index rows are gallery positions)
    log_z = torch.logsumexp(torch.cat([s[None], columns]) / tau, dim=0)  # [C]
    new = s * torch.exp(s / tau - log_z)
    resorted = [head[i] for i in torch.argsort(new, descending=True, stable=True).tolist()]
    new_scores = dict(scores)
    new_scores.update({p: float(v) for p, v in zip(head, new.tolist(), strict=True)})
    return resorted + order[n_rerank:], new_scores
