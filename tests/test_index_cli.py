"""``python -m emcl index``: index folders, precomputed embeddings in and out, the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from emcl.cli.index import main
from emcl.data.embeddings_io import (
    EmbeddingsInputError,
    EmbeddingTable,
    read_embeddings,
    write_parquet,
)
from emcl.explorer.knobs import Knobs
from emcl.retrieval.ann import AnnConfig
from emcl.retrieval.store import IndexStoreError, ModelSpec, open_index, write_index

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "checkpoints" / "demo-base"
DIM = 128  # the demo models' embedding size


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(max(1, n // 50), dim, generator=g), dim=-1)
    picks = torch.randint(0, len(centres), (n,), generator=g)
    rows = centres[picks] + 0.5 * torch.randn(n, dim, generator=g) / dim**0.5
    return F.normalize(rows, dim=-1).numpy()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------- embeddings in and out
def test_parquet_round_trip_keeps_ids_spans_and_embeddings(tmp_path):
    embeddings = unit_rows(7, 16)
    spans = [None, (10.0, 20.0), (15.0, 25.0), None, None, None, None]
    ids = ["a", "long", "long", "b", "c", "d", "e"]  # two windows of one long video
    write_parquet(tmp_path / "x.parquet", ids, spans, embeddings)
    table = read_embeddings(tmp_path / "x.parquet", dim=16)
    assert table.video_ids == ids and table.spans == spans
    assert np.array_equal(table.embeddings, embeddings.astype(np.float32))
    schema = pq.read_schema(tmp_path / "x.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 16)


def test_parquet_with_bad_rows_is_refused_with_each_row_and_reason(tmp_path):
    good = unit_rows(8, 4).tolist()
    rows = [
        ("a", good[0]),
        ("b", good[1][:3]),  # row 2: too short
        ("c", None),  # row 3: no embedding
        ("d", [math.nan, *good[3][1:]]),  # row 4: NaN
        ("e", [0.0] * 4),  # row 5: zero
        (None, good[5]),  # row 6: missing id
        ("a", good[6]),  # row 7: duplicate of row 1
        ("", good[7]),  # row 8: empty id
    ]
    pq.write_table(
        pa.table({"id": [r[0] for r in rows], "embedding": [r[1] for r in rows]}),
        tmp_path / "bad.parquet",
    )
    with pytest.raises(EmbeddingsInputError) as caught:
        read_embeddings(tmp_path / "bad.parquet")
    message = str(caught.value)
    assert "7 bad row(s)" in message
    expected = (
        "row 2 (b): 3 values, expected 4",
        "row 3 (c): no embedding",
        "row 4 (d): NaN",
        "row 5 (e): zero vector",
        "row 6: missing id",
    )
    assert all(line in message for line in expected)
    assert "and 2 more" in message  # rows 7 and 8 are counted, not listed


def test_embeddings_of_the_wrong_size_or_shape_are_refused(tmp_path):
    write_parquet(tmp_path / "x.parquet", ["a", "b"], [None, None], unit_rows(2, 8))
    with pytest.raises(EmbeddingsInputError, match="8 dimensions, the model's have 16"):
        read_embeddings(tmp_path / "x.parquet", dim=16)
    pq.write_table(pa.table({"video_id": ["a"], "vector": [[1.0]]}), tmp_path / "cols.parquet")
    with pytest.raises(EmbeddingsInputError, match="need columns"):
        read_embeddings(tmp_path / "cols.parquet")
    np.save(tmp_path / "x.npy", unit_rows(3, 8))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    with pytest.raises(EmbeddingsInputError, match="2 ids for 3 embeddings"):
        read_embeddings(tmp_path / "x.npy", tmp_path / "ids.txt")
    with pytest.raises(EmbeddingsInputError, match="needs its ids"):
        read_embeddings(tmp_path / "x.npy")
    np.save(tmp_path / "ints.npy", np.ones((3, 8), dtype=np.int64))
    (tmp_path / "ids.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(EmbeddingsInputError, match="2-D float array"):
        read_embeddings(tmp_path / "ints.npy", tmp_path / "ids.json")
    bad = unit_rows(3, 8)
    bad[1, 2] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    with pytest.raises(EmbeddingsInputError, match=r"row 2 \(b\): NaN or infinite"):
        read_embeddings(tmp_path / "inf.npy", tmp_path / "ids.json")
    table = read_embeddings(tmp_path / "x.npy", tmp_path / "ids.json", dim=8)
    assert table.video_ids == ["a", "b", "c"] and table.dim == 8


# ------------------------------------------------------------------------- index folders
def _write(folder: Path, n: int = 40, threshold: int = 50_000) -> None:
    table = EmbeddingTable([f"v{i}" for i in range(n)], [None] * n, unit_rows(n, 16))
    spec = ModelSpec(checkpoint="/models/x")
    command = ["python", "-m", "emcl", "index", "build", "--out", str(folder)]
    ann = AnnConfig(threshold=threshold)
    write_index(folder, table, spec, "fp", {"test": True}, command, ann, log=lambda m: None)


def test_damaged_index_folders_are_refused_with_the_rebuild_command(tmp_path):
    with pytest.raises(IndexStoreError, match=r"no index at .*python -m emcl index build --data"):
        open_index(tmp_path / "nowhere")
    folder = tmp_path / "idx"
    _write(folder)
    stored = open_index(folder)
    assert len(stored.video_ids) == 40 and stored.embeddings.shape == (40, 16)
    npy = folder / "embeddings.npy"
    whole = npy.read_bytes()
    npy.write_bytes(whole[:-100])  # truncated
    with pytest.raises(IndexStoreError, match=r"checksum.*rebuild it: python -m emcl index build"):
        open_index(folder)
    npy.write_bytes(whole)
    (folder / "rows.json").unlink()
    with pytest.raises(IndexStoreError, match=r"rows\.json is missing"):
        open_index(folder)
    (folder / "index.json").write_text('{"format": "something else"}')
    with pytest.raises(IndexStoreError, match="not an EMCL index"):
        open_index(folder)


def test_a_damaged_ann_file_is_rebuilt_from_the_embeddings(tmp_path):
    folder = tmp_path / "idx"
    _write(folder, n=800, threshold=500)
    (ann_file,) = folder.glob("ann-*.faiss")
    ann_file.write_bytes(b"\0" * 64)
    messages: list[str] = []
    index = open_index(folder).gallery_index(AnnConfig(threshold=500), messages.append)
    assert index.ann is not None and "checksum mismatch" in messages[0]
    assert index.ann.path == ann_file and ann_file.stat().st_size > 64


# ------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def built(tiny_world, tmp_path_factory):
    """An index of the tiny world's test split with the demo base model."""
    root = tmp_path_factory.mktemp("cli")
    source = ["--data", str(tiny_world), "--out", str(root / "idx")]
    model = ["--checkpoint", str(BASE), "--cache-dir", str(root / "cache"), "--quiet"]
    assert main(["build", *source, *model]) == 0
    return root


def test_query_prints_both_rankings_and_export_round_trips(built, capsys, tmp_path):
    code, out, _ = run(capsys, "query", built / "idx", "a red ball", "--top-k", 3, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["mode"] == "inference" and result["gallery_size"] == 10
    # inference mode's protocol unless --protocol says otherwise
    assert result["protocol"] == "inference" and result["em_run"].startswith("inference module")
    assert [h["rank"] for h in result["base"]] == [1, 2, 3]
    assert all(h["span"] is None for h in result["base"] + result["emcl"])
    scores = [h["score"] for h in result["base"]]
    assert scores == sorted(scores, reverse=True)

    code, text, _ = run(capsys, "query", built / "idx", "a red ball", "--top-k", 3)
    assert code == 0 and "base (cosine):" in text and result["base"][0]["video_id"] in text

    code, _, _ = run(capsys, "export", built / "idx", "--parquet", tmp_path / "out.parquet")
    table = read_embeddings(tmp_path / "out.parquet")
    stored = open_index(built / "idx")
    assert table.video_ids == stored.video_ids
    assert np.array_equal(table.embeddings, stored.embeddings.astype(np.float32))

    # the exported embeddings build an index that answers with the same numbers
    again_source = ["--embeddings", tmp_path / "out.parquet", "--out", tmp_path / "again"]
    code, _, _ = run(capsys, "build", *again_source, "--checkpoint", BASE)
    assert code == 0
    code, out, _ = run(capsys, "query", tmp_path / "again", "a red ball", "--top-k", 3, "--json")
    again = json.loads(out)
    assert again["base"] == result["base"] and again["emcl"] == result["emcl"]


def test_query_refusals_name_the_fix(built, capsys, tmp_path):
    code, _, err = run(capsys, "query", tmp_path / "missing", "a ball")
    assert code == 2 and "python -m emcl index build --data DIR --out" in err
    code, _, err = run(capsys, "query", built / "idx", "a ball", "--beta", 99)
    assert code == 2 and "beta must be a finite number in [0, 20]" in err
    code, _, err = run(capsys, "query", built / "idx", "a ball", "--init", "prior")
    assert code == 2 and "needs a jointly trained EMCL checkpoint" in err

    manifest = json.loads((built / "idx" / "index.json").read_text())
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("embeddings.npy", "rows.json"):
        (stale / name).write_bytes((built / "idx" / name).read_bytes())
    manifest["model"]["fingerprint"] = "0" * 16  # as if built by another model
    (stale / "index.json").write_text(json.dumps(manifest))
    code, _, err = run(capsys, "query", stale, "a ball")
    assert code == 2 and "was built with model 0000000000000000" in err
    assert manifest["command"] in err


def test_ann_index_answers_like_exact_search(capsys, tmp_path):
    vectors = unit_rows(2000)
    np.save(tmp_path / "x.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(f"clip{i}" for i in range(2000)))
    printed = {}
    for name, threshold in (("ann", 1000), ("exact", 50_000)):
        source = ["--embeddings", tmp_path / "x.npy", "--ids", tmp_path / "ids.txt"]
        model = ["--checkpoint", BASE, "--ann-threshold", threshold]
        code, printed[name], _ = run(capsys, "build", *source, "--out", tmp_path / name, *model)
        assert code == 0
    assert "(ANN (IVF) + exact re-scoring)" in printed["ann"]
    assert "(exact search)" in printed["exact"]
    assert len(list((tmp_path / "ann").glob("ann-*.faiss"))) == 1
    assert not list((tmp_path / "exact").glob("ann-*.faiss"))
    answers = {}
    for name in ("ann", "exact"):
        knobs = ["--shortlist", 16, "--top-k", 10, "--json"]
        code, out, _ = run(capsys, "query", tmp_path / name, "a blue square", *knobs)
        answers[name] = json.loads(out)
    assert any("approximate shortlist" in n for n in answers["ann"]["notices"])
    assert answers["ann"]["base"] == answers["exact"]["base"]
    assert answers["ann"]["emcl"] == answers["exact"]["emcl"]


def test_query_gives_the_same_numbers_as_the_apps_rank(explorer_inputs, capsys, tmp_path):
    explorer = explorer_inputs["make"]()
    setup = explorer_inputs["setup"]()
    source = ["--data", str(explorer_inputs["world"]), "--out", str(tmp_path / "idx")]
    model = ["--checkpoint", str(setup.base_checkpoint), "--cache-dir", str(setup.cache_dir)]
    assert main(["build", *source, *model, "--quiet"]) == 0
    capsys.readouterr()
    caption = explorer.snapshot.captions[3]
    knobs = Knobs(mode="inference", k=7, iters=10, lam=0.1, beta=4.0, init="reference", seed=42)
    app = explorer.rank(caption, knobs).to_json()
    code, out, _ = run(capsys, "query", tmp_path / "idx", caption, "--json")
    assert code == 0
    cli = json.loads(out)
    for column in ("base", "emcl"):
        got = [(h["video_id"], h["rank"], h["other_rank"]) for h in cli[column]]
        want = [(h["video_id"], h["rank"], h["other_rank"]) for h in app[column]]
        assert got == want
        assert [h["score"] for h in cli[column]] == pytest.approx(
            [h["score"] for h in app[column]], abs=1e-5
        )


def test_python_m_emcl_index_runs_the_command_line(tmp_path):
    missing = tmp_path / "no-index"
    command = [sys.executable, "-m", "emcl", "index", "query", str(missing), "a ball"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and f"no index at {missing}" in done.stderr
    assert "python -m emcl index build" in done.stderr


def test_windows_rank_as_one_video_at_its_best_span(capsys, tmp_path):
    """Rows that are time windows of one video (as long videos are indexed) come back as that
    video once, at its best window's score and span."""
    vectors = unit_rows(30)
    ids = [f"clip{i}" for i in range(24)] + ["long"] * 6
    spans = [None] * 24 + [(5.0 * w, 5.0 * w + 10.0) for w in range(6)]
    write_parquet(tmp_path / "w.parquet", ids, spans, vectors)
    model = ["--checkpoint", BASE]
    build = ["build", "--embeddings", tmp_path / "w.parquet", "--out", tmp_path / "idx", *model]
    assert run(capsys, *build)[0] == 0
    code, out, _ = run(capsys, "query", tmp_path / "idx", "a ball", "--top-k", 25, "--json")
    assert code == 0
    result = json.loads(out)
    for column in ("base", "emcl"):
        hits = result[column]
        assert len(hits) == 25 and len({h["video_id"] for h in hits}) == 25  # 24 clips + long
        (long,) = [h for h in hits if h["video_id"] == "long"]
        assert tuple(long["span"]) in spans and all(h["span"] is None for h in hits if h != long)
    encoder = open_index(tmp_path / "idx").model.encoder("cpu")
    with torch.inference_mode():
        query = F.normalize(encoder.encode_texts(["a ball"])["sentence"][0], dim=-1)
    windows = torch.from_numpy(vectors[24:]).half().float()
    best = int((F.normalize(windows, dim=-1) @ query).argmax())  # the reference: best cosine
    (long,) = [h for h in result["base"] if h["video_id"] == "long"]
    assert tuple(long["span"]) == spans[24 + best]
