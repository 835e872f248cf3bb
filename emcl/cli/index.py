"""Search a gallery from the command line: build an index, query it, export it.

    python -m emcl index build --data DIR --out INDEX --checkpoint checkpoints/demo-base
    python -m emcl index build --embeddings clips.parquet --out INDEX --checkpoint DIR
    python -m emcl index query INDEX "a man is cooking" --top-k 5 --beta 4 --json
    python -m emcl index export INDEX --parquet clips.parquet

``query`` prints the base (cosine) and EMCL rankings with the same numbers as the app's
``/rank`` in ``inference`` mode with this model; the knobs take the same names and bounds.
``--protocol`` defaults to that mode's, ``inference``; ``--protocol trained`` ranks as the
checkpoint was trained (emcl/explorer/search.py): it reads the frame features and the captions
of the index's source videos (an index built with ``--data``) from the feature cache
(``--cache-dir``, as given to ``build``), scores a caption of those videos in its caption
block against every video block (its row of the app's as-trained Metrics table) and free text
against its shortlist split into blocks. The index folder's format is
emcl/retrieval/store.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from emcl import paths
from emcl.cli import device_flag
from emcl.core.em import INFERENCE_MODULE_DEFAULTS
from emcl.core.protocols import BLOCK, PROTOCOLS, TRAINED
from emcl.data.embeddings_io import EmbeddingsInputError, read_embeddings, write_parquet
from emcl.explorer.knobs import CONTEXTS, INITS, KnobError, Knobs, clean_text
from emcl.explorer.search import caption_block_run, free_text_run
from emcl.explorer.snapshot import normalise_caption
from emcl.retrieval.ann import AnnConfig, AnnIndexError
from emcl.retrieval.emclnet_table import EmclNetTable
from emcl.retrieval.index import GalleryIndex, valid_rows
from emcl.retrieval.ranking import (
    SEARCH_BLOCK,
    EmSummary,
    ItemMap,
    Ranking,
    rank_as_trained,
    rank_query,
    rank_scores,
)
from emcl.retrieval.store import (
    IndexStoreError,
    ModelSpec,
    StoredIndex,
    gallery_table,
    open_index,
    write_index,
)

TRUNCATED = "the query was longer than the text encoder's context and was truncated"


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------- build
def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="model checkpoint folder (python -m emcl train)")
    p.add_argument("--model", help="open_clip backbone, instead of a checkpoint")
    p.add_argument("--pretrained", help="open_clip weights tag for --model")


def build(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.embeddings is None):
        raise IndexStoreError("build from --data DIR (videos) or --embeddings FILE, not both")
    path_options = ("data", "embeddings", "ids", "out", "checkpoint")
    absolute = {k: str(Path(getattr(args, k)).resolve()) for k in path_options if getattr(args, k)}
    spec = ModelSpec(absolute.get("checkpoint"), args.model, args.pretrained)
    encoder = spec.encoder(args.device)
    if args.data is not None:
        from emcl.data.datasets import read_dataset
        from emcl.data.gallery import build_gallery

        records = read_dataset(args.data, args.split)
        features = paths.features_dir(args.cache_dir)
        gallery = build_gallery(
            records, encoder, features, num_frames=encoder.num_frames, progress=not args.quiet
        )
        _log(str(gallery.report))
        table = gallery_table(gallery)
        source = {"data": absolute["data"], "split": args.split, "skipped": gallery.report.skipped}
        where = ["--data", absolute["data"], "--split", args.split]
    else:
        table = read_embeddings(args.embeddings, args.ids, dim=encoder.embed_dim)
        source = {"embeddings": absolute["embeddings"], "ids": absolute.get("ids")}
        where = ["--embeddings", absolute["embeddings"]]
        where += ["--ids", absolute["ids"]] if "ids" in absolute else []
    if len(table) == 0:
        raise IndexStoreError("nothing to index: every video was skipped (see the report above)")
    threshold = ["--ann-threshold", str(args.ann_threshold)]
    command = ["python", "-m", "emcl", "index", "build", *where, "--out", absolute["out"]]
    command += [*spec.args(), *threshold]
    ann = AnnConfig(threshold=args.ann_threshold)
    stored = write_index(args.out, table, spec, encoder.fingerprint, source, command, ann, _log)
    kind = "ANN (IVF) + exact re-scoring" if len(table) >= ann.threshold else "exact search"
    print(f"indexed {len(table)} rows × {table.dim} into {stored.folder} ({kind})")
    return 0


# ---------------------------------------------------------------------------------- query
KNOB_DEFAULTS = Knobs(
    mode="inference",
    k=INFERENCE_MODULE_DEFAULTS.k,
    iters=INFERENCE_MODULE_DEFAULTS.iters,
    lam=INFERENCE_MODULE_DEFAULTS.lam,
    beta=INFERENCE_MODULE_DEFAULTS.beta,
    init=INFERENCE_MODULE_DEFAULTS.init,
    seed=INFERENCE_MODULE_DEFAULTS.seed,
)  # the app's defaults in inference mode (Explorer.defaults)
KNOB_OPTIONS = (
    "beta", "k", "iters", "lam", "init", "seed", "context", "shortlist", "top_k", "protocol",
)  # fmt: skip


def _prior(encoder: Any, knobs: Knobs) -> torch.Tensor | None:
    """The model's trained prior for ``init='prior'`` (the app's rule: trained K only)."""
    if knobs.init != "prior":
        return None
    emcl = encoder.config.emcl
    if emcl is None or encoder.prior is None:
        raise KnobError("init 'prior' needs a jointly trained EMCL checkpoint; use 'reference'")
    if knobs.k != emcl.params().k:
        raise KnobError(f"init 'prior' exists for the trained K={emcl.params().k} only")
    return encoder.prior


def search(
    stored: StoredIndex,
    text: str,
    knobs: Knobs,
    device: str = "auto",
    cache_dir: str | None = None,
) -> dict:
    """Base and EMCL rankings of ``stored`` for ``text``: the JSON ``query --json`` prints.
    ``cache_dir``: the feature cache root the index was built with (``knobs.protocol``
    ``trained`` reads its frames)."""
    text, cut = clean_text(text)
    encoder = stored.model.encoder(device)
    stored.check_model(encoder)
    index = stored.gallery_index(AnnConfig(threshold=stored.manifest["ann_threshold"]), _log)
    with torch.inference_mode():
        out = encoder.encode_texts([text])
        query = F.normalize(out["sentence"][0], dim=-1)
        size = max(knobs.shortlist, knobs.top_k)
        part = index.for_query(query, size) if knobs.context == "shortlist" else index
        try:
            if knobs.protocol == TRAINED:
                source = _Source.read(stored, encoder, cache_dir)
                sentence, items = out["sentence"][0], stored.item_map()
                ranking, em_run = _as_trained(source, sentence, text, knobs, part, items)
            else:
                ranking, em_run = _as_inference(stored, encoder, query, knobs, part)
        except ValueError as error:
            if isinstance(error, IndexStoreError | KnobError):
                raise
            raise KnobError(str(error)) from None
    notices = list(ranking.notices)
    if part is not index:
        notices.append(f"approximate shortlist: the ANN index's {len(part)} nearest videos")
    if cut or bool(out["truncated"][0]):
        notices.insert(0, TRUNCATED)
    return _result(stored, text, knobs, ranking, len(index), notices, em_run)


def _as_inference(
    stored: StoredIndex, encoder: Any, query: torch.Tensor, knobs: Knobs, part: GalleryIndex
) -> tuple[Ranking, str]:
    """The inference module's columns (the app's ``protocol="inference"``)."""
    ranking = rank_query(
        query,
        part,
        knobs.params(),
        prior=_prior(encoder, knobs),
        context=knobs.context,  # type: ignore[arg-type]
        shortlist_size=knobs.shortlist,
        block_videos=SEARCH_BLOCK,
        top_k=knobs.top_k,
        items=stored.item_map(),
    )
    return ranking, f"inference module · {knobs.context} context"


class _Source:
    """The index's source videos as the app sees them: the frame features of every index row,
    and the whole videos with their captions (the caption bank, in gallery order)."""

    def __init__(self, encoder: Any, frames: torch.Tensor, videos: GalleryIndex, bank: list):
        self.encoder = encoder
        self.frames = frames  # [N, T, D] of the index rows
        self.videos = videos  # whole videos (one row each), with their frames
        self.bank = bank  # [Nt] captions of ``videos``, in its order

    @classmethod
    def read(cls, stored: StoredIndex, encoder: Any, cache_dir: str | None) -> _Source:
        from emcl.data.datasets import read_dataset
        from emcl.data.gallery import build_gallery

        source = stored.manifest["source"]
        if "data" not in source:
            raise KnobError(
                "protocol 'trained' needs the videos' frame features: build the index from "
                "--data DIR (videos), not from --embeddings"
            )
        records = read_dataset(source["data"], source["split"])
        features = paths.features_dir(cache_dir)
        gallery = build_gallery(
            records, encoder, features, num_frames=encoder.num_frames, progress=False,
            extract=False,
        )  # fmt: skip
        items = gallery.items()
        if list(items.video_ids) != stored.video_ids or list(items.spans) != stored.spans:
            raise IndexStoreError(
                f"the feature cache under {features} does not hold this index's videos "
                f"(pass the --cache-dir it was built with); else rebuild it: {stored.rebuild}"
            )
        frames = gallery.frame_embeddings.float()  # [Nv, T, D]
        ok = valid_rows(gallery.video_embeddings.float()) & valid_rows(frames.flatten(1))
        ids = [v for v, fine in zip(gallery.video_ids, ok.tolist(), strict=True) if fine]
        videos = GalleryIndex.build(ids, gallery.video_embeddings[ok].float(), frames[ok])
        by_id = {r.video_id: r for r in records}
        bank = [c for v in ids for c in by_id[v].captions if c.strip()]
        return cls(encoder, items.frame_embeddings.float(), videos, bank)


def _as_trained(
    source: _Source,
    sentence: torch.Tensor,
    text: str,
    knobs: Knobs,
    part: GalleryIndex,
    items: ItemMap | None,
) -> tuple[Ranking, str]:
    """Both columns as trained: a caption of the source videos in its caption block against
    every video block, free text against its shortlist in blocks (emcl/explorer/search.py)."""
    encoder = source.encoder
    temperature = encoder.config.frame_temp
    prior = _prior(encoder, knobs)
    keys = [normalise_caption(c) for c in source.bank]
    key = normalise_caption(text)
    if key not in keys:
        with_frames = dataclasses.replace(part, frames=source.frames[part.rows])
        ranking = rank_as_trained(
            sentence, with_frames, knobs.params(), prior=prior,
            context=knobs.context, shortlist_size=knobs.shortlist,  # type: ignore[arg-type]
            top_k=knobs.top_k, temperature=temperature, items=items,
        )  # fmt: skip
        return ranking, free_text_run(knobs, len(part))
    row = keys.index(key)
    bt = BLOCK[TRAINED][0]
    start = row // bt * bt
    with torch.inference_mode():
        block = encoder.encode_texts(source.bank[start : start + bt])["sentence"].float()
    videos = source.videos
    table = EmclNetTable(block, videos.frames, temperature=temperature)
    base = table.base_scores()[row - start]
    params = knobs.params()
    terms = table.terms(params, prior) if params.iters and params.beta else None
    emcl = terms.scores(params.beta)[row - start] if terms is not None else base
    effective_k, ratio = (terms.effective_k, terms.rec_ratio(params.beta)) if terms else (0, 0.0)
    n = min(bt, len(source.bank) - start)
    em = EmSummary("block", effective_k, n * min(BLOCK[TRAINED][1], len(videos)) + n, ratio)
    ranking = rank_scores(videos, base, emcl, em, top_k=knobs.top_k)
    where = caption_block_run(row, len(source.bank), len(videos))
    size = "EMCL's size over this caption block's runs, effective K of its first"
    return ranking, f"as trained · {where}; {size}"


def _result(
    stored: StoredIndex,
    text: str,
    knobs: Knobs,
    ranking: Ranking,
    size: int,
    notices: list[str],
    em_run: str,
) -> dict:
    return {
        "query": text,
        "index": str(stored.folder),
        "mode": knobs.mode,
        "protocol": knobs.protocol,
        "em_run": em_run,
        "knobs": knobs.to_dict(),
        "base": [hit.to_json() for hit in ranking.base],
        "emcl": [hit.to_json() for hit in ranking.emcl],
        "effective_k": ranking.effective_k,
        "context": ranking.context,
        "em_rows": ranking.em_rows,
        "ms": round(ranking.ms, 3),
        "notices": notices,
        "gallery_size": size,
    }


def render(result: dict) -> str:
    """The result as two ranked columns of text."""
    head = (
        f"query: {result['query']!r}  ({result['gallery_size']} videos, context "
        f"{result['context']}, effective K {result['effective_k']}, {result['ms']:.1f} ms)"
    )
    lines = [head, f"EM run: {result['em_run']}"]
    for column, title in (("base", "base (cosine)"), ("emcl", "EMCL")):
        lines.append(f"\n{title}:")
        for hit in result[column]:
            span = f"  {hit['span'][0]:.1f}–{hit['span'][1]:.1f} s" if hit["span"] else ""
            moved = f"  (base rank {hit['other_rank']})" if column == "emcl" else ""
            lines.append(f"  {hit['rank']:>3}. {hit['video_id']}{span}  {hit['score']:.4f}{moved}")
    lines += [f"note: {n}" for n in result["notices"]]
    return "\n".join(lines)


def query(args: argparse.Namespace) -> int:
    given = {name: getattr(args, name) for name in KNOB_OPTIONS if getattr(args, name) is not None}
    knobs = Knobs.from_dict(KNOB_DEFAULTS.to_dict() | given)
    result = search(open_index(args.index), args.text, knobs, args.device, args.cache_dir)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


# --------------------------------------------------------------------------------- export
def export(args: argparse.Namespace) -> int:
    stored = open_index(args.index)
    write_parquet(args.parquet, stored.video_ids, stored.spans, stored.embeddings)
    print(f"wrote {len(stored.video_ids)} rows × {stored.manifest['dim']} to {args.parquet}")
    return 0


# --------------------------------------------------------------------------------- parser
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emcl index", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="index videos or precomputed embeddings")
    b.add_argument("--data", help="videos: MSR-VTT layout or a plain folder")
    b.add_argument("--split", default="test", help="MSR-VTT split (default test)")
    b.add_argument("--embeddings", help="precomputed embeddings: .parquet, or .npy with --ids")
    b.add_argument("--ids", help="ids for a .npy file: one per line, or a JSON list")
    b.add_argument("--out", required=True, help="the index folder to write")
    _model_options(b)
    b.add_argument("--cache-dir", help="cache root (default $EMCL_CACHE_DIR or <repo>/.cache)")
    b.add_argument(
        "--ann-threshold",
        type=int,
        default=AnnConfig.threshold,
        help="rows from which an ANN index is built (default %(default)s)",
    )
    b.add_argument("--device", default="auto", type=device_flag, help="auto | cpu | cuda")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(run=build)

    q = sub.add_parser("query", help="rank the index for a text query")
    q.add_argument("index", help="an index folder (python -m emcl index build)")
    q.add_argument("text", help="the query")
    q.add_argument("--top-k", dest="top_k", type=int, help=f"default {KNOB_DEFAULTS.top_k}")
    for name in ("beta", "lam"):
        q.add_argument(f"--{name}", type=float, help=f"default {getattr(KNOB_DEFAULTS, name)}")
    for name in ("k", "iters", "seed", "shortlist"):
        q.add_argument(f"--{name}", type=int, help=f"default {getattr(KNOB_DEFAULTS, name)}")
    q.add_argument("--init", choices=INITS, help=f"default {KNOB_DEFAULTS.init}")
    q.add_argument("--context", choices=CONTEXTS, help=f"default {KNOB_DEFAULTS.context}")
    q.add_argument(
        "--protocol",
        help=f"{' | '.join(PROTOCOLS)}: how both columns score (default "
        f"{KNOB_DEFAULTS.protocol}, inference mode's; trained needs an index built with --data)",
    )
    q.add_argument("--cache-dir", help="the feature cache root the index was built with")
    q.add_argument("--json", action="store_true", help="print JSON (the /rank fields + spans)")
    q.add_argument("--device", default="auto", type=device_flag, help="auto | cpu | cuda")
    q.set_defaults(run=query)

    e = sub.add_parser("export", help="write ids, spans and embeddings to parquet")
    e.add_argument("index", help="an index folder")
    e.add_argument("--parquet", required=True, help="the parquet file to write")
    e.set_defaults(run=export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (IndexStoreError, EmbeddingsInputError, KnobError, AnnIndexError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:  # e.g. a checkpoint that cannot load
        print(f"error: {error}", file=sys.stderr)
        return 1


__all__ = ["build", "export", "main", "parser", "query", "render", "search"]
