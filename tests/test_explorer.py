"""The explorer service: validation, rankings, metrics, sweeps, subspaces, maps and uploads."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_in_threads

from emcl.explorer.knobs import LIMITS, MAX_QUERY_CHARS, KnobError, Knobs
from emcl.explorer.uploads import MAX_UPLOADS, UploadLimits
from emcl.model.encoder import model_fingerprint
from emcl.retrieval.metrics import inverted_softmax, retrieval_metrics
from emcl.video.writing import write_video

INFERENCE = Knobs(mode="inference", beta=4.0, k=7, iters=10, lam=0.1, init="reference", seed=42)


def without_ms(result) -> dict:
    data = result.to_json()
    data.pop("ms")
    return data


def order(rows) -> list[str]:
    return [r.video_id for r in rows]


# ---- knobs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("beta", float("nan"), "beta must be a finite number"),
        ("beta", LIMITS["beta"][1] + 1, "beta must be a finite number in"),
        ("beta", -0.1, "beta"),
        ("k", 0, "k must be"),
        ("k", 7.5, "k must be a whole number"),
        ("k", True, "k must be a number"),
        ("iters", 10**6, "iters"),
        ("lam", 0.0, "lam"),
        ("lam", float("inf"), "lam"),
        ("top_k", 0, "top_k"),
        ("shortlist", "many", "shortlist must be a number"),
        ("mode", "both", "mode must be one of"),
        ("init", "random", "init must be one of"),
        ("context", "batch", "context must be one of"),
        ("isoftmax", "yes", "isoftmax"),
    ],
)
def test_knobs_refuse_bad_values_naming_the_field(field, value, message):
    with pytest.raises(KnobError, match=message):
        replace(INFERENCE, **{field: value})


def test_knobs_accept_whole_floats_from_sliders():
    knobs = replace(INFERENCE, k=7.0, iters=3.0, top_k=5.0)
    assert (knobs.k, knobs.iters, knobs.top_k) == (7, 3, 5)
    assert isinstance(knobs.k, int)
    with pytest.raises(KnobError, match="unknown knob"):
        Knobs.from_dict({"beta": 1.0, "gamma": 2})


def test_defaults_are_the_paper_settings(explorer):
    inference = explorer.defaults("inference")
    assert (inference.k, inference.iters, inference.lam, inference.beta) == (7, 10, 0.1, 4.0)
    joint = explorer.defaults("joint")
    trained = explorer.trained
    assert (joint.k, joint.iters, joint.lam, joint.beta) == (
        trained.k, trained.iters, trained.lam, trained.beta,
    )  # fmt: skip
    assert joint.init == "prior"


# ---- search ----------------------------------------------------------------------------------
def test_rank_returns_top_k_in_both_columns(explorer):
    result = explorer.rank("a red circle moves to the left", replace(INFERENCE, top_k=5))
    assert len(result.base) == len(result.emcl) == 5
    for column in (result.base, result.emcl):
        assert [r.rank for r in column] == [1, 2, 3, 4, 5]
    assert [r.score for r in result.base] == sorted((r.score for r in result.base), reverse=True)
    for row in result.emcl:
        assert row.rank_change == row.other_rank - row.rank
    base_rank = {r.video_id: r.rank for r in result.base}
    for row in result.emcl:
        if row.video_id in base_rank:
            assert row.other_rank == base_rank[row.video_id]
    assert result.effective_k >= 1 and result.context == "shortlist"
    assert result.gallery_size == len(explorer.snapshot.records)


def test_base_column_is_the_cosine_ranking(explorer):
    snap = explorer.snapshot
    query = "three blue stars twirl"
    result = explorer.rank(query, replace(INFERENCE, top_k=50))
    with torch.inference_mode():
        q = F.normalize(snap.base.encoder.encode_texts([query])["sentence"][0], dim=-1)
    videos = F.normalize(snap.base.gallery.video_embeddings.float(), dim=-1)
    ids = snap.base.gallery.video_ids
    cosine = videos @ q
    want = [ids[i] for i in torch.argsort(cosine, descending=True, stable=True).tolist()]
    assert order(result.base) == want[: len(result.base)]
    best = sorted(cosine.tolist(), reverse=True)[: len(result.base)]
    # fp32 dot products of unit vectors summed in another order: equal to ~1e-8 absolute,
    # which a relative tolerance cannot allow for near-zero cosines
    assert [r.score for r in result.base] == pytest.approx(best, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("context", ["shortlist", "gallery", "block"])
def test_beta_zero_in_inference_mode_reproduces_the_base_column(explorer, context):
    for knobs in (replace(INFERENCE, beta=0.0), replace(INFERENCE, iters=0)):
        result = explorer.rank(
            "two huge yellow diamonds", replace(knobs, context=context, top_k=24)
        )
        assert order(result.emcl) == order(result.base)
        assert [r.score for r in result.emcl] == pytest.approx([r.score for r in result.base])
        assert all(r.rank_change == 0 for r in result.emcl)


def test_emcl_changes_the_ranking_when_on(explorer):
    query = "a small green triangle falls"
    plain = explorer.rank(query, replace(INFERENCE, beta=0.0, top_k=24))
    strong = explorer.rank(query, replace(INFERENCE, beta=20.0, top_k=24, context="gallery"))
    assert [r.score for r in strong.emcl] != pytest.approx([r.score for r in plain.emcl])


def test_joint_mode_keeps_the_base_column_and_uses_the_emcl_model(explorer):
    # Both columns in the inference-module protocol, so the base column is comparable.
    joint = replace(explorer.defaults("joint"), protocol="inference")
    query = "a black ball gets bigger"
    a = explorer.rank(query, replace(joint, top_k=24))
    b = explorer.rank(query, replace(INFERENCE, top_k=24))
    assert order(a.base) == order(b.base)
    assert [r.score for r in a.base] == pytest.approx([r.score for r in b.base])
    assert order(a.emcl) != order(b.emcl) or [r.score for r in a.emcl] != pytest.approx(
        [r.score for r in b.emcl]
    )


def test_same_request_twice_gives_the_same_answer(explorer):
    for knobs in (INFERENCE, explorer.defaults("joint"), replace(INFERENCE, init="data")):
        first = explorer.rank("one purple square spins", knobs)
        assert without_ms(first) == without_ms(explorer.rank("one purple square spins", knobs))


def test_known_caption_marks_the_ground_truth_even_outside_top_k(explorer):
    snap = explorer.snapshot
    caption, video = snap.captions[3], snap.caption_video[3]
    result = explorer.rank(caption, replace(INFERENCE, top_k=1))
    assert result.targets == (video,)
    full = explorer.rank(caption, replace(INFERENCE, top_k=50))
    assert result.target_rank["base"] == order(full.base).index(video) + 1
    assert result.target_rank["emcl"] == order(full.emcl).index(video) + 1
    assert [r.is_target for r in full.base] == [r.video_id == video for r in full.base]
    assert explorer.rank("no caption says this", INFERENCE).targets == ()


def test_inverted_softmax_on_a_known_caption_matches_the_metrics_postprocessing(explorer):
    snap = explorer.snapshot
    i = 5
    knobs = replace(INFERENCE, isoftmax=True, isoftmax_temp=0.05, top_k=50)
    result = explorer.rank(snap.captions[i], knobs)
    post = inverted_softmax(snap.base.base_sim, 0.05, "t2v")[i]
    ids = [r.video_id for r in snap.records]
    want = [ids[j] for j in torch.argsort(post, descending=True, stable=True).tolist()]
    assert order(result.base) == want[:50]
    assert any("inverted softmax" in n for n in result.notices)


def emcl_scores_by_hand(videos, query, knobs, groups) -> dict[int, float]:
    """Each group of gallery rows in one EM run with the query, as the reference does:
    X = [videos; query], output x + β·μzᵀ, score = <video out, query out>."""
    scores = {}
    for rows in groups:
        stacked = torch.cat([videos[rows], query[None]])  # [C+1, D]
        out = knobs.params().run(stacked, None).embeddings
        scores.update(zip(rows, (out[:-1] @ out[-1]).tolist(), strict=True))
    return scores


@pytest.mark.parametrize("context", ["shortlist", "gallery", "block"])
def test_each_em_context_is_its_own_computation(explorer, context):
    """The fixture gallery (80 videos) is larger than one 64-video block and than the
    shortlist (M = 32), so the three contexts give different EMCL scores. The data init: the
    reference init at a sharp λ splits by float rounding (docs/method.md §1.5)."""
    snap = explorer.snapshot
    query_text = "two huge yellow diamonds"
    knobs = replace(
        INFERENCE, beta=8.0, lam=0.5, init="data", seed=3, context=context, shortlist=32, top_k=50
    )
    result = explorer.rank(query_text, knobs)
    with torch.inference_mode():
        query = F.normalize(snap.base.encoder.encode_texts([query_text])["sentence"][0], dim=-1)
        videos = snap.base.index.embeddings.float()  # [80, D] unit norm, gallery order
        base_order = torch.argsort(videos @ query, descending=True, stable=True).tolist()
        groups = {
            "shortlist": [base_order[:32]],
            "gallery": [base_order],
            "block": [base_order[:64], base_order[64:]],
        }[context]
        want = emcl_scores_by_hand(videos, query, knobs, groups)
    assert len(snap.records) == 80
    ranked = sorted(want, key=lambda row: -want[row])  # the EM'd rows, best first
    expected_order = ranked + [row for row in base_order if row not in want]
    assert [snap.position[r.video_id] for r in result.emcl] == expected_order[:50]
    scored = [hit for hit in result.emcl if hit.index in want]
    assert len(scored) == min(50, len(want))
    for hit in scored:
        assert hit.score == pytest.approx(want[hit.index], abs=1e-5)
    others = {
        c: [r.video_id for r in explorer.rank(query_text, replace(knobs, context=c)).emcl]
        for c in ("shortlist", "gallery", "block")
        if c != context
    }
    assert all(order(result.emcl) != other for other in others.values())


@pytest.mark.parametrize("query", ["", "   ", "\x00", "\n\t", None, 42])
def test_empty_or_non_text_queries_are_refused(explorer, query):
    with pytest.raises(KnobError, match="query"):
        explorer.rank(query, INFERENCE)


def test_long_query_is_truncated_with_a_notice_in_bounded_time(explorer):
    start = time.perf_counter()
    result = explorer.rank("a red circle moves left " * 5000, INFERENCE)  # ~120 KB
    assert time.perf_counter() - start < 5
    assert "truncated" in result.notices[0]
    assert len(result.query) == MAX_QUERY_CHARS


@pytest.mark.parametrize("query", ["🙂🙂", "红色的圆", "دائرة حمراء", "e\u0301te\u0301 rouge"])
def test_any_script_gives_finite_scores(explorer, query):
    result = explorer.rank(query, INFERENCE)
    assert all(np.isfinite(r.score) for r in result.base + result.emcl)


def test_prior_init_needs_the_trained_k(explorer):
    trained = explorer.trained
    joint = explorer.defaults("joint")
    with pytest.raises(KnobError, match=f"K={trained.k}"):
        explorer.rank("a red star", replace(joint, k=trained.k + 1))
    explorer.rank("a red star", replace(joint, mode="inference"))  # the prior on base features


def test_unknown_video_ids_are_refused(explorer):
    for bad in ("../../etc/passwd", "/etc/passwd", "", None, "video0.mp4"):
        with pytest.raises(KnobError, match="unknown video id"):
            explorer.video_path(bad)
        with pytest.raises(KnobError):
            explorer.align(bad, "a red circle", INFERENCE)
    for item in ("video:../../etc/passwd", "text:999999", "text:-1", "/etc/passwd"):
        with pytest.raises(KnobError, match="unknown"):
            explorer.map_item(item)


# ---- metrics and sweeps ----------------------------------------------------------------------
def test_metrics_rows_match_an_independent_computation(explorer):
    snap = explorer.snapshot
    result = explorer.metrics(INFERENCE, protocol="inference")
    labels = [label for label, _ in result.rows]
    assert labels == [
        "Base",
        "Base + EMCL at inference",
        "EMCL checkpoint, no EM",
        "EMCL checkpoint + EM (joint)",
    ]
    with torch.inference_mode():
        texts = snap.base.encoder.encode_texts(list(snap.captions))["sentence"]
    sim = (
        F.normalize(texts, dim=-1)
        @ F.normalize(snap.base.gallery.video_embeddings.float(), dim=-1).T
    )
    owner = [snap.position[v] for v in snap.caption_video]
    want = retrieval_metrics(sim, owner)
    for direction in ("t2v", "v2t"):
        for key, value in want[direction].items():
            assert result.rows[0][1][direction][key] == pytest.approx(value, abs=1e-6)
    off = explorer.metrics(replace(INFERENCE, beta=0.0), protocol="inference")
    assert off.rows[1][1] == off.rows[0][1]  # EMCL off at inference = base
    assert len(result.table()) == 4 and len(result.table()[0]) == 11


def test_metrics_follow_the_knobs_and_the_inverted_softmax(explorer):
    a = explorer.metrics(replace(INFERENCE, beta=1.0, context="gallery"), "inference")
    b = explorer.metrics(replace(INFERENCE, beta=20.0, context="gallery"), "inference")
    assert a.rows[0][1] == b.rows[0][1]
    assert a.rows[1][1] != b.rows[1][1]
    c = explorer.metrics(replace(INFERENCE, isoftmax=True, isoftmax_temp=0.01), "inference")
    snap = explorer.snapshot
    want = retrieval_metrics(snap.base.base_sim, snap.caption_owner, inverted_softmax_temp=0.01)
    assert c.rows[0][1] == want
    assert "block of 64 × 64" in explorer.metrics(INFERENCE, "inference").description


def test_trained_protocol_rows_use_text_conditioned_pooling(explorer):
    snap = explorer.snapshot
    result = explorer.metrics(INFERENCE)  # the default protocol: as trained
    assert result.protocol == "trained" and "32 captions × 32 videos" in result.description
    text = snap.base.sentences  # [Nt, D] as the model emits them: the softmax sees the norm
    frames = snap.base.frames.float()  # [Nv, T, D]
    temp = snap.base.encoder.config.frame_temp
    weights = torch.softmax(torch.einsum("ad,bfd->abf", text, frames) / temp, dim=-1)
    pooled = F.normalize(torch.einsum("abf,bfd->abd", weights, frames), dim=-1)  # [Nt, Nv, D]
    sim = torch.einsum("ad,abd->ab", F.normalize(text, dim=-1), pooled)
    want = retrieval_metrics(sim, snap.caption_owner)
    for direction in ("t2v", "v2t"):
        for key, value in want[direction].items():
            assert result.rows[0][1][direction][key] == pytest.approx(value, abs=1e-6)
    off = explorer.metrics(replace(INFERENCE, beta=0.0), protocol="trained")
    assert off.rows[1][1] == off.rows[0][1] and off.rows[3][1] == off.rows[2][1]
    with pytest.raises(KnobError, match="protocol"):
        explorer.metrics(INFERENCE, protocol="mmt")


def test_sweep_covers_the_preset_values(explorer):
    result = explorer.sweep(INFERENCE, "beta")
    assert result.values[0] == 0.0
    series = result.series["Base + EMCL at inference"]
    assert len(series) == len(result.values)
    assert series[0] == result.reference["Base"]  # beta = 0 is the base model
    assert set(result.series) == {"Base + EMCL at inference", "EMCL checkpoint + EM (joint)"}
    with pytest.raises(KnobError, match="sweep K"):
        explorer.sweep(explorer.defaults("joint"), "k")
    with pytest.raises(KnobError, match="sweep must be one of"):
        explorer.sweep(INFERENCE, "momentum")


# ---- subspaces -------------------------------------------------------------------------------
def informative_pair(explorer) -> tuple[str, str]:
    """A (video, caption) whose caption names a concept shown in some but not all frames."""
    snap, truth = explorer.snapshot, explorer.ground_truth
    for video, caption in zip(snap.caption_video, snap.captions, strict=True):
        frames = [set(f) for f in truth.concepts[video]]
        for word in caption.lower().split():
            concept = truth.lexicon.get("".join(ch for ch in word if ch.isalpha()))
            if concept and 0 < sum(concept in f for f in frames) < len(frames):
                return video, caption
    raise AssertionError("the fixture world has no event clip")


def test_align_scores_the_pair_against_the_demo_world_ground_truth(explorer):
    snap = explorer.snapshot
    video, caption = informative_pair(explorer)
    result = explorer.align(video, caption, replace(INFERENCE, init="data", lam=0.01, k=8))
    a = result.alignment
    assert a.similarity.shape[1] == snap.base.frames.shape[1]
    assert all(any(ch.isalnum() for ch in w) for w in a.words)
    assert set(result.grounding) == {"auto", "full", *(f"s{s + 1}" for s in range(a.n_subspaces))}
    auto = result.grounding["auto"]
    assert auto is not None and 0 < auto.scored <= len(a.words)
    assert 0 <= auto.hits <= auto.scored and 0 <= auto.chance <= auto.scored
    first = explorer.align(snap.caption_video[0], snap.captions[0], INFERENCE)
    # The reference init's sign prior merges the K columns into a few sign groups (exactly two
    # on controlled inputs: test_subspace.py); on a trained model's large features rounding
    # can split a group (docs/method.md §1.5), so here: fewer subspaces than K.
    assert first.alignment.n_subspaces < INFERENCE.k


def test_grounding_average_pools_the_test_split(explorer):
    knobs = replace(INFERENCE, init="data", lam=0.01, k=8)
    average = explorer.grounding_average(knobs)
    snap = explorer.snapshot
    assert average.pairs == len(snap.records)
    assert 0 < average.auto.scored == average.full.scored
    one = explorer.align(snap.caption_video[2], snap.captions[2], knobs)
    assert average.auto.scored >= one.grounding["auto"].scored
    assert explorer.grounding_average(knobs) is average  # cached per knobs
    low, high = average.auto_interval
    assert low <= average.auto.score <= high
    assert 0 < average.auto.chance_score < 1  # only words visible in some, not all, frames


def test_two_word_encodings_and_the_better_one_is_the_default(explorer):
    snap = explorer.snapshot
    knobs = explorer.defaults("joint")
    video, caption = snap.caption_video[2], snap.captions[2]
    alone = explorer.align(video, caption, knobs, words="alone")
    tokens = explorer.align(video, caption, knobs, words="tokens")
    assert alone.words == "alone" and tokens.words == "tokens"
    assert alone.alignment.words == tokens.alignment.words
    # "alone": each word's full-space links are those of the word encoded as its own caption.
    frames = F.normalize(snap.emcl.frames[snap.position[video]].float(), dim=-1)
    for word, frame in zip(
        alone.alignment.words, alone.alignment.links(None)[0].tolist(), strict=True
    ):
        vector, _ = explorer.encode_query(snap.emcl, word)
        assert frame == int((frames @ vector).argmax())
    scores = {e: explorer.grounding_average(knobs, words=e).auto.score for e in ("tokens", "alone")}
    best = max(scores, key=scores.get)
    assert explorer.default_words(knobs) == best or scores["tokens"] == scores["alone"]
    assert explorer.align(video, caption, knobs).words == explorer.default_words(knobs)
    with pytest.raises(KnobError, match="word encoding"):
        explorer.align(video, caption, knobs, words="letters")


def test_frames_shown_are_the_sampled_frames(explorer):
    video = explorer.snapshot.records[0].video_id
    frames = explorer.frames_rgb(video, size=48)
    assert frames.shape == (explorer.snapshot.base.frames.shape[1], 48, 48, 3)
    assert frames.dtype == np.uint8


# ---- embedding map ---------------------------------------------------------------------------
def test_embedding_map_before_and_after(explorer):
    snap = explorer.snapshot
    result = explorer.embedding_map(INFERENCE, method="pca")
    n = len(snap.records) + len(snap.captions)
    assert result.coords_before.shape == result.coords_after.shape == (n, 2)
    assert result.modality.count("video") == len(snap.records)
    assert result.gap_before > 0 and np.isfinite(result.gap_after)
    off = explorer.embedding_map(replace(INFERENCE, beta=0.0), method="pca")
    assert off.gap_after == pytest.approx(off.gap_before)
    assert np.allclose(off.coords_after, off.coords_before)
    video, caption, kind = explorer.map_item(result.item_ids[-1])
    assert kind == "text" and caption in snap.captions and video in snap.position


# ---- concurrency -----------------------------------------------------------------------------
def test_concurrent_requests_match_sequential_ones_and_never_write_the_models(explorer):
    snap = explorer.snapshot
    models = [snap.base.encoder.model, snap.emcl.encoder.model]
    before = [model_fingerprint(m) for m in models]
    prior = snap.emcl.encoder.model.emcl.prior.clone()
    joint = explorer.defaults("joint")
    variations = [
        (0.0, 7, "reference", "shortlist"),
        (2.0, 4, "data", "gallery"),
        (8.0, 16, "data", "block"),
        (4.0, 7, "reference", "gallery"),
    ]
    settings = [replace(INFERENCE, beta=b, k=k, init=i, context=c) for b, k, i, c in variations]
    settings += [replace(joint, beta=b) for b in (0.5, 3.0, 10.0)]
    settings.append(replace(joint, isoftmax=True))
    queries = ["a red circle moves left", "two blue squares", "a star appears", "three crosses"]
    jobs = [(q, s) for q in queries for s in settings]
    sequential = [without_ms(explorer.rank(q, s)) for q, s in jobs]
    results: list = [None] * len(jobs)

    def worker(offset: int) -> None:
        for i in range(offset, len(jobs), 8):
            results[i] = without_ms(explorer.rank(*jobs[i]))

    assert not run_in_threads(8, worker)
    assert results == sequential
    assert [model_fingerprint(m) for m in models] == before
    assert torch.equal(snap.emcl.encoder.model.emcl.prior, prior)
    assert not any(m.training for m in models)


# ---- uploads ---------------------------------------------------------------------------------
@pytest.fixture
def fresh_explorer(explorer_inputs, tmp_path):
    """An explorer of its own (uploads change its gallery), sharing the warm feature cache."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(explorer_inputs["setup"]().features_dir, cache / "features")
    return explorer_inputs["make"](cache)


def clip(path: Path, colour: int = 200) -> Path:
    frames = [np.full((64, 64, 3), (colour + 3 * i) % 255, np.uint8) for i in range(20)]
    frames = [np.ascontiguousarray(f) for f in frames]
    for i, f in enumerate(frames):
        f[10 + i : 30 + i, 20:40] = (220, 30, 30)
    write_video(path, frames, 10)
    return path


def test_uploads_join_the_gallery_under_generated_names(fresh_explorer, tmp_path):
    ex = fresh_explorer
    old = ex.snapshot
    good = clip(tmp_path / "my holiday.mp4")
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    wrong = tmp_path / "script.sh"
    wrong.write_text("echo hi")
    added, refused = ex.add_uploads([good, bad, wrong], caption="a red box slides down")
    assert len(added) == 1 and added[0].startswith("upload-")
    reasons = {r["file"]: r["reason"] for r in refused}
    assert "script.sh" in reasons and "extension" in reasons["script.sh"]
    assert any(name.endswith(".mp4") and name.startswith("upload-") for name in reasons)
    new = ex.snapshot
    assert new.version == old.version + 1
    assert len(new.records) == len(old.records) + 1 and len(old.records) == len(old.position)
    path = ex.video_path(added[0])
    assert path.parent == ex.uploads_dir and path.name == f"{added[0]}.mp4" and path.is_file()
    assert sorted(p.name for p in ex.uploads_dir.iterdir()) == [path.name]  # failures removed
    result = ex.rank("a red box slides down", replace(INFERENCE, top_k=50))
    assert result.targets == (added[0],)
    assert added[0] in [r.video_id for r in result.base]
    assert new.captions[-1] == "a red box slides down"


def test_upload_limits(fresh_explorer, tmp_path):
    with pytest.raises(KnobError, match="at most"):
        fresh_explorer.add_uploads([tmp_path / f"{i}.mp4" for i in range(MAX_UPLOADS + 1)])
    with pytest.raises(KnobError, match="choose"):
        fresh_explorer.add_uploads([])
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 2048)
    # The page's route: the facade hands the user and the server's caps to the service.
    tight = UploadLimits(per_user_bytes=1024, total_bytes=2**30, reserve_bytes=0)
    added, refused = fresh_explorer.add_uploads([big], user="alice", limits=tight)
    assert added == [] and refused[0]["reason"].startswith("upload quota reached")
    from emcl.explorer.service import Explorer

    snap = fresh_explorer.snapshot
    small = Explorer(
        snap.base.encoder, snap.base.gallery, uploads_dir=tmp_path / "up", upload_max_bytes=1024
    )
    assert small.upload_max_bytes == 1024
    added, refused = small.add_uploads([big])
    assert added == [] and "larger than" in refused[0]["reason"]
    assert not (tmp_path / "up").exists() or not any((tmp_path / "up").iterdir())


def test_a_snapshot_is_published_only_under_the_write_lock(explorer):
    store = explorer.context.store
    snap = store.current()
    with pytest.raises(RuntimeError, match="write_lock"):
        store.publish(snap.base.gallery, snap.emcl.gallery)
    assert store.current() is snap is explorer.snapshot


def test_searches_during_an_upload_see_a_consistent_gallery(fresh_explorer, tmp_path):
    ex = fresh_explorer
    sizes, errors = [], []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            try:
                result = ex.rank("a red box", replace(INFERENCE, top_k=50))
                sizes.append(result.gallery_size)
                assert len(result.base) == min(50, result.gallery_size)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    ex.add_uploads([clip(tmp_path / "a.mp4", 50), clip(tmp_path / "b.webm.mp4", 120)])
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(sizes) <= {len(ex.snapshot.records) - 2, len(ex.snapshot.records)}
    assert sizes[-1] == len(ex.snapshot.records)


# ---- tiny galleries ----------------------------------------------------------------------------
def subset(gallery, n: int):
    return replace(
        gallery,
        video_ids=gallery.video_ids[:n],
        records=gallery.records[:n],
        frame_embeddings=gallery.frame_embeddings[:n],
        video_embeddings=gallery.video_embeddings[:n],
    )


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_galleries_degrade_gracefully(explorer, n):
    from emcl.explorer.service import Explorer

    snap = explorer.snapshot
    small = Explorer(
        snap.base.encoder,
        subset(snap.base.gallery, n),
        snap.emcl.encoder,
        subset(snap.emcl.gallery, n),
    )
    result = small.rank("a red circle", replace(INFERENCE, top_k=8, shortlist=64))
    assert len(result.base) == len(result.emcl) == n  # top-k clamped to the gallery
    assert all(np.isfinite(r.score) for r in result.base + result.emcl)
    assert len(small.metrics(INFERENCE).rows) == 4
    assert small.embedding_map(INFERENCE).method == "pca"  # too few points for UMAP


def test_an_empty_gallery_refuses_politely(explorer):
    from emcl.explorer.service import Explorer

    snap = explorer.snapshot
    empty = Explorer(snap.base.encoder, subset(snap.base.gallery, 0))
    with pytest.raises(KnobError, match="no rankable videos"):
        empty.rank("a red circle", INFERENCE)
    with pytest.raises(KnobError, match="need captions"):
        empty.metrics(INFERENCE)
    with pytest.raises(KnobError, match="joint mode needs"):
        empty.rank("a red circle", empty.defaults("joint"))


def test_a_folder_of_videos_with_an_open_clip_model_and_no_checkpoints(make_clip, tmp_path):
    """``python app.py --data FOLDER --model NAME``: base model only, inference mode."""
    from emcl.explorer.setup import Setup, load_explorer
    from emcl.model.config import DEMO_BACKBONE

    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(3):
        make_clip(f"videos/clip{i}.mp4", n=12 + 4 * i)
    (folder / "captions.csv").write_text("video,caption\nclip0.mp4,a grey clip\nclip2,a long one\n")
    (folder / "broken.mp4").write_text("not a video")
    setup = Setup(data=folder, model=DEMO_BACKBONE, cache_dir=tmp_path / "cache", log=print)
    ex = load_explorer(setup)
    assert not ex.has_joint and ex.defaults().mode == "inference"
    assert sorted(r.video_id for r in ex.snapshot.records) == ["clip0", "clip1", "clip2"]
    assert [s["video_id"] for s in ex.snapshot.skipped] == ["broken"]
    result = ex.rank("a grey clip", ex.defaults())
    assert result.targets == ("clip0",) and len(result.base) == 3
    assert len(ex.metrics(ex.defaults()).rows) == 2  # base, base + EMCL at inference
    with pytest.raises(KnobError, match="joint mode needs"):
        ex.rank("a grey clip", ex.defaults("joint"))
    with pytest.raises(KnobError, match="needs a jointly trained"):
        ex.rank("a grey clip", replace(ex.defaults(), init="prior"))
    assert [p.name for p in setup.video_dirs(ex.snapshot.records)] == ["uploads", "videos"]


# ---- the ANN shortlist in the app -------------------------------------------------------------
def test_search_through_the_ann_shortlist_equals_exact_search(explorer_inputs, tmp_path):
    """A gallery above the ANN threshold ranks the ANN's candidates; visiting every IVF cell
    (recall 1) gives exactly the exact-search columns, in both modes."""
    from emcl.retrieval.ann import AnnConfig

    setup = replace(explorer_inputs["setup"](), ann=AnnConfig(threshold=40, nlist=4, nprobe=4))
    approximate = load_explorer_with(setup)
    assert approximate.snapshot.base.index.ann is not None
    exact = explorer_inputs["make"]()
    assert exact.snapshot.base.index.ann is None  # 80 videos: below the default threshold
    caption = exact.snapshot.captions[5]
    for mode, shortlist in (("inference", 8), ("joint", 8)):
        knobs = replace(exact.defaults(mode), shortlist=shortlist, top_k=5)
        want, got = exact.rank(caption, knobs), approximate.rank(caption, knobs)
        for column in ("base", "emcl"):
            assert [h.video_id for h in getattr(got, column)] == [
                h.video_id for h in getattr(want, column)
            ]
            assert [h.score for h in getattr(got, column)] == pytest.approx(
                [h.score for h in getattr(want, column)], abs=1e-5
            )


def load_explorer_with(setup):
    """A fresh explorer for ``setup`` (the shared fixture builds with the default settings)."""
    from emcl.explorer.setup import load_explorer

    return load_explorer(setup)
