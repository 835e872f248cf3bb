"""The page: header, knob panel and tabs assembled, the cross-tab events wired, and the
settings the server launches with (docs/reliability.md §2)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
# Gradio's queue summarises every event it has recorded (a pandas table) after each event by
# default: CPU per request that grows with the requests served. Summarise rarely instead.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")

import gradio as gr

from emcl import paths
from emcl.auth import Logins
from emcl.explorer.knobs import Knobs
from emcl.explorer.service import Explorer
from emcl.explorer.setup import Setup
from emcl.explorer.uploads import UPLOAD_MAX_BYTES
from emcl.training.jobs import TrainJobs, TrainSettings
from ui import knob_panel
from ui.common import CONCURRENCY, QUEUE_SIZE, QUIET_EVENT, QUIET_MAPS_EVENT
from ui.flags import Serving
from ui.tabs import gallery, map, metrics, models, search, study, subspaces, train
from ui.text import summary

ASSETS = paths.REPO_ROOT / "assets"
QUEUE_POLL_S = 0.005
MAX_FILE_SIZE = UPLOAD_MAX_BYTES  # per uploaded file, enforced by Gradio (413) and the explorer


@dataclass(frozen=True)
class Lab:
    """The Study and Train tabs' settings: the folders searched for study runs (beside
    checkpoints/study.json) and the training jobs (None: training from the page is off)."""

    study_folders: tuple[Path, ...] = ()
    jobs: TrainJobs | None = None


def lab_from(setup: Setup, serving: Serving) -> Lab:
    """The lab of a started app: studies under the runs folders and ``--study``; training on
    the app's data when ``serving`` allows it (loopback, or --allow-training with logins)."""
    jobs = None
    if serving.training_disk_bytes is not None:
        settings = TrainSettings(
            runs_dir=str(setup.runs_dir),
            data=str(setup.data_root),
            cache_dir=str(paths.frames_dir(setup.cache_dir)),
            disk_budget_bytes=max(serving.training_disk_bytes, 1),
            device=setup.device,
        )
        jobs = TrainJobs(settings)
    return Lab(study_folders=setup.study_folders, jobs=jobs)


def build_demo(
    explorer: Explorer,
    serving: Serving | None = None,
    title: str = "EMCL Explorer",
    lab: Lab | None = None,
) -> gr.Blocks:
    """The whole page for ``explorer``; ``serving`` says whether uploads are on (default:
    off) and with which caps; ``lab`` the Study and Train tabs' folders and jobs (default:
    the shipped study only, training off)."""
    uploads = (serving or Serving()).uploads
    lab = lab or Lab()

    def study_sources() -> list[Path]:
        return list(lab.study_folders)

    def init_choices() -> list[tuple[str, str]]:
        return [(e.label, str(e.path)) for e in explorer.checkpoint_catalog() if e.ok]

    # Uploaded files in Gradio's cache are copied into the gallery; drop them after an hour.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        active_tab = gr.State("search")
        with gr.Row(elem_classes="emcl-header"):
            gr.Markdown(
                f"## {title}\nSearch videos by text and compare the **base** ranking with "
                "**EMCL** (Expectation-Maximization Contrastive Learning) side by side; move "
                "the knobs and watch rankings, metrics, subspaces and the embedding map change.",
            )
            header = gr.Markdown(summary(explorer), elem_classes="emcl-info")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=290, elem_classes="emcl-knobs"):
                panel = knob_panel.build(explorer)
            with gr.Column(scale=4), gr.Tabs():
                search_tab = search.build(explorer)
                subspaces_tab = subspaces.build(explorer)
                metrics_tab = metrics.build()
                map_tab = map.build()
                gallery_tab = gallery.build(explorer, uploads)
                models_tab = models.build(explorer)
                study_tab = study.build(study_sources)
                train_tab = train.build(lab.jobs, init_choices) if lab.jobs else None
                train_page = train_tab.tab if train_tab is not None else train.off()

        to_subspaces = [subspaces_tab.video, subspaces_tab.caption, subspaces_tab.window]
        search.wire(search_tab, panel, explorer, to_subspaces)
        redraw = subspaces.wire(subspaces_tab, panel, explorer, active_tab)
        metrics.wire(metrics_tab, panel, explorer, demo)
        map.wire(map_tab, panel, explorer)
        gallery.wire(gallery_tab, explorer, header, subspaces_tab.video, uploads)
        models.wire(models_tab, explorer, header)
        study.wire(study_tab, study_sources)
        if train_tab is not None and lab.jobs is not None:
            train.wire(train_tab, lab.jobs, init_choices)
        tabs = {
            "search": search_tab.tab,
            "subspaces": subspaces_tab.tab,
            "metrics": metrics_tab.tab,
            "map": map_tab.tab,
            "gallery": gallery_tab.tab,
            "models": models_tab.tab,
            "study": study_tab.tab,
            "train": train_page,
        }
        for name, tab in tabs.items():
            selected = tab.select(
                lambda name=name: name, None, active_tab, api_visibility="private", queue=False
            )
            if name == "subspaces":
                selected.then(redraw.redraw, redraw.inputs, redraw.outputs, **QUIET_MAPS_EVENT)
        knob_panel.wire_tabs(panel, tabs)
        switched = models_tab.current.change(
            lambda mode: knob_panel.widget_values(explorer.defaults(served_mode(explorer, mode))),
            panel.widgets["mode"],
            panel.inputs,
            api_visibility="private",
            queue=False,
        )
        _wire_knob_changes(explorer, panel, search_tab, metrics_tab, redraw, switched)
    return demo


def _wire_knob_changes(
    explorer: Explorer,
    panel: knob_panel.KnobPanel,
    search_tab: search.SearchTab,
    metrics_tab: metrics.MetricsTab,
    redraw: subspaces.SubspacesWiring,
    switched: Any,
) -> None:
    """A knob the user moved, or a new pair served (``switched``: the knobs already set to its
    defaults): both columns (if there is a query) and the metrics in one call, then the
    subspace view if it is showing."""

    def refresh(query: str, knobs: Knobs) -> tuple:
        table, note, metrics_run = metrics.live(explorer, knobs)
        if not isinstance(query, str) or not query.strip():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), table, note, metrics_run
        shown = search.render(explorer, explorer.rank(query, knobs))
        return *shown, table, note, metrics_run

    handler = panel.bind(refresh, before=["query"])
    inputs = [search_tab.query, *panel.inputs]
    outputs = [
        search_tab.base_column,
        search_tab.emcl_column,
        search_tab.status,
        panel.runs["search"],
        metrics_tab.table,
        metrics_tab.note,
        panel.runs["metrics"],
    ]
    events = [
        trigger(handler, inputs, outputs, **QUIET_EVENT)
        for trigger in knob_panel.change_events(panel)
    ]
    events += [
        e.then(handler, inputs, outputs, **QUIET_EVENT)
        for e in (*knob_panel.wire(panel, explorer), switched)
    ]
    for event in events:
        event.then(redraw.redraw, redraw.inputs, redraw.outputs, **QUIET_MAPS_EVENT)


def served_mode(explorer: Explorer, mode: str) -> str:
    """The knob mode to show after a switch: ``mode``, unless it is joint and the new pair
    has no jointly trained EMCL checkpoint."""
    return mode if mode != "joint" or explorer.has_joint else "inference"


def _login_check(logins: Logins) -> Any:
    """Gradio's ``auth``: the scrypt check runs in a worker thread, not on the event loop."""

    async def check(user: str, password: str) -> bool:
        return await asyncio.to_thread(logins, user, password)

    return check


def launch_settings(setup: Setup, explorer: Explorer, serving: Serving | None = None) -> dict:
    """``launch()`` keyword arguments: the address (loopback by default), logins when a
    password file is given, no share link, Gradio's upload route closed unless uploads are
    on (then capped per file), and file routes limited to the video folders, with
    checkpoints and caches blocked."""
    serving = serving or Serving()
    blocked = [setup.features_dir, setup.maps_dir, setup.world_dir / "frame_concepts.json"]
    for checkpoint in (setup.base_checkpoint, setup.checkpoint, paths.CHECKPOINTS, setup.runs_dir):
        if checkpoint is not None:
            blocked.append(Path(checkpoint))
    return {
        "server_name": serving.host,
        "server_port": serving.port,
        "share": False,
        "auth": _login_check(serving.logins) if serving.logins is not None else None,
        "auth_message": "EMCL Explorer: sign in with the account its operator gave you.",
        "ssl_certfile": str(serving.ssl_certfile) if serving.ssl_certfile else None,
        "ssl_keyfile": str(serving.ssl_keyfile) if serving.ssl_keyfile else None,
        # 0 bytes: with uploads off, Gradio's upload route refuses every file (413).
        "max_file_size": MAX_FILE_SIZE if serving.uploads is not None else 0,
        "allowed_paths": [str(p) for p in setup.video_dirs(explorer.snapshot.records)],
        "blocked_paths": [str(Path(p).resolve()) for p in blocked],
        "show_error": False,
        "css_paths": [str(ASSETS / "style.css")],
        "js": map.CLICK_JS,
        "theme": gr.themes.Default(
            primary_hue="blue",
            neutral_hue="slate",
            font=["system-ui", "sans-serif"],
            font_mono=["ui-monospace", "monospace"],
        ),
        "footer_links": ["api"],
    }


def queued(demo: gr.Blocks) -> gr.Blocks:
    """A bounded queue: requests beyond ``QUEUE_SIZE`` waiting get a 'queue full' error."""
    demo = demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    # Gradio's queue looks for a free slot every millisecond while requests wait, on the
    # event loop every request needs; every few milliseconds leaves that loop to them.
    demo._queue.sleep_when_free = QUEUE_POLL_S
    return demo
