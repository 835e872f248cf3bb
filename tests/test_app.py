"""The launched app through gradio_client and HTTP: the /rank API, validation, concurrency and
the serving rules of docs/reliability.md §2."""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import torch
from gradio_client import Client
from helpers import run_in_threads

from emcl.explorer.knobs import LIMITS
from emcl.model.encoder import model_fingerprint
from ui import app as ui_app
from ui import common

RANK = {"beta": 4.0, "k": 7, "iters": 10, "lam": 0.1, "init": "reference", "top_k": 5}


@pytest.fixture(scope="module")
def client(served_app) -> Client:
    return Client(served_app["url"], verbose=False)


def rank(client: Client, query: str = "a red circle moves to the left", **overrides) -> dict:
    args = {**RANK, "mode": "inference", **overrides}
    return client.predict(query=query, **args, api_name="/rank")


def strip_ms(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "ms"}


def ids(column: list[dict]) -> list[str]:
    return [hit["video_id"] for hit in column]


# ---- /rank -----------------------------------------------------------------------------------
def test_rank_returns_top_k_for_both_columns(client, served_app):
    result = rank(client)
    assert len(result["base"]) == len(result["emcl"]) == RANK["top_k"]
    for column in ("base", "emcl"):
        assert [h["rank"] for h in result[column]] == [1, 2, 3, 4, 5]
        assert all({"video_id", "score", "rank", "rank_change"} <= set(h) for h in result[column])
    assert result["context"] == "shortlist" and result["effective_k"] >= 1
    assert result["ms"] > 0
    assert isinstance(result["rec_ratio"], float) and result["rec_ratio"] > 0
    half = rank(client, beta=RANK["beta"] / 2)["rec_ratio"]  # |β μ z^T| / |x| is linear in β
    assert half == pytest.approx(result["rec_ratio"] / 2, rel=1e-4)
    for hit in result["base"]:
        assert hit["cosine"] == pytest.approx(hit["score"])  # the base column ranks by cosine
    for hit in result["emcl"]:
        assert -1.0 <= hit["cosine"] <= 1.0  # both columns show cosines (the EMCL one after EM)
    known = set(served_app["explorer"].snapshot.position)
    assert set(ids(result["base"]) + ids(result["emcl"])) <= known


def test_beta_zero_in_inference_mode_reproduces_the_base_ranking(client):
    result = rank(client, beta=0.0, top_k=20)
    assert ids(result["emcl"]) == ids(result["base"])
    assert [h["score"] for h in result["emcl"]] == pytest.approx(
        [h["score"] for h in result["base"]]
    )
    assert result["rec_ratio"] == 0.0


def test_joint_mode_over_the_api(client, served_app):
    trained = served_app["explorer"].trained
    # Both in the inference-module protocol: the base column is the base checkpoint's ranking.
    result = rank(
        client, mode="joint", init="prior", k=trained.k, beta=trained.beta, protocol="inference"
    )
    plain = rank(client, beta=0.0)
    assert ids(result["base"]) == ids(plain["base"])
    as_trained = rank(client, mode="joint", init="prior", k=trained.k, beta=trained.beta)
    assert as_trained["protocol"] == "trained"  # the joint mode's default protocol


def test_same_request_twice_gives_the_same_answer(client):
    first = rank(client, init="data", k=8, lam=0.03)
    assert strip_ms(first) == strip_ms(rank(client, init="data", k=8, lam=0.03))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": "   \n"}, "query is empty"),
        ({"beta": LIMITS["beta"][1] + 1}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"lam": 0.0}, "lam"),
        ({"k": 0}, "k must be"),
        ({"k": 10_000}, "k must be"),
        ({"iters": -1}, "iters"),
        ({"top_k": 0}, "top_k"),
        ({"init": "random"}, "init must be one of"),
        ({"mode": "both"}, "mode must be one of"),
    ],
)
def test_bad_requests_are_refused_with_a_message(client, overrides, message):
    query = overrides.pop("query", "a red circle")
    with pytest.raises(Exception, match=message):
        rank(client, query=query, **overrides)


def raw_rank(url: str, values: list) -> str:
    """Call /rank over plain HTTP (gradio_client will not send NaN): the SSE reply text."""
    body = json.dumps({"data": values})  # json.dumps writes NaN / Infinity literals
    headers = {"Content-Type": "application/json"}
    posted = httpx.post(f"{url}gradio_api/call/rank", content=body, headers=headers, timeout=10)
    posted.raise_for_status()
    event = posted.json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/rank/{event}", timeout=30).text


@pytest.mark.parametrize(("index", "name"), [(1, "beta"), (4, "lam")])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_and_the_server_keeps_answering(
    client, served_app, index, name, value
):
    # Gradio's raw route takes every parameter: `protocol` last (None: the mode's default).
    values = ["a red circle", 4.0, 7, 10, 0.1, "reference", 5, "inference", None]
    values[index] = value
    reply = raw_rank(served_app["url"], values)
    assert "event: error" in reply and f"{name} must be a finite number" in reply
    assert len(rank(client)["base"]) == RANK["top_k"]


def test_eight_threads_with_different_knobs_match_sequential_calls(served_app):
    explorer = served_app["explorer"]
    snap = explorer.snapshot
    models = [snap.base.encoder.model, snap.emcl.encoder.model]
    weights = [model_fingerprint(m) for m in models]
    prior = snap.emcl.encoder.model.emcl.prior.clone()
    trained = explorer.trained
    requests = [
        {"beta": b, "k": k, "init": init, "mode": mode, "lam": lam}
        for b, k, init, mode, lam in [
            (0.0, 7, "reference", "inference", 0.1), (1.0, 4, "data", "inference", 0.03),
            (3.0, 16, "data", "inference", 0.01), (6.0, 7, "reference", "inference", 1.0),
            (2.0, trained.k, "prior", "joint", 1.0), (8.0, trained.k, "prior", "joint", 0.1),
            (4.0, 8, "data", "joint", 0.05), (12.0, 2, "reference", "joint", 0.3),
        ]
    ]  # fmt: skip
    clients = [Client(served_app["url"], verbose=False) for _ in range(8)]
    sequential = [strip_ms(rank(clients[0], **r)) for r in requests]
    results: list = [None] * 8

    def call(i: int) -> None:
        for _ in range(3):
            results[i] = strip_ms(rank(clients[i], **requests[i]))

    assert not run_in_threads(8, call)
    assert results == sequential
    assert [model_fingerprint(m) for m in models] == weights
    assert torch.equal(snap.emcl.encoder.model.emcl.prior, prior)


def test_named_events_exist(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/rank", "/search", "/align", "/metrics", "/sweep", "/embedding_map"} <= names


# ---- file routes ------------------------------------------------------------------------------
def fetch(url: str, path: str) -> httpx.Response:
    return httpx.get(f"{url}gradio_api/file={path}", timeout=10)


def test_videos_are_served_from_the_gallery_folder(served_app):
    video = served_app["explorer"].video_path(served_app["explorer"].snapshot.records[0].video_id)
    response = fetch(served_app["url"], quote(str(video)))
    assert response.status_code == 200
    assert response.content == video.read_bytes()


def test_checkpoints_caches_traversal_and_dotfiles_are_refused(served_app, explorer_inputs):
    url = served_app["url"]
    videos = (
        served_app["explorer"]
        .video_path(served_app["explorer"].snapshot.records[0].video_id)
        .parent
    )
    setup = served_app["setup"]
    features = next(setup.features_dir.rglob("*.safetensors"))
    checkpoint = Path(explorer_inputs["checkpoints"]["demo-emcl"]) / "model.safetensors"
    dotfile = Path.cwd() / ".gitignore"
    assert checkpoint.is_file() and features.is_file() and dotfile.is_file()
    paths = [
        str(checkpoint),
        str(features),
        f"{videos}/../frame_concepts.json",
        f"{videos}/../../{checkpoint.parent.name}/model.safetensors",
        f"{videos}/%2e%2e/frame_concepts.json",
        f"{videos}/%2e%2e%2fframe_concepts.json",
        "..%2f..%2f..%2fetc%2fpasswd",
        "//host/share/file.mp4",
        str(dotfile),
        ".gitignore",
        "app.py",
        "/nonexistent-dir/missing.mp4",
        "/etc/passwd",
    ]
    for path in paths:
        response = fetch(url, path)
        assert response.status_code == 403, (path, response.status_code)
    assert str(checkpoint.parent.resolve()) in served_app["settings"]["blocked_paths"]


# ---- uploads ------------------------------------------------------------------------------------
def upload_dir_files(served_app) -> set[Path]:
    folder = Path(served_app["server"].uploaded_file_dir)
    return set(folder.rglob("*")) if folder.exists() else set()


def test_upload_over_the_size_limit_is_refused(served_app):
    before = upload_dir_files(served_app)
    limit = served_app["demo"].max_file_size
    assert limit == ui_app.MAX_FILE_SIZE
    body = b"\0" * (limit + 1)
    response = httpx.post(
        f"{served_app['url']}gradio_api/upload",
        files=[("files", ("big.mp4", body, "video/mp4"))],
        timeout=60,
    )
    assert response.status_code == 413
    assert upload_dir_files(served_app) == before


def test_upload_named_dotdot_is_refused(served_app):
    response = httpx.post(
        f"{served_app['url']}gradio_api/upload",
        files=[("files", ("..", b"data", "application/octet-stream"))],
        timeout=10,
    )
    assert response.status_code == 400


# ---- ids, never paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("video_id", ["../../etc/passwd", "/etc/passwd", "video0/../../x"])
def test_handlers_refuse_paths_as_video_ids(client, video_id):
    knobs = ["inference", 4.0, 7, 10, -1.0, "reference", 42, "shortlist", 64, False, -2.0, 5]
    # Gradio's own Dropdown check or the explorer's id lookup refuses it, before any file access.
    with pytest.raises(Exception, match=r"not in the list of choices|unknown video id"):
        client.predict(video_id, "a red circle", "auto", "subspaces", *knobs, api_name="/align")
    with pytest.raises(Exception, match="unknown"):
        client.predict(f"video:{video_id}", api_name="/map_item")


# ---- launch settings ----------------------------------------------------------------------------
def test_launch_settings(served_app, explorer_inputs):
    import gradio as gr

    demo, settings = served_app["demo"], served_app["settings"]
    assert settings["share"] is False and not demo.share
    assert settings["server_name"] == "127.0.0.1"
    assert demo.local_url.startswith("http://127.0.0.1:")
    assert settings["show_error"] is False
    assert demo.max_file_size == ui_app.MAX_FILE_SIZE
    assert demo._queue.max_size == common.QUEUE_SIZE
    blocked = [Path(p) for p in settings["blocked_paths"]]
    for checkpoint in explorer_inputs["checkpoints"].values():
        assert any(Path(checkpoint).resolve().is_relative_to(b) for b in blocked)
    setup = served_app["setup"]
    for private in (setup.features_dir, setup.maps_dir):
        assert private.resolve() in blocked
    for allowed in map(Path, settings["allowed_paths"]):
        for private in (*explorer_inputs["checkpoints"].values(), setup.features_dir):
            assert not Path(private).resolve().is_relative_to(allowed)
    videos = [b for b in demo.blocks.values() if isinstance(b, gr.Video)]
    assert all(v.format is None for v in videos)  # no ffmpeg conversion of inputs
    # Each kind of work queues in its own group: a search never waits behind metrics or maps.
    groups = {
        "rank": common.SEARCH, "search": common.SEARCH, "metrics": common.METRICS,
        "sweep": common.METRICS, "align": common.MAPS, "embedding_map": common.MAPS,
        "map_item": common.MAPS, "add_videos": common.UPLOADS,
    }  # fmt: skip
    events = {f.api_name: f for f in demo.fns.values() if f.api_name in groups}
    assert set(events) == set(groups)
    for name, group in groups.items():
        assert events[name].concurrency_id == group, name
        assert events[name].concurrency_limit == common.GROUP_LIMITS[group], name


# ---- named API parameters ------------------------------------------------------------------------
def test_every_endpoint_has_named_parameters(client):
    from ui.knob_panel import WIDGETS

    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name, info in endpoints.items():
        for parameter in info["parameters"]:
            assert not parameter["parameter_name"].startswith("param_"), (name, parameter)
    names = {n: [p["parameter_name"] for p in info["parameters"]] for n, info in endpoints.items()}
    assert names["/metrics"] == [
        "mode", "beta", "k", "iters", "lam", "init", "seed", "context", "shortlist",
        "isoftmax", "isoftmax_temp", "protocol",
    ]  # fmt: skip
    assert names["/sweep"] == ["name", *WIDGETS]
    # The active tab is a State, not a parameter.
    assert names["/align"] == ["video_id", "caption", "selection", "window", "words", *WIDGETS]
    assert names["/rank"] == [
        "query",
        "beta",
        "k",
        "iters",
        "lam",
        "init",
        "top_k",
        "mode",
        "protocol",
    ]


def test_metrics_api_takes_the_knobs_by_name_and_the_protocol(client, served_app):
    """``/metrics`` with λ by name equals the service's table, in both protocols, with the rows
    named as on the page and EMCL's size; bad knobs get the service's message."""
    from emcl.explorer.knobs import Knobs

    knobs = Knobs(mode="inference", beta=6.0, k=8, iters=10, lam=0.05, init="data", seed=3)
    named = {n: getattr(knobs, n) for n in ("mode", "beta", "k", "iters", "lam", "init", "seed")}
    for protocol in ("trained", "inference"):
        got = client.predict(**named, protocol=protocol, api_name="/metrics")
        want = served_app["explorer"].metrics(knobs, protocol)
        assert got["protocol"] == protocol
        assert list(got["rows"]) == [label for label, _ in want.rows]
        for label, metrics in want.rows:
            assert got["rows"][label] == metrics
        assert got["rec_ratio"] == pytest.approx(want.rec_ratio) and got["rec_ratio"] > 0
        assert got["effective_k"] == want.effective_k
    assert client.predict(**named, api_name="/metrics")["protocol"] == "trained"  # the default
    with pytest.raises(Exception, match="lam must be"):
        client.predict(**{**named, "lam": 20.0}, api_name="/metrics")
    with pytest.raises(Exception, match="protocol must be one of"):
        client.predict(**named, protocol="mmt", api_name="/metrics")
