"""The Search tab's service: base and EMCL rankings of the gallery for one text query.

Two protocols (``knobs.protocol``, docs/method.md §2):

- ``inference``: the inference module, in the EM context the knobs choose (rank_query).
- ``trained``: both columns as the checkpoints were trained and are evaluated (EMCL-Net). A
  query that is one of the bank's captions is scored in its own caption block against every
  video block: its columns are its rows of the Metrics tab's as-trained table (the cached
  geometry and EM terms of emcl/explorer/metrics.py), so the ground truth's rank in each
  column is its rank in that table. Free text runs alone against its shortlist split into
  blocks of videos (rank_as_trained). ``SearchResult.em_run`` says which rule ran.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor

from emcl.core.em import EMParams
from emcl.core.protocols import BLOCK, TRAINED
from emcl.explorer.context import ServiceContext
from emcl.explorer.knobs import KnobError, Knobs, clean_text
from emcl.explorer.metrics import MAX_TABLE_FLOATS, em_size, similarity, table_floats
from emcl.explorer.results import SearchResult
from emcl.explorer.snapshot import ModelView, Snapshot, normalise_caption
from emcl.retrieval.index import GalleryIndex
from emcl.retrieval.ranking import (
    SEARCH_BLOCK,
    EmSummary,
    Hit,
    ItemMap,
    Ranking,
    rank_as_trained,
    rank_query,
    rank_scores,
    trained_base_scores,
)

NO_EM = EMParams(k=1, iters=0, lam=1.0, beta=0.0, init="reference", seed=0)


def example_queries(ctx: ServiceContext, n: int = 8) -> list[str]:
    """``n`` captions spread over the caption bank (examples for the search box)."""
    captions = ctx.snapshot.captions
    if not captions:
        return []
    step = max(1, len(captions) // n)
    return list(captions[::step][:n])


def rank(ctx: ServiceContext, query: object, knobs: Knobs) -> SearchResult:
    """Base and EMCL rankings of the gallery for ``query`` (see :class:`Knobs` and the module
    doc for ``knobs.protocol``)."""
    start = time.perf_counter()
    text, cut = clean_text(query)
    snap = ctx.snapshot
    snap.view(knobs.mode)  # refuses joint mode without a jointly trained checkpoint
    if len(snap.base.index) == 0:
        raise KnobError("the gallery has no rankable videos")
    key = normalise_caption(text)
    with torch.inference_mode():
        if knobs.protocol == TRAINED:
            run = _trained_rankings(ctx, snap, text, key, knobs)
        else:
            run = _Run(*_rankings(ctx, snap, text, knobs), em_run=_inference_run(snap, knobs))
        plain, ranking = run.plain, run.ranking
        columns = _Columns.from_rankings(plain, ranking)
        notices = [*run.notices, *ranking.notices]
        if knobs.isoftmax:
            columns = _inverted_softmax(ctx, snap, knobs, key, columns, run)
            notices.append(
                f"inverted softmax (τ={knobs.isoftmax_temp:g}) with the gallery's "
                f"{len(snap.captions)} captions as the query bank"
            )
    if run.truncated or cut:
        notices.insert(0, "the query was longer than the text encoder's context and was truncated")
    targets = snap.lookup.get(key, ())
    target_pos = {snap.position[v] for v in targets}
    return SearchResult(
        query=text,
        knobs=knobs,
        base=columns.hits(snap, "base", target_pos, knobs.top_k),
        emcl=columns.hits(snap, "emcl", target_pos, knobs.top_k),
        effective_k=ranking.effective_k,
        context=ranking.context,
        em_rows=ranking.em_rows,
        rec_ratio=ranking.rec_ratio,
        ms=(time.perf_counter() - start) * 1000.0,
        targets=tuple(targets),
        target_rank={c: columns.best_rank(c, target_pos) for c in ("base", "emcl")},
        notices=notices,
        gallery_size=len(snap.base.index),
        protocol=knobs.protocol,
        em_run=run.em_run,
    )


@dataclasses.dataclass(frozen=True)
class _Run:
    """Both columns' rankings and how they were made."""

    plain: Ranking  # the base column's
    ranking: Ranking  # the EMCL column's
    truncated: bool  # the query was cut to the text encoder's context
    em_run: str  # the EMCL column's EM run, in words
    bank_row: int | None = None  # the caption's row of the as-trained table, if it ran there
    notices: tuple[str, ...] = ()


def _inference_run(snap: Snapshot, knobs: Knobs) -> str:
    """The inference module's EM run for ``knobs``, in words."""
    n = len(snap.view(knobs.mode).index)
    if knobs.context == "gallery":
        return f"inference module · gallery: the query and all {n} videos, one EM run"
    if knobs.context == "block":
        return f"inference module · block: the query × blocks of {SEARCH_BLOCK} videos"
    m = min(knobs.shortlist, n)
    return f"inference module · shortlist: the query and its top {m} base candidates, one EM run"


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


def _trained_rankings(
    ctx: ServiceContext, snap: Snapshot, text: str, key: str, knobs: Knobs
) -> _Run:
    """Both columns as trained: a bank caption's rows of the as-trained table, or free text
    against its shortlist in blocks (the module doc)."""
    row = _bank_row(ctx, snap, key)
    if row is None:
        return _free_text(ctx, snap, text, knobs)
    views = (snap.base, snap.view(knobs.mode))
    if any(table_floats(view) > MAX_TABLE_FLOATS for view in views):  # the page offers no table
        notice = "the as-trained table of this gallery is too large to keep: ranked as free text"
        return dataclasses.replace(_free_text(ctx, snap, text, knobs), notices=(notice,))
    return _bank_caption(ctx, snap, row, knobs)


def _bank_row(ctx: ServiceContext, snap: Snapshot, key: str) -> int | None:
    """The first caption row of the bank whose text is ``key`` (normalised), if any."""

    def rows() -> dict[str, int]:
        first: dict[str, int] = {}
        for i, caption in enumerate(snap.captions):
            first.setdefault(normalise_caption(caption), i)
        return first

    return ctx.caches.similarity.get_or_compute((snap.version, "caption rows"), rows).get(key)


def _table(ctx: ServiceContext, snap: Snapshot, view: ModelView, knobs: Knobs | None) -> Tensor:
    """``view``'s as-trained table ``[Nt, M]`` (columns by index position), with EM at
    ``knobs`` or without (``None``). It is the Metrics tab's table (the same cached geometry and
    EM terms, emcl/explorer/metrics.py); its scores at these knobs are kept, so every further
    caption reads a row."""
    point = knobs if knobs is not None and knobs.iters > 0 and knobs.beta != 0.0 else None
    key = (snap.version, view.name, TRAINED, "table", point.em_key() if point else None)
    return ctx.caches.similarity.get_or_compute(
        key, lambda: similarity(ctx, snap, view, point, TRAINED)[:, view.index.rows]
    )


def _bank_caption(ctx: ServiceContext, snap: Snapshot, row: int, knobs: Knobs) -> _Run:
    """Both columns of bank caption ``row``: its rows of the as-trained tables."""
    view = snap.view(knobs.mode)
    need = len(snap.base.index) if knobs.isoftmax else knobs.top_k
    base = _table(ctx, snap, snap.base, None)[row]
    plain = rank_scores(snap.base.index, base, base, EmSummary("block", 0, 0, 0.0), top_k=need)
    own_base = base if view is snap.base else _table(ctx, snap, view, None)[row]
    size_key = (snap.version, view.name, TRAINED, "em size", knobs.em_key())
    effective_k, rec_ratio = ctx.caches.similarity.get_or_compute(
        size_key, lambda: em_size(ctx, snap, knobs, TRAINED)
    )
    bt, bv = BLOCK[TRAINED]
    n_texts, n_videos = len(snap.captions), len(view.index)
    texts = min(bt, n_texts - row // bt * bt)
    rows = texts * min(bv, n_videos) + texts
    em = EmSummary("block", effective_k, rows if effective_k else 0, rec_ratio)
    emcl = _table(ctx, snap, view, knobs)[row]
    ranking = rank_scores(view.index, own_base, emcl, em, top_k=need)
    described = f"as trained · the Metrics table's run: {caption_block_run(row, n_texts, n_videos)}"
    return _Run(plain, ranking, False, described, bank_row=row)


def _trained_index(ctx: ServiceContext, snap: Snapshot, view: ModelView) -> _Ranked:
    """``view``'s rankable rows with their frame features (what rank_as_trained pools)."""

    def build() -> _Ranked:
        if view.moments is not None:
            moments = view.moments
            frames = moments.frames.float()
            return _Ranked(dataclasses.replace(moments.index, frames=frames), moments.items)
        frames = view.frames[view.index.rows].float()
        return _Ranked(dataclasses.replace(view.index, frames=frames), None)

    key = (snap.version, view.name, TRAINED, "frames")
    return ctx.caches.similarity.get_or_compute(key, build)


@dataclasses.dataclass(frozen=True)
class _Ranked:
    index: GalleryIndex
    items: ItemMap | None


def _sentence(ctx: ServiceContext, view: ModelView, text: str) -> tuple[Tensor, bool]:
    """``text``'s sentence feature ``[D]`` as the model emits it (not normalised: EMCL-Net's
    pooling softmax sees its norm, docs/method.md §2.1) and whether it was truncated."""

    def encode() -> tuple[Tensor, bool]:
        with torch.inference_mode():
            out = view.encoder.encode_texts([text])
        return out["sentence"][0].float(), bool(out["truncated"][0])

    key = (view.encoder.fingerprint, text, "sentence")
    return ctx.caches.queries.get_or_compute(key, encode)


def _free_text(ctx: ServiceContext, snap: Snapshot, text: str, knobs: Knobs) -> _Run:
    """Both columns as trained for a query outside the bank: rank_as_trained per model."""
    need = len(snap.base.index) if knobs.isoftmax else knobs.top_k
    exact = knobs.isoftmax or knobs.context != "shortlist"

    def inputs(view: ModelView) -> tuple[Tensor, bool, _Ranked]:
        query, cut = _sentence(ctx, view, text)
        found = _trained_index(ctx, snap, view)
        if exact:
            return query, cut, found
        # Large galleries: the ANN's candidates (the module doc of emcl/retrieval/index.py).
        rows = max(knobs.shortlist, need)
        part = found.index.for_query(ctx.encode_query(view, text)[0], rows)
        return query, cut, _Ranked(part, found.items)

    view = snap.view(knobs.mode)
    query, cut, found = inputs(view)
    try:
        ranking = rank_as_trained(
            query, found.index, knobs.params(), prior=ctx.prior(knobs),
            context=knobs.context, shortlist_size=knobs.shortlist,  # type: ignore[arg-type]
            top_k=need, temperature=view.encoder.config.frame_temp, items=found.items,
        )  # fmt: skip
        plain, cut_base = ranking, cut
        if view is not snap.base:  # the base checkpoint's column: no EM to run
            query, cut_base, found = inputs(snap.base)
            temperature = snap.base.encoder.config.frame_temp
            base = trained_base_scores(query, found.index, temperature)
            off = EmSummary(knobs.context, 0, 0, 0.0)
            plain = rank_scores(found.index, base, base, off, top_k=need, items=found.items)
    except ValueError as error:
        raise KnobError(str(error)) from None
    return _Run(plain, ranking, cut or cut_base, free_text_run(knobs, len(view.index)))


def caption_block_run(row: int, n_texts: int, n_videos: int) -> str:
    """The as-trained EM runs of bank caption ``row`` of ``n_texts``, in words: its caption
    block against every block of ``n_videos`` videos."""
    bt, bv = BLOCK[TRAINED]
    block, texts = row // bt, min(bt, n_texts - row // bt * bt)
    last = n_videos - (n_videos - 1) // bv * bv
    short = f", the last of {last}" if last < bv else ""
    return (
        f"caption block {block + 1} of {-(-n_texts // bt)} (captions {block * bt + 1}–"
        f"{block * bt + texts}) × {-(-n_videos // bv)} video blocks of {bv}{short}"
    )


def free_text_run(knobs: Knobs, n_videos: int) -> str:
    """The as-trained EM run of free text, in words."""
    if knobs.context == "gallery":
        return f"as trained · free text and all {n_videos} videos, one EM run"
    bv = BLOCK[TRAINED][1]
    m = min(knobs.shortlist, n_videos) if knobs.context == "shortlist" else n_videos
    which = f"its top {m} base candidates" if knobs.context == "shortlist" else "every video"
    blocks = -(-m // bv)
    last = f", the last of {m - (blocks - 1) * bv}" if m % bv else ""
    return f"as trained · free text × {which} in {blocks} block(s) of {bv}{last}"


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
    ctx: ServiceContext, snap: Snapshot, knobs: Knobs, query_key: str, columns: _Columns, run: _Run
) -> _Columns:
    """Both columns re-sorted by the inverted softmax, with the caption bank scored the same
    way as each column (the EMCL column's bank with EM at these knobs, in the protocol the
    columns were scored in)."""
    size = len(snap.base.index)
    whole = run.bank_row is not None or knobs.context != "shortlist"
    emcl_candidates = size if whole else min(knobs.shortlist, size)
    view = snap.view(knobs.mode)
    if knobs.protocol == TRAINED:
        base_bank, emcl_bank = _table(ctx, snap, snap.base, None), _table(ctx, snap, view, knobs)
        banks = {"base": (base_bank, size), "emcl": (emcl_bank, emcl_candidates)}
    else:
        emcl_bank = similarity(ctx, snap, view, knobs, "inference")
        banks = {"base": (snap.base.base_sim, size), "emcl": (emcl_bank, emcl_candidates)}
    order, score = {}, {}
    for column, (bank_scores, n_rerank) in banks.items():
        order[column], score[column] = qb_norm(
            snap,
            bank_scores,
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
