"""The Study tab: a five-seed study (``checkpoints/study.json`` or a ``python -m emcl study``
run folder) as figures, a table, a conclusion in words and CSV/JSON downloads; ``/study``
returns its numbers as JSON.

The picker offers only the files :func:`emcl.study.view.find_studies` finds under the folders
the app was started with; a name the client sends back is looked up in that list again, never
opened as a path (beyond loopback a path box would let visitors probe the server's disk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from emcl.paths import REPO_ROOT
from emcl.study import view as study_view
from emcl.study.view import StudyFileError, StudyView
from ui import exports, study_plots
from ui.common import MAPS_EVENT
from ui.plots import message_figure

Sources = Callable[[], list[Path]]  # the folders to look in, read at every refresh
STEM = "study"


@dataclass
class StudyTab:
    tab: gr.Tab
    source: gr.Dropdown
    refresh: gr.Button
    status: gr.Markdown
    conclusion: gr.Markdown
    table: gr.Dataframe
    r1_plot: gr.Plot
    differences_plot: gr.Plot
    beta_plot: gr.Plot
    errors_plot: gr.Plot
    downloads: exports.Downloads

    @property
    def outputs(self) -> list[gr.components.Component]:
        """What :func:`draw` fills, in its order."""
        return [
            self.status,
            self.conclusion,
            self.table,
            self.r1_plot,
            self.differences_plot,
            self.beta_plot,
            self.errors_plot,
        ]


# ---- the offered studies -------------------------------------------------------------------
def shown_name(path: Path) -> str:
    """A study file as the picker names it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def offered(sources: Sources) -> dict[str, Path]:
    """name -> file of every study found now, in find_studies' order."""
    return {shown_name(p): p for p in study_view.find_studies(sources())}


def load(name: str | None, sources: Sources) -> StudyView:
    """The view of the offered study ``name`` (empty: the first offered); StudyFileError for
    a name not offered or a file that is not a valid study.json."""
    studies = offered(sources)
    if not studies:
        raise StudyFileError("no study found: run `python -m emcl study --out DIR` first")
    if not name:
        name = next(iter(studies))
    if name not in studies:
        raise StudyFileError(f"{name!r} is not one of the studies offered")
    try:
        return study_view.load_study(studies[name], name)
    except StudyFileError as error:
        raise StudyFileError(f"{name} cannot be shown: {error}") from None


# ---- drawing ---------------------------------------------------------------------------------
def status_line(view: StudyView) -> str:
    parts = [f"**{view.source}**: {len(view.seeds)} seeds"]
    if view.missing:
        parts.append("not in this study (older run): " + "; ".join(view.missing))
    if view.notices:
        parts.append("check: " + "; ".join(view.notices))
    return " · ".join(parts)


def draw(name: str | None, sources: Sources) -> tuple[Any, ...]:
    """The tab's outputs for ``name``; a refused study fills them with its reason."""
    try:
        view = load(name, sources)
    except StudyFileError as error:
        empty = message_figure("No study to show")
        return (f"**Refused:** {error}", "", [], empty, empty, empty, empty)
    figures: list[go.Figure] = [
        study_plots.r1_figure(view),
        study_plots.differences_figure(view),
        study_plots.beta_figure(view),
        study_plots.errors_figure(view),
    ]
    return (
        status_line(view),
        study_view.conclusion(view),
        study_view.summary_table(view),
        *figures,
    )


def rescan(name: str | None, sources: Sources) -> tuple[Any, ...]:
    """The picker's choices found now (keeping ``name`` when still offered) and its drawing."""
    names = list(offered(sources))
    chosen = name if name in names else (names[0] if names else None)
    return (gr.update(choices=names, value=chosen), *draw(chosen, sources))


def export(name: str | None, sources: Sources, session: str | None) -> tuple[Path, Path]:
    """``study.csv`` (every number in long form) and ``study.json`` (:func:`to_json`)."""
    view = load(name, sources)
    rows = study_view.csv_rows(view)
    folder = exports.session_folder(session)
    document = study_view.to_json(view)
    return exports.write_table(folder, STEM, study_view.CSV_HEADERS, rows, document)


# ---- the tab ---------------------------------------------------------------------------------
def build(sources: Sources) -> StudyTab:
    names = list(offered(sources))
    with gr.Tab("Study", id="study") as tab:
        gr.Markdown(
            "#### The five-seed study\nPer seed a base and an EMCL fine-tune from one pretrained "
            "backbone (`python -m emcl study`): the supplement's rows † base, § base + EMCL at "
            "inference, ‡ EMCL trained jointly and the inference-module (L2) ablation; paired "
            "t-tests across seeds; its Table 2 (β with the inverted softmax); what the top-1 "
            "gets wrong. Read from the study's `study.json`; nothing is recomputed on a model.",
            elem_classes="emcl-hint",
        )
        with gr.Row():
            source = gr.Dropdown(
                names,
                value=names[0] if names else None,
                label="Study",
                info="checkpoints/study.json and the study runs found",
                scale=4,
                elem_id="emcl-study-source",
            )
            refresh = gr.Button("Look again", size="sm", scale=0, elem_id="emcl-study-refresh")
        status = gr.Markdown("", elem_id="emcl-study-status")
        conclusion = gr.Markdown("", elem_id="emcl-study-conclusion")
        table = gr.Dataframe(
            headers=study_view.SUMMARY_HEADERS,
            interactive=False,
            wrap=True,
            elem_id="emcl-study-table",
        )
        downloads = exports.build(STEM)
        r1_plot = gr.Plot(label="R@1 per seed", elem_id="emcl-study-r1")
        differences_plot = gr.Plot(label="Paired differences", elem_id="emcl-study-diff")
        beta_plot = gr.Plot(label="Table 2: β", elem_id="emcl-study-beta")
        errors_plot = gr.Plot(label="Top-1 errors", elem_id="emcl-study-errors")
    return StudyTab(
        tab,
        source,
        refresh,
        status,
        conclusion,
        table,
        r1_plot,
        differences_plot,
        beta_plot,
        errors_plot,
        downloads,
    )


def wire(tab: StudyTab, sources: Sources) -> None:
    """Picking a study draws it; opening the tab or "Look again" looks for new studies."""

    def show(name: str | None) -> tuple[Any, ...]:
        return draw(name, sources)

    def look_again(name: str | None) -> tuple[Any, ...]:
        return rescan(name, sources)

    def download(request: gr.Request, name: str | None) -> tuple[Any, Any]:
        try:
            paths = export(name, sources, request.session_hash)
        except StudyFileError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return tuple(gr.update(value=str(p), visible=True) for p in paths)  # type: ignore[return-value]

    private = {"api_visibility": "private", **MAPS_EVENT}
    tab.source.input(show, tab.source, tab.outputs, **private)
    for event in (tab.tab.select, tab.refresh.click):
        event(look_again, tab.source, [tab.source, *tab.outputs], **private)
    tab.downloads.export.click(download, tab.source, tab.downloads.outputs, **private)
    wire_api(sources)


def wire_api(sources: Sources) -> None:
    """``/study``: the numbers of one offered study as JSON."""

    def study(source: str = "") -> dict:
        """The numbers of the study named ``source`` (as the Study tab's picker names it;
        empty: the first offered): per-seed rows with mean and std, paired differences with
        study.json's t and p, Table 2, the top-1 errors, the ceiling, the conclusion, and
        ``offered``, the names that can be asked for."""
        try:
            view = load(source, sources)
        except StudyFileError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return study_view.to_json(view) | {"offered": list(offered(sources))}

    gr.api(study, api_name="study", **MAPS_EVENT)


__all__ = ["StudyTab", "build", "draw", "export", "load", "offered", "rescan", "wire"]
