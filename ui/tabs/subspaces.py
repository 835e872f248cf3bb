"""The Subspaces tab: supplement Figure 1 for one video and caption — frames, words, and the
links between them in one EM subspace and in the full space."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.components.plot import PlotData

from emcl.explorer.cache import LRU
from emcl.explorer.knobs import Knobs
from emcl.explorer.latest import JobState
from emcl.explorer.results import AlignResult
from emcl.explorer.service import Explorer
from ui import pickers, plots
from ui.common import MAPS_EVENT, QUIET, first_caption
from ui.knob_panel import KnobPanel
from ui.text import SUBSPACE_HELP, em_size_line, grounding_table

AUTO = ("auto: each word in its dominant subspace", "auto")
WORD_NAMES = {"tokens": "token states", "alone": "words alone"}  # the split's two encodings
GROUNDING_GROUP = {"concurrency_id": "grounding", "concurrency_limit": 2}  # polls: cheap reads
FIGURE_CACHE = 32  # drawn figure sets kept per explorer
_FIGURES: weakref.WeakKeyDictionary[Explorer, LRU] = weakref.WeakKeyDictionary()
GROUNDING_POLL_S = 1.0  # seconds between two looks at the background grounding
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
    poll: gr.Timer  # active while the test split's grounding is computed in the background


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
        timer = gr.Timer(GROUNDING_POLL_S, active=False)
    return SubspacesTab(
        tab, video, caption, button, selector, score, subspace_plot, full_plot, loadings_plot,
        window, words, timer,
    )  # fmt: skip


def _aligned(
    explorer: Explorer, video_id: str, text: str, knobs: Knobs, window: str, words: str
) -> tuple[str, str, AlignResult]:
    """The resolved video id, its window ("" for a video indexed whole) and the alignment."""
    video_id = pickers.resolve(explorer, video_id)
    moments = explorer.snapshot.base.moments
    if moments is None or not moments.spans_of(explorer.snapshot.position[video_id]):
        window = ""  # a video indexed whole (e.g. sent from the Gallery tab after a search)
    encoding = None if words in (None, "", "best") else words
    return video_id, window, explorer.align(video_id, text, knobs, window, encoding)


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
    selector's choices for one pair (of a long video's ``window``, when given). The test
    split's grounding is never waited for: until it is known, the table says how far its
    background computation is (:func:`score_text`)."""
    video_id, window, result = _aligned(explorer, video_id, text, knobs, window, words)
    a = result.alignment
    choices = ["auto"] + [f"s{s + 1}" for s in range(a.n_subspaces)]
    selection = selection if selection in choices else "auto"
    # β does not enter the links, the similarities or the loadings: a β move finds the
    # figures drawn (and serialised) already.
    key = (explorer.snapshot.version, knobs.mode, video_id, window, result.caption,
           result.words, knobs.em_run_key(), selection)  # fmt: skip
    figures = _figure_cache(explorer).get_or_compute(
        key, lambda: _figures(explorer, video_id, window, result, selection)
    )
    labels = [AUTO] + [
        (f"s{s + 1} · {len(g)} of {knobs.k} EM columns · ~{a.width[s]:.0f} channels", f"s{s + 1}")
        for s, g in enumerate(a.groups)
    ]
    score, _ = score_text(explorer, result, selection, knobs)
    selector = gr.update(choices=labels, value=selection)
    return *figures, score, selector


def _figure_cache(explorer: Explorer) -> LRU:
    cache = _FIGURES.get(explorer)
    if cache is None:
        cache = _FIGURES.setdefault(explorer, LRU(FIGURE_CACHE))
    return cache


def _figures(
    explorer: Explorer, video_id: str, window: str, result: AlignResult, selection: str
) -> tuple[PlotData, PlotData, PlotData]:
    """The subspace, full-space and loadings figures of one alignment, serialised as
    Gradio sends them."""
    a = result.alignment
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
    figures.append(
        plots.loadings_figure(a.frame_loadings.numpy(), a.word_loadings.numpy(), a.words)
    )
    return tuple(PlotData(type="plotly", plot=f.to_json()) for f in figures)  # type: ignore[return-value]


def poll(
    explorer: Explorer,
    video_id: str,
    text: str,
    selection: str,
    knobs: Knobs,
    window: str = "",
    words: str = "best",
) -> tuple[str, bool]:
    """The score table as :func:`draw` writes it now, and whether to poll again (the test
    split's grounding is still being computed)."""
    _, _, result = _aligned(explorer, video_id, text, knobs, window, words)
    choices = ["auto"] + [f"s{s + 1}" for s in range(result.alignment.n_subspaces)]
    return score_text(explorer, result, selection if selection in choices else "auto", knobs)


def score_text(
    explorer: Explorer, result: AlignResult, selection: str, knobs: Knobs
) -> tuple[str, bool]:
    """The EM line and the grounding table of one pair, and whether the test split's grounding
    is still being computed (in the background: its cells show a progress line meanwhile)."""
    a = result.alignment
    head = (
        f"**{a.n_subspaces} distinct subspace(s)** among K = {knobs.k} "
        f"(effective K {a.effective_k}). "
        + em_size_line(a.effective_k, a.rec_ratio, "this pair's EM run")
    )
    if result.truncated:
        head += " The caption was truncated to the text encoder's context."
    states = {e: explorer.grounding_status(knobs, words=e) for e in WORD_NAMES}
    pending = {e: s for e, s in states.items() if isinstance(s, JobState)}
    done = {e: s for e, s in states.items() if not isinstance(s, JobState)}
    text = head + "\n\n" + grounding_table(result, selection, done)
    waiting = {e: s for e, s in pending.items() if s.error is None}
    if result.grounding.get("auto") is not None and pending:
        text += "\n\n" + _progress_line(pending)
    return text, bool(waiting)


def _progress_line(pending: dict[str, JobState]) -> str:
    parts = [
        f"{WORD_NAMES[e]}: failed ({s.error})" if s.error else f"{WORD_NAMES[e]} {s.fraction:.0%}"
        for e, s in pending.items()
    ]
    return (
        "_Test-split grounding at these knobs: computing in the background ("
        + ", ".join(parts)
        + "); the table fills in when it is ready._"
    )


@dataclass
class SubspacesWiring:
    """What other events chain after them: redraw the view when it is showing (the redraw
    also starts the grounding poll)."""

    redraw: Any  # handler for ``.then``
    inputs: list
    outputs: list


@dataclass
class _Handlers:
    """The tab's handlers over one explorer: the draw (the ``/align`` API), the redraw when the
    tab is showing (which also starts the grounding poll) and the poll itself."""

    explorer: Explorer

    def visible(self, video_id: str, text: str, tab_name: str) -> bool:
        known = isinstance(video_id, str) and video_id in self.explorer.snapshot.position
        return tab_name == "subspaces" and known and bool((text or "").strip())

    def align(
        self, video_id: str, text: str, selection: str, window: str, words: str,
        tab_name: str, knobs: Knobs,
    ) -> tuple:  # fmt: skip
        explorer = self.explorer
        return explorer.drawing.run(
            lambda: draw(explorer, video_id, text, selection, knobs, window, words)
        )

    def align_if_visible(
        self, video_id: str, text: str, selection: str, window: str, words: str,
        tab_name: str, knobs: Knobs,
    ) -> tuple:  # fmt: skip
        if not self.visible(video_id, text, tab_name):
            return tuple(gr.skip() for _ in range(6))  # the five outputs and the poll
        drawn = self.align(video_id, text, selection, window, words, tab_name, knobs)
        return *drawn, gr.Timer(active=True)

    def poll_if_visible(
        self, video_id: str, text: str, selection: str, window: str, words: str,
        tab_name: str, knobs: Knobs,
    ) -> tuple:  # fmt: skip
        if not self.visible(video_id, text, tab_name):
            return gr.skip(), gr.Timer(active=False)
        score, again = poll(self.explorer, video_id, text, selection, knobs, window, words)
        return score, gr.Timer(active=again)


def wire(
    tab: SubspacesTab, panel: KnobPanel, explorer: Explorer, active_tab: gr.State
) -> SubspacesWiring:
    inputs = [
        tab.video, tab.caption, tab.selector, tab.window, tab.words, active_tab, *panel.inputs,
    ]  # fmt: skip
    outputs = [tab.subspace_plot, tab.full_plot, tab.loadings_plot, tab.score, tab.selector]
    handlers = _Handlers(explorer)
    before = ["video_id", "caption", "selection", "window", "words", "tab"]
    gr.on(
        [tab.button.click, tab.selector.input, tab.words.input],
        panel.bind(handlers.align, before=before),
        inputs,
        outputs,
        api_name="align",
        trigger_mode="always_last",
        **MAPS_EVENT,
    ).then(lambda: gr.Timer(active=True), None, tab.poll, queue=False, api_visibility="private")
    # The poll only reads what the background computed: its own group, never behind a map.
    tab.poll.tick(
        panel.bind(handlers.poll_if_visible, before=before),
        inputs,
        [tab.score, tab.poll],
        **QUIET,
        **GROUNDING_GROUP,
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
    return SubspacesWiring(
        panel.bind(handlers.align_if_visible, before=before), inputs, [*outputs, tab.poll]
    )
