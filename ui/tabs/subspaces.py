"""The Subspaces tab: supplement Figure 1 for one video and caption — frames, words, and the
links between them in one EM subspace and in the full space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.knobs import Knobs
from emcl.explorer.service import Explorer
from ui import pickers, plots
from ui.common import MODEL_EVENT, first_caption
from ui.knob_panel import KnobPanel
from ui.text import SUBSPACE_HELP, grounding_table

AUTO = ("auto: each word in its dominant subspace", "auto")


@dataclass
class SubspacesTab:
    tab: gr.Tab
    video: gr.Dropdown
    caption: gr.Textbox
    button: gr.Button
    selector: gr.Dropdown
    score: gr.Markdown
    subspace_plot: gr.Plot
    full_plot: gr.Plot
    loadings_plot: gr.Plot


def build(explorer: Explorer) -> SubspacesTab:
    ids = [r.video_id for r in explorer.snapshot.records]
    with gr.Tab("Subspaces", id="subspaces") as tab:
        with gr.Row():
            video = pickers.picker(
                explorer, ids[0] if ids else None, label="Video", scale=1, elem_id="emcl-sub-video"
            )
            caption = gr.Textbox(
                value=first_caption(explorer, ids[0]) if ids else "",
                label="Caption",
                scale=3,
                elem_id="emcl-sub-caption",
            )
            button = gr.Button("Draw", variant="primary", scale=0, elem_id="emcl-sub-draw")
        gr.Markdown(
            "Pick a video and type any caption, take the video's own caption, or search "
            "first: the top result and the query land here.",
            elem_classes="emcl-hint",
        )
        selector = gr.Dropdown(
            [AUTO],
            value="auto",
            label="Subspace",
            info="one entry per distinct subspace (its EM columns and width)",
            elem_id="emcl-selector",
        )
        score = gr.Markdown("")
        subspace_plot = gr.Plot(
            plots.message_figure("Pick a video and a caption, then press Draw"),
            label="In the EMCL subspace",
            elem_id="emcl-sub-plot",
        )
        full_plot = gr.Plot(
            label="Same words in the full space (no subspaces)", elem_id="emcl-full-plot"
        )
        loadings_plot = gr.Plot(label="Loadings", elem_id="emcl-heat")
        gr.Markdown(SUBSPACE_HELP, elem_classes="emcl-help")
    return SubspacesTab(
        tab, video, caption, button, selector, score, subspace_plot, full_plot, loadings_plot
    )


def draw(explorer: Explorer, video_id: str, text: str, selection: str, knobs: Knobs) -> tuple:
    """The subspace figure, the full-space figure, the loadings, the score table and the
    selector's choices for one pair."""
    video_id = pickers.resolve(explorer, video_id)
    result = explorer.align(video_id, text, knobs)
    a = result.alignment
    choices = ["auto"] + [f"s{s + 1}" for s in range(a.n_subspaces)]
    selection = selection if selection in choices else "auto"
    chosen = -1 if selection == "auto" else int(selection[1:]) - 1
    frames = explorer.frames_rgb(video_id)
    figures = []
    names = {None: "full space", -1: "each word in its dominant subspace"}
    for label, pick in ((selection, chosen), ("full", None)):
        frame, similarity = a.links(pick)
        score = result.grounding.get(label)
        figures.append(
            plots.alignment_figure(
                frames,
                a.words,
                frame.tolist(),
                similarity.tolist(),
                score.correct if score is not None else None,
                title=f"{video_id} — {names.get(pick, f'subspace {selection}')}",
            )
        )
    loadings = plots.loadings_figure(a.frame_loadings.numpy(), a.word_loadings.numpy(), a.words)
    table = grounding_table(result, selection, explorer.grounding_average(knobs))
    labels = [AUTO] + [
        (f"s{s + 1} · {len(g)} of {knobs.k} EM columns · ~{a.width[s]:.0f} channels", f"s{s + 1}")
        for s, g in enumerate(a.groups)
    ]
    head = (
        f"**{a.n_subspaces} distinct subspace(s)** among K = {knobs.k} "
        f"(effective K {a.effective_k})."
    )
    if result.truncated:
        head += " The caption was truncated to the text encoder's context."
    selector = gr.update(choices=labels, value=selection)
    return figures[0], figures[1], loadings, head + "\n\n" + table, selector


@dataclass
class SubspacesWiring:
    """What other events chain after them: redraw the view when it is showing."""

    redraw: Any  # handler for ``.then``
    inputs: list
    outputs: list


def wire(
    tab: SubspacesTab, panel: KnobPanel, explorer: Explorer, active_tab: gr.State
) -> SubspacesWiring:
    inputs = [tab.video, tab.caption, tab.selector, active_tab, *panel.inputs]
    outputs = [tab.subspace_plot, tab.full_plot, tab.loadings_plot, tab.score, tab.selector]

    def align(video_id: str, text: str, selection: str, tab_name: str, knobs: Knobs) -> tuple:
        return draw(explorer, video_id, text, selection, knobs)

    def align_if_visible(
        video_id: str, text: str, selection: str, tab_name: str, knobs: Knobs
    ) -> tuple:
        known = isinstance(video_id, str) and video_id in explorer.snapshot.position
        if tab_name != "subspaces" or not known or not (text or "").strip():
            return tuple(gr.skip() for _ in outputs)
        return draw(explorer, video_id, text, selection, knobs)

    before = ["video_id", "caption", "selection", "tab"]
    gr.on(
        [tab.button.click, tab.selector.input],
        panel.bind(align, before=before),
        inputs,
        outputs,
        api_name="align",
        trigger_mode="always_last",
        **MODEL_EVENT,
    )
    tab.video.input(
        lambda video_id: (
            first_caption(explorer, video_id)
            if isinstance(video_id, str) and video_id in explorer.snapshot.position
            else gr.skip()
        ),
        tab.video,
        tab.caption,
        api_visibility="private",
    )
    pickers.wire(tab.video, explorer)
    return SubspacesWiring(panel.bind(align_if_visible, before=before), inputs, outputs)
