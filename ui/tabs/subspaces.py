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
from ui.text import SUBSPACE_HELP, em_size_line, grounding_table

AUTO = ("auto: each word in its dominant subspace", "auto")
WORD_CHOICES = [
    ("best on the test split", "best"),
    ("token states", "tokens"),
    ("each word alone", "alone"),
]


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
    window: gr.Textbox  # a long video's window ("60-70", seconds); empty: the whole video
    words: gr.Radio  # the word encoding: "best", "tokens", "alone"


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
            window = gr.Textbox(
                label="Window (s)",
                placeholder="whole video",
                info="long videos: the matched window, e.g. 60-70",
                scale=1,
                elem_id="emcl-sub-window",
            )
            button = gr.Button("Draw", variant="primary", scale=0, elem_id="emcl-sub-draw")
        gr.Markdown(
            "Pick a video and type any caption, take the video's own caption, or search "
            "first: the top result and the query land here.",
            elem_classes="emcl-hint",
        )
        with gr.Row():
            selector = gr.Dropdown(
                [AUTO],
                value="auto",
                label="Subspace",
                info="one entry per distinct subspace (its EM columns and width)",
                elem_id="emcl-selector",
                scale=2,
            )
            words = gr.Radio(
                WORD_CHOICES,
                value="best",
                label="Word features",
                info="token states, or each word encoded alone through the text tower",
                elem_id="emcl-sub-words",
                scale=2,
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
        tab, video, caption, button, selector, score, subspace_plot, full_plot, loadings_plot,
        window, words,
    )  # fmt: skip


def draw(
    explorer: Explorer,
    video_id: str,
    text: str,
    selection: str,
    knobs: Knobs,
    window: str = "",
    words: str = "best",
) -> tuple:
    """The subspace figure, the full-space figure, the loadings, the score table and the
    selector's choices for one pair (of a long video's ``window``, when given)."""
    video_id = pickers.resolve(explorer, video_id)
    moments = explorer.snapshot.base.moments
    if moments is None or not moments.spans_of(explorer.snapshot.position[video_id]):
        window = ""  # a video indexed whole (e.g. sent from the Gallery tab after a search)
    encoding = None if words in (None, "", "best") else words
    result = explorer.align(video_id, text, knobs, window, encoding)
    a = result.alignment
    choices = ["auto"] + [f"s{s + 1}" for s in range(a.n_subspaces)]
    selection = selection if selection in choices else "auto"
    chosen = -1 if selection == "auto" else int(selection[1:]) - 1
    frames = explorer.frames_rgb(video_id, span=window)
    where = f" [{window.strip()}]" if (window or "").strip() else ""
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
                title=f"{video_id}{where} — {names.get(pick, f'subspace {selection}')}",
            )
        )
    loadings = plots.loadings_figure(a.frame_loadings.numpy(), a.word_loadings.numpy(), a.words)
    averages = {e: explorer.grounding_average(knobs, words=e) for e in ("tokens", "alone")}
    table = grounding_table(result, selection, averages)
    labels = [AUTO] + [
        (f"s{s + 1} · {len(g)} of {knobs.k} EM columns · ~{a.width[s]:.0f} channels", f"s{s + 1}")
        for s, g in enumerate(a.groups)
    ]
    head = (
        f"**{a.n_subspaces} distinct subspace(s)** among K = {knobs.k} "
        f"(effective K {a.effective_k}). "
        + em_size_line(a.effective_k, a.rec_ratio, "this pair's EM run")
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
    inputs = [
        tab.video, tab.caption, tab.selector, tab.window, tab.words, active_tab, *panel.inputs,
    ]  # fmt: skip
    outputs = [tab.subspace_plot, tab.full_plot, tab.loadings_plot, tab.score, tab.selector]

    def align(
        video_id: str,
        text: str,
        selection: str,
        window: str,
        words: str,
        tab_name: str,
        knobs: Knobs,
    ) -> tuple:
        return draw(explorer, video_id, text, selection, knobs, window, words)

    def align_if_visible(
        video_id: str,
        text: str,
        selection: str,
        window: str,
        words: str,
        tab_name: str,
        knobs: Knobs,
    ) -> tuple:
        known = isinstance(video_id, str) and video_id in explorer.snapshot.position
        if tab_name != "subspaces" or not known or not (text or "").strip():
            return tuple(gr.skip() for _ in outputs)
        return draw(explorer, video_id, text, selection, knobs, window, words)

    before = ["video_id", "caption", "selection", "window", "words", "tab"]
    gr.on(
        [tab.button.click, tab.selector.input, tab.words.input],
        panel.bind(align, before=before),
        inputs,
        outputs,
        api_name="align",
        trigger_mode="always_last",
        **MODEL_EVENT,
    )
    tab.video.input(
        lambda video_id: (
            (first_caption(explorer, video_id), "")  # another video: its caption, whole
            if isinstance(video_id, str) and video_id in explorer.snapshot.position
            else (gr.skip(), gr.skip())
        ),
        tab.video,
        [tab.caption, tab.window],
        api_visibility="private",
    )
    pickers.wire(tab.video, explorer)
    return SubspacesWiring(panel.bind(align_if_visible, before=before), inputs, outputs)
