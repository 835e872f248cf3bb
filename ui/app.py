"""The page: header, knob panel and tabs assembled, the cross-tab events wired, and the
settings the server launches with (docs/reliability.md §2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

import gradio as gr

from emcl import paths
from emcl.explorer.knobs import Knobs
from emcl.explorer.service import Explorer
from emcl.explorer.setup import Setup
from emcl.explorer.uploads import UPLOAD_MAX_BYTES
from ui import knob_panel
from ui.common import CONCURRENCY, MODEL_EVENT, QUEUE_SIZE, QUIET_EVENT, user_errors
from ui.tabs import gallery, map, metrics, search, subspaces
from ui.text import summary

ASSETS = paths.REPO_ROOT / "assets"
MAX_FILE_SIZE = UPLOAD_MAX_BYTES  # per uploaded file, enforced by Gradio (413) and the explorer


def build_demo(explorer: Explorer, title: str = "EMCL Explorer") -> gr.Blocks:
    """The whole page for ``explorer``."""
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
                gallery_tab = gallery.build(explorer)

        search.wire(search_tab, panel, explorer, [subspaces_tab.video, subspaces_tab.caption])
        redraw = subspaces.wire(subspaces_tab, panel, explorer, active_tab)
        metrics.wire(metrics_tab, panel, explorer, demo)
        map.wire(map_tab, panel, explorer)
        gallery.wire(gallery_tab, explorer, header, subspaces_tab.video)
        tabs = {
            "search": search_tab.tab,
            "subspaces": subspaces_tab.tab,
            "metrics": metrics_tab.tab,
            "map": map_tab.tab,
            "gallery": gallery_tab.tab,
        }
        for name, tab in tabs.items():
            selected = tab.select(
                lambda name=name: name, None, active_tab, api_visibility="private", queue=False
            )
            if name == "subspaces":
                selected.then(redraw.redraw, redraw.inputs, redraw.outputs, **QUIET_EVENT)
        _wire_knob_changes(explorer, panel, search_tab, metrics_tab, redraw)
        _wire_rank_api(explorer)
    return demo


def _wire_knob_changes(
    explorer: Explorer,
    panel: knob_panel.KnobPanel,
    search_tab: search.SearchTab,
    metrics_tab: metrics.MetricsTab,
    redraw: subspaces.SubspacesWiring,
) -> None:
    """A knob the user moved: both columns (if there is a query) and the metrics in one call,
    then the subspace view if it is showing."""

    def refresh(query: str, knobs: Knobs) -> tuple:
        table, note, effective = metrics.live(explorer, knobs)
        if not isinstance(query, str) or not query.strip():
            return gr.skip(), gr.skip(), gr.skip(), table, note, effective
        base_html, emcl_html, status, effective = search.render(
            explorer, explorer.rank(query, knobs)
        )
        return base_html, emcl_html, status, table, note, effective

    handler = panel.bind(refresh, before=["query"])
    inputs = [search_tab.query, *panel.inputs]
    outputs = [
        search_tab.base_column,
        search_tab.emcl_column,
        search_tab.status,
        metrics_tab.table,
        metrics_tab.note,
        panel.effective_k,
    ]
    events = [
        trigger(handler, inputs, outputs, **QUIET_EVENT)
        for trigger in knob_panel.change_events(panel)
    ]
    events += [
        e.then(handler, inputs, outputs, **QUIET_EVENT) for e in knob_panel.wire(panel, explorer)
    ]
    for event in events:
        event.then(redraw.redraw, redraw.inputs, redraw.outputs, **QUIET_EVENT)


def _wire_rank_api(explorer: Explorer) -> None:
    """``/rank``: the programmatic search, JSON out (its signature is the documented API)."""

    def rank(
        query: str,
        beta: float,
        k: int,
        iters: int,
        lam: float,
        init: str,
        top_k: int,
        mode: str,
    ) -> dict:
        """Base and EMCL rankings of the gallery for a text query (JSON)."""
        seed = explorer.defaults(mode if mode in ("joint", "inference") else None).seed
        knobs = Knobs(
            mode=mode, beta=beta, k=k, iters=iters, lam=lam, init=init, seed=seed, top_k=top_k
        )
        return explorer.rank(query, knobs).to_json()

    gr.api(user_errors(rank), api_name="rank", **MODEL_EVENT)


def launch_settings(
    setup: Setup,
    explorer: Explorer,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    max_file_size: int = MAX_FILE_SIZE,
) -> dict[str, Any]:
    """``launch()`` keyword arguments: loopback, no share link, upload cap, and file routes
    limited to the video folders, with checkpoints and caches blocked."""
    blocked = [setup.features_dir, setup.maps_dir, setup.world_dir / "frame_concepts.json"]
    for checkpoint in (setup.base_checkpoint, setup.checkpoint, paths.CHECKPOINTS):
        if checkpoint is not None:
            blocked.append(Path(checkpoint))
    return {
        "server_name": host,
        "server_port": port,
        "share": False,
        "max_file_size": max_file_size,
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
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
