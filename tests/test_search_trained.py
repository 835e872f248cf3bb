"""Search as trained (docs/knobs.md, ``protocol``): a caption's columns are its rows of the
Metrics tab's as-trained table, free text runs against its shortlist in blocks, and /rank, the
command line and the page answer a query alike; the panel under the knobs names each tab's run."""

from __future__ import annotations

import json
from dataclasses import replace

import gradio as gr
import pytest
import torch
import torch.nn.functional as F

from emcl.cli.index import main as index_cli
from emcl.core.logits import emclnet_logits, text_conditioned_pool
from emcl.core.protocols import BLOCK, TRAINED
from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.metrics import similarity
from emcl.explorer.snapshot import normalise_caption
from ui.knob_panel import RUN_LINES
from ui.tabs import metrics as metrics_tab
from ui.tabs.search import rank_api, search_page
from ui.text import search_em_line

BT, BV = BLOCK[TRAINED]
# Non-trivial knobs: β ≠ 0, K > 1, a sharp λ and the data init (distinct subspaces).
KNOBS = Knobs(
    mode="joint", beta=5.0, k=7, iters=5, lam=0.05, init="data", seed=42, top_k=10,
    protocol=TRAINED,
)  # fmt: skip


def unique_rows(snap) -> list[int]:
    """Caption rows whose text no other caption of the bank has (their ground truth is one
    video, as in the table's row)."""
    keys = [normalise_caption(c) for c in snap.captions]
    return [i for i, key in enumerate(keys) if keys.count(key) == 1]


def table_rank(matrix: torch.Tensor, row: int, owner: int) -> int:
    """The ground truth's rank in a row of the Metrics table's score matrix."""
    return 1 + int((matrix[row] > matrix[row, owner]).sum())


def tables(explorer, knobs: Knobs) -> tuple[torch.Tensor, torch.Tensor]:
    """(the Base row's matrix, the EM row's matrix) of the Metrics table at ``knobs``."""
    ctx, snap = explorer.context, explorer.snapshot
    base = similarity(ctx, snap, snap.base, None, TRAINED)
    return base, similarity(ctx, snap, snap.view(knobs.mode), knobs, TRAINED)


# ---------------------------------------------------------------------------------------------
# A caption of the bank: its rows of the Metrics table
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["joint", "inference"])
def test_each_columns_target_rank_equals_the_metrics_tables(explorer, mode):
    snap = explorer.snapshot
    knobs = replace(KNOBS, mode=mode)
    n_texts, n_videos = len(snap.captions), len(snap.records)
    assert n_texts % BT and n_videos % BV and n_texts > 2 * BT and n_videos > 2 * BV  # short last
    base, emcl = tables(explorer, knobs)
    assert not torch.allclose(base, emcl)  # the EM moves the scores
    rows = unique_rows(snap)
    assert len(rows) > n_texts // 2 and rows[-1] >= n_texts - n_texts % BT  # the last block too
    moved = 0
    for row in rows:
        owner = int(snap.caption_owner[row])
        result = explorer.rank(snap.captions[row], knobs)
        assert result.target_rank["base"] == table_rank(base, row, owner), row
        assert result.target_rank["emcl"] == table_rank(emcl, row, owner), row
        moved += [h.index for h in result.base] != [h.index for h in result.emcl]
    assert moved > 0  # the EMCL column is not the base column again
    # Hence R@1 of the searches, one caption at a time, is the table's R@1.
    table = dict(explorer.metrics(knobs).rows)
    if len(rows) == n_texts:
        emcl_row = "EMCL checkpoint + EM (joint)" if mode == "joint" else "Base + EMCL at inference"
        for label, matrix in (("Base", base), (emcl_row, emcl)):
            owners = snap.caption_owner.tolist()
            r1 = [table_rank(matrix, row, owners[row]) == 1 for row in range(n_texts)]
            assert table[label]["t2v"]["R1"] == pytest.approx(100 * sum(r1) / n_texts)


def test_a_captions_emcl_column_is_its_caption_block_against_each_video_block(explorer):
    """The as-trained EM run by hand (the reference's emclnet_logits, one block at a time) for
    a caption of the short last caption block, against every video block."""
    snap = explorer.snapshot
    knobs = replace(KNOBS, top_k=50)
    view = snap.view(knobs.mode)
    row = unique_rows(snap)[-1]
    start = row // BT * BT
    texts = view.sentences[start : start + BT].double()  # the caption's block, short here
    prior = explorer.prior(knobs)
    params = knobs.params()

    def emcl(x: torch.Tensor) -> torch.Tensor:
        return params.run(x.float(), prior).embeddings.double()

    frames = view.frames.double()
    temp = view.encoder.config.frame_temp
    want = torch.cat([
        emclnet_logits(texts, frames[v : v + BV], None, emcl, temp)[row - start]
        for v in range(0, len(frames), BV)
    ])  # fmt: skip
    result = explorer.rank(snap.captions[row], knobs)
    got = {hit.index: hit.score for hit in result.emcl}
    assert len(got) == 50 and max(got) >= 2 * BV  # hits from the last video block too
    assert list(got.values()) == pytest.approx([float(want[i]) for i in got], abs=1e-4)
    assert list(got) == torch.argsort(want, descending=True)[:50].tolist()
    n = len(texts)
    assert (result.context, result.em_rows, result.protocol) == ("block", n * BV + n, TRAINED)
    blocks = -(-len(snap.captions) // BT)
    assert f"caption block {blocks} of {blocks}" in result.em_run
    assert f"the last of {len(frames) % BV}" in result.em_run


# ---------------------------------------------------------------------------------------------
# Free text: the shortlist split into blocks
# ---------------------------------------------------------------------------------------------
def test_free_text_runs_alone_against_its_shortlist_in_blocks(explorer):
    snap = explorer.snapshot
    knobs = replace(KNOBS, mode="inference", shortlist=BV + 8, top_k=BV + 8)
    view = snap.base
    text = "two small red circles move to the left"
    assert normalise_caption(text) not in snap.lookup
    with torch.inference_mode():
        query = view.encoder.encode_texts([text])["sentence"][0].double()  # as the model emits it
    frames, temp = view.frames.double(), view.encoder.config.frame_temp
    pooled = text_conditioned_pool(query[None], frames, None, temp)[0]  # [Nv, D]
    base = F.normalize(pooled, dim=-1) @ F.normalize(query, dim=0)
    order = sorted(range(len(frames)), key=lambda i: -float(base[i]))[: knobs.shortlist]
    want = {}
    for block in (order[:BV], order[BV:]):  # 32, then a short block of 8 alone
        x = torch.cat([pooled[block], query[None]]).float()
        out = F.normalize(knobs.params().run(x).embeddings.double(), dim=-1)
        want.update({i: float(out[j] @ out[-1]) for j, i in enumerate(block)})
    result = explorer.rank(text, knobs)
    assert [h.index for h in result.base] == order
    for hit in result.emcl:
        assert hit.score == pytest.approx(want[hit.index], abs=1e-4)
    assert [h.index for h in result.emcl] == sorted(order, key=lambda i: -want[i])
    assert result.em_rows == BV + 1 and result.context == "shortlist"
    assert "free text" in result.em_run and "2 block(s) of 32, the last of 8" in result.em_run


def test_the_inference_protocol_is_one_click_away(explorer):
    snap = explorer.snapshot
    knobs = replace(KNOBS, protocol="inference", shortlist=20)
    result = explorer.rank(snap.captions[5], knobs)
    assert result.protocol == "inference" and result.context == "shortlist"
    assert result.em_rows == 21 and result.em_run.startswith("inference module · shortlist")
    assert Knobs(mode="joint").protocol == TRAINED and Knobs(mode="inference").protocol != TRAINED


# ---------------------------------------------------------------------------------------------
# /rank, the command line and the page agree
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_index(explorer_inputs, tmp_path_factory):
    """An index of the explorer's world with its base model and its feature cache."""
    setup = explorer_inputs["setup"]()
    folder = tmp_path_factory.mktemp("trained-cli") / "idx"
    source = ["--data", str(explorer_inputs["world"]), "--out", str(folder)]
    model = ["--checkpoint", str(setup.base_checkpoint), "--cache-dir", str(setup.cache_dir)]
    assert index_cli(["build", *source, *model, "--quiet"]) == 0
    return folder, setup.cache_dir


def columns(result: dict) -> dict[str, list[tuple[str, int, int | None]]]:
    return {
        c: [(h["video_id"], h["rank"], h["other_rank"]) for h in result[c]]
        for c in ("base", "emcl")
    }


@pytest.mark.parametrize("which", ["caption", "free text"])
def test_rank_the_command_line_and_the_page_agree(explorer, cli_index, capsys, which):
    snap = explorer.snapshot
    text = snap.captions[unique_rows(snap)[40]] if which == "caption" else "a blue square spins"
    em = {"beta": 5.0, "k": 7, "iters": 5, "lam": 0.05, "init": "data"}
    seed = explorer.defaults("inference").seed  # what /rank seeds with
    api = rank_api(explorer)(text, **em, top_k=10, mode="inference", protocol=TRAINED)
    knobs = Knobs(mode="inference", **em, seed=seed, top_k=10, protocol=TRAINED)
    page, shown = search_page(explorer, text, knobs)
    folder, cache = cli_index
    flags = [x for name, value in em.items() for x in (f"--{name}", str(value))]
    argv = ["query", str(folder), text, *flags, "--seed", str(seed), "--top-k", "10"]
    assert index_cli([*argv, "--protocol", TRAINED, "--cache-dir", str(cache), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert api["protocol"] == cli["protocol"] == page.protocol == TRAINED
    assert columns(api) == columns(cli) == columns(page.to_json())
    for column in ("base", "emcl"):
        scores = [h["score"] for h in api[column]]
        assert [h["score"] for h in cli[column]] == pytest.approx(scores, abs=1e-5)
        assert [h.score for h in getattr(page, column)] == pytest.approx(scores, abs=1e-6)
    assert api["em_run"] == page.em_run and page.em_run in shown[2]
    rule = "caption block" if which == "caption" else "free text"
    assert rule in api["em_run"] and rule in cli["em_run"]
    if which == "caption":
        assert page.target_rank["emcl"] is not None and api["ground_truth"] == list(page.targets)


def test_protocols_outside_the_set_are_refused_naming_the_field(explorer, cli_index, capsys):
    message = "protocol must be one of trained, inference"
    with pytest.raises(KnobError, match=message):
        Knobs(protocol="emclnet")
    with pytest.raises(gr.Error, match=message):
        rank_api(explorer)("a ball", 4.0, 7, 10, 0.1, "reference", 5, "inference", "as-trained")
    folder, _ = cli_index
    assert index_cli(["query", str(folder), "a ball", "--protocol", "mmt"]) == 2
    assert message in capsys.readouterr().err
    # /rank without a protocol: the mode's default
    default = rank_api(explorer)("a ball", 4.0, 7, 10, 0.1, "reference", 5, "inference")
    assert default["protocol"] == "inference"


def test_an_index_of_embeddings_alone_cannot_rank_as_trained(cli_index, capsys, tmp_path):
    folder, _ = cli_index
    parquet = tmp_path / "rows.parquet"
    assert index_cli(["export", str(folder), "--parquet", str(parquet)]) == 0
    model = json.loads((folder / "index.json").read_text())["model"]["checkpoint"]
    out = tmp_path / "idx"
    assert index_cli(["build", "--embeddings", str(parquet), "--out", str(out),
                      "--checkpoint", model]) == 0  # fmt: skip
    capsys.readouterr()
    assert index_cli(["query", str(out), "a ball", "--protocol", TRAINED]) == 2
    assert "build the index from --data" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# One EMCL's size: the panel names each tab's run
# ---------------------------------------------------------------------------------------------
def test_search_and_metrics_report_the_same_protocols_size_at_the_joint_defaults(explorer):
    snap = explorer.snapshot
    knobs = explorer.defaults("joint")
    assert knobs.protocol == TRAINED
    result, shown = search_page(explorer, snap.captions[unique_rows(snap)[3]], knobs)
    _, _, metrics_line = metrics_tab.live(explorer, knobs)
    search_line = shown[3]
    assert search_line == search_em_line(result)
    for line in (search_line, metrics_line):
        assert "as trained" in line and "inference module" not in line
    assert search_line.startswith(metrics_line.split("(")[0])  # the same K and size: one run
    assert "Search · as trained · the Metrics table's run" in search_line
    assert "Metrics · as trained" in metrics_line
    _, shown_free = search_page(explorer, "a red ball jumps", knobs)
    assert "Search · as trained · free text" in shown_free[3]
    _, inference = search_page(explorer, "a red ball jumps", replace(knobs, protocol="inference"))
    assert "Search · inference module" in inference[3]


def test_each_tab_writes_its_own_line_and_switching_tabs_switches_it(explorer):
    from ui import app as ui_app

    demo = ui_app.build_demo(explorer)
    runs = {}
    for block in demo.blocks.values():
        line = (block.elem_id or "").removeprefix("emcl-run-")
        if line in RUN_LINES:
            runs[block._id] = line
    assert sorted(runs.values()) == sorted(RUN_LINES)
    written = {line: 0 for line in RUN_LINES}
    switches = []
    for fn in demo.fns.values():
        targets = [runs[o._id] for o in fn.outputs if o._id in runs]
        if len(targets) == len(RUN_LINES) and all(t[1] == "select" for t in fn.targets):
            switches.append(fn)  # a tab's select: visibility only
            continue
        for line in targets:
            written[line] += 1
    assert written["other"] == 0 and written["search"] > 0 and written["metrics"] > 0
    shown = {}
    for fn in switches:
        visible = [u["visible"] for u in fn.fn()]
        shown[fn.targets[0][0]] = [line for line, v in zip(RUN_LINES, visible, strict=True) if v]
    # Search, Metrics, and six tabs that report no EM run of their own (Subspaces, Embedding
    # map, Gallery, Models, Study, Train).
    assert len(shown) == 8 and sorted(map(tuple, shown.values())) == sorted(
        [("search",), ("metrics",)] + [("other",)] * 6
    )
