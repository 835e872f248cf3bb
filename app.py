"""EMCL Explorer: the Gradio app (layout and wiring only; the work is in emcl/explorer.py).

    python app.py                       # the bundled demo world and demo checkpoints
    python app.py --data DIR [--split test] [--checkpoint DIR] [--base-checkpoint DIR]
    python app.py --data DIR --model ViT-B-32 --pretrained /path/open_clip_model.safetensors

Serves on 127.0.0.1:7860 unless --host/--port say otherwise; never creates a share link.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

import gradio as gr
import torch

from emcl import plots
from emcl.explorer import (
    CONTEXTS,
    INITS,
    LIMITS,
    MAX_UPLOADS,
    SWEEPS,
    UPLOAD_MAX_BYTES,
    Explorer,
    KnobError,
    Knobs,
    Setup,
    load_explorer,
)
from emcl.subspace import GROUP_TOL
from emcl.video import VIDEO_EXTENSIONS, VideoDecodeError

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
DEFAULT_BASE = ROOT / "checkpoints" / "demo-base"
DEFAULT_EMCL = ROOT / "checkpoints" / "demo-emcl"
MAX_FILE_SIZE = UPLOAD_MAX_BYTES  # per uploaded file, enforced by Gradio (413) and the explorer
QUEUE_SIZE = 32
CONCURRENCY = 2  # model-touching events at once (torch already uses every core per request)
MODEL = "model"  # the one concurrency id shared by every event that touches a model
UPLOAD_LABEL = f"Add videos (≤ {MAX_UPLOADS} files, {MAX_FILE_SIZE >> 20} MiB each)"
PROGRESS = gr.Progress()  # Gradio passes each call its own tracker in place of this default

# One line per knob beside the widget; KNOB_GUIDE below says it in full.
HELP = {
    "mode": "joint: EMCL checkpoint + EM · inference: base checkpoint + EM",
    "beta": "weight of the reconstruction added back (0: off)",
    "k": "number of subspaces",
    "iters": "E/M iterations (0: off)",
    "lam": "E-step temperature λ, log scale",
    "init": "initial bases",
    "context": "which rows share one EM run",
    "shortlist": "base candidates the EM re-ranks",
    "isoftmax": "QB-Norm with the captions as query bank",
    "temp": "inverted-softmax temperature τ, log scale",
    "top_k": "results per column",
}

KNOB_GUIDE = """
- **EMCL mode** — *joint*: the checkpoint trained jointly with the EMCL layer, plus EM at
  inference. *inference*: the base checkpoint with EM at inference only (β = 0 reproduces the
  Base column exactly).
- **β** — the output is `x + β · μzᵀ`: β weighs the low-rank reconstruction; 0 turns EMCL off.
- **K** — number of subspaces (bases μ). *Effective K* (shown under the slider) is the numerical
  rank of the responsibilities z (singular values above 1e-3 of the largest): the reference and
  prior initialisations collapse to about 2 whatever K is (PAPER.md §1.5).
- **iterations** — E/M steps T; 0 leaves the features unchanged.
- **λ** — E-step softmax temperature, `z = softmax(Xᵀμ / λ)`. On unit-norm features λ = 1 is
  nearly uniform; distinct subspaces need a sharp λ (≤ 0.03) and the *data* init (§1.5b).
- **init** — *prior*: the EMCL checkpoint's trained momentum prior (exists for its trained K
  only); *reference*: the authors' ±1 sign prior; *data*: K random feature columns of the input
  (breaks the symmetry). **seed** seeds reference and data.
- **EM context** — which rows share one EM run: *shortlist* (the query and its top-M base
  candidates; the rest keep base order), *gallery* (the query and every video), *block* (the
  reference protocol: the query against blocks of 64 videos). Metrics always use 64 × 64
  caption × video blocks (*gallery*: one run over everything). Scores depend on the context.
- **inverted softmax** — QB-Norm / dual softmax: each score times a softmax over queries at
  temperature τ; search uses the gallery's captions as the query bank (transductive).
- **top-k** — results shown per column; the ground truth's rank is shown even outside it.
"""

SUBSPACE_HELP = f"""
**How this view is made** (our construction; the paper does not say how its Figure 1 was drawn).
The video's 12 frame features (after temporal aggregation) and the caption's word features
(BPE pieces averaged, punctuation dropped) are L2-normalised and stacked, `X = [frames; words]`.
One EM run with the knobs on the left (K, iterations, λ, init, seed) gives responsibilities
`z` [D × K]: subspace k weights feature channel j by `y_k[j] = z[j,k] / max_j z[j,k]`. Columns
whose weight profiles agree within {GROUP_TOL:g} are one *distinct* subspace (the selector).
In subspace k, frame i and word j have similarity `cos(f_i ⊙ y_k, w_j ⊙ y_k)`; each word is
linked to its closest frame and the line is labelled with that similarity. *Auto* links each
word in its dominant subspace (largest `Σ_j y_k[j] x_j² / Σ_j y_k[j]`, the heatmaps' shares).
The lower figure links the same words in the full space, `cos(f_i, w_j)`.
**Grounding** (demo world): the share of links whose frame shows the concept the word names
(`frame_concepts.json`, `lexicon.json`); words naming no concept are not scored; *chance* is
the expected score of a random frame of the same video.
"""

# Plotly clicks on the embedding map -> the hidden "picked item" textbox (its change event).
MAP_CLICK_JS = """
() => {
  const bind = () => {
    document.querySelectorAll('#emcl-map .js-plotly-plot').forEach((plot) => {
      if (plot.__emclBound || typeof plot.on !== 'function') return;
      plot.__emclBound = true;
      plot.on('plotly_click', (event) => {
        const point = event && event.points && event.points[0];
        const box = document.querySelector('#emcl-map-pick textarea, #emcl-map-pick input');
        if (!point || point.customdata === undefined || !box) return;
        box.value = String(point.customdata) + '|' + Date.now();  // a new value each click
        box.dispatchEvent(new Event('input', { bubbles: true }));
      });
    });
  };
  new MutationObserver(bind).observe(document.body, { childList: true, subtree: true });
}
"""


# --------------------------------------------------------------------------------------------
# Helpers shared by the handlers
# --------------------------------------------------------------------------------------------
def user_errors(fn: Callable) -> Callable:
    """Run a handler under inference mode; refusals (bad knobs, unknown ids, undecodable
    files) become a gr.Error with the reason. The signature stays visible to Gradio."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            with torch.inference_mode():
                return fn(*args, **kwargs)
        except (KnobError, VideoDecodeError) as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapped


def knobs_from(
    mode: str,
    beta: float,
    k: float,
    iters: float,
    log_lam: float,
    init: str,
    seed: float,
    context: str,
    shortlist: float,
    isoftmax: bool,
    log_temp: float,
    top_k: float,
) -> Knobs:
    """The UI's widget values as validated knobs (λ and τ come from log10 sliders)."""
    for name, value in (("log₁₀ λ", log_lam), ("log₁₀ τ", log_temp)):
        if not isinstance(value, int | float) or not -10 <= value <= 10:  # NaN fails too
            raise KnobError(f"{name} must be a finite number in [-10, 10], got {value!r}")
    return Knobs(
        mode=mode,
        beta=beta,
        k=k,
        iters=iters,
        lam=float(f"{10**log_lam:.4g}"),
        init=init,
        seed=seed,
        context=context,
        shortlist=shortlist,
        isoftmax=bool(isoftmax),
        isoftmax_temp=float(f"{10**log_temp:.4g}"),
        top_k=top_k,
    )


def video_url(path: Path) -> str:
    """Gradio's file route for a file under ``allowed_paths`` (relative to the page)."""
    return "gradio_api/file=" + quote(str(path))


# --------------------------------------------------------------------------------------------
# The UI
# --------------------------------------------------------------------------------------------
def build_demo(explorer: Explorer, title: str = "EMCL Explorer") -> gr.Blocks:
    defaults = explorer.defaults()
    modes = ["joint", "inference"] if explorer.has_joint else ["inference"]
    inits = list(INITS) if explorer.has_joint else ["reference", "data"]
    snap = explorer.snapshot
    ids = [r.video_id for r in snap.records]

    def url(video_id: str) -> str:
        return video_url(explorer.video_path(video_id))

    def caption(video_id: str) -> str:
        record = explorer.record(video_id)
        return record.captions[0] if record.captions else ""

    # Uploaded files in Gradio's cache are copied into the gallery; drop them after an hour.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        active_tab = gr.State("search")
        with gr.Row(elem_classes="emcl-header"):
            gr.Markdown(
                f"## {title}\nSearch videos by text and compare the **base** ranking with "
                "**EMCL** (Expectation-Maximization Contrastive Learning) side by side; move "
                "the knobs and watch rankings, metrics, subspaces and the embedding map change.",
            )
            info = gr.Markdown(summary(explorer), elem_classes="emcl-info")
        with gr.Row(equal_height=False):
            # ---- knobs ----------------------------------------------------------------------
            with gr.Column(scale=1, min_width=290, elem_classes="emcl-knobs"):
                gr.Markdown("### Knobs")
                mode = gr.Radio(modes, value=defaults.mode, label="EMCL mode", info=HELP["mode"])
                beta = gr.Slider(
                    *LIMITS["beta"], value=defaults.beta, step=0.1, label="β", info=HELP["beta"]
                )
                k = gr.Slider(*LIMITS["k"], value=defaults.k, step=1, label="K", info=HELP["k"])
                effective = gr.Markdown("effective K: –", elem_classes="emcl-effk")
                iters = gr.Slider(
                    *LIMITS["iters"],
                    value=defaults.iters,
                    step=1,
                    label="iterations",
                    info=HELP["iters"],
                )
                log_lam = gr.Slider(
                    math.log10(LIMITS["lam"][0]),
                    math.log10(LIMITS["lam"][1]),
                    value=math.log10(defaults.lam),
                    step=0.05,
                    label="log₁₀ λ",
                    info=HELP["lam"],
                )
                lam_value = gr.Markdown(f"λ = {defaults.lam:g}", elem_classes="emcl-effk")
                with gr.Row():
                    init = gr.Radio(
                        inits, value=defaults.init, label="init", info=HELP["init"], scale=3
                    )
                    seed = gr.Number(
                        value=defaults.seed,
                        precision=0,
                        label="seed",
                        minimum=LIMITS["seed"][0],
                        maximum=LIMITS["seed"][1],
                        scale=1,
                        min_width=80,
                    )
                context = gr.Radio(
                    list(CONTEXTS), value=defaults.context, label="EM context", info=HELP["context"]
                )
                shortlist = gr.Slider(
                    *LIMITS["shortlist"],
                    value=defaults.shortlist,
                    step=1,
                    label="shortlist size M",
                    info=HELP["shortlist"],
                )
                isoftmax = gr.Checkbox(
                    value=defaults.isoftmax, label="inverted softmax", info=HELP["isoftmax"]
                )
                log_temp = gr.Slider(
                    math.log10(LIMITS["isoftmax_temp"][0]),
                    math.log10(LIMITS["isoftmax_temp"][1]),
                    value=math.log10(defaults.isoftmax_temp),
                    step=0.05,
                    label="log₁₀ τ",
                    info=HELP["temp"],
                )
                top_k = gr.Slider(
                    *LIMITS["top_k"],
                    value=defaults.top_k,
                    step=1,
                    label="top-k",
                    info=HELP["top_k"],
                )
                reset = gr.Button("Reset to paper defaults", variant="secondary")
                with gr.Accordion("What the knobs mean", open=False):
                    gr.Markdown(KNOB_GUIDE, elem_classes="emcl-hint")
            knob_inputs = [
                mode,
                beta,
                k,
                iters,
                log_lam,
                init,
                seed,
                context,
                shortlist,
                isoftmax,
                log_temp,
                top_k,
            ]

            # ---- tabs -----------------------------------------------------------------------
            with gr.Column(scale=4), gr.Tabs():
                with gr.Tab("Search", id="search") as search_tab:
                    with gr.Row():
                        query = gr.Textbox(
                            label="Query",
                            placeholder="e.g. a red circle moves to the left",
                            scale=5,
                            lines=1,
                            max_lines=3,
                            elem_id="emcl-query",
                        )
                        search_btn = gr.Button(
                            "Search", variant="primary", scale=1, elem_id="emcl-search"
                        )
                    examples = explorer.example_queries(8)
                    if examples:
                        gr.Examples(
                            [[e] for e in examples],
                            inputs=[query],
                            label="Example queries (test captions)",
                        )
                    status = gr.Markdown("", elem_id="emcl-status")
                    with gr.Row(equal_height=False):
                        with gr.Column():
                            gr.Markdown("#### Base", elem_classes="emcl-col-title")
                            base_col = gr.HTML(
                                plots.results_html([], 1, url, caption, "base"),
                                elem_id="emcl-base",
                            )
                        with gr.Column():
                            gr.Markdown("#### EMCL", elem_classes="emcl-col-title")
                            emcl_col = gr.HTML(
                                plots.results_html([], 1, url, caption, "emcl"),
                                elem_id="emcl-emcl",
                            )
                with gr.Tab("Subspaces", id="subspaces") as subspace_tab:
                    with gr.Row():
                        sub_video = gr.Dropdown(
                            ids,
                            value=ids[0] if ids else None,
                            label="Video",
                            scale=1,
                            elem_id="emcl-sub-video",
                        )
                        sub_caption = gr.Textbox(
                            value=caption(ids[0]) if ids else "",
                            label="Caption",
                            scale=3,
                            elem_id="emcl-sub-caption",
                        )
                        sub_btn = gr.Button(
                            "Draw", variant="primary", scale=0, elem_id="emcl-sub-draw"
                        )
                    gr.Markdown(
                        "Pick a video and type any caption, take the video's own "
                        "caption, or search first: the top result and the query land "
                        "here.",
                        elem_classes="emcl-hint",
                    )
                    selector = gr.Dropdown(
                        [("auto: each word in its dominant subspace", "auto")],
                        value="auto",
                        label="Subspace",
                        info="one entry per distinct subspace (its EM columns and width)",
                        elem_id="emcl-selector",
                    )
                    sub_score = gr.Markdown("")
                    sub_plot = gr.Plot(
                        plots.message_figure("Pick a video and a caption, then press Draw"),
                        label="In the EMCL subspace",
                        elem_id="emcl-sub-plot",
                    )
                    full_plot = gr.Plot(
                        label="Same words in the full space (no subspaces)",
                        elem_id="emcl-full-plot",
                    )
                    heat_plot = gr.Plot(label="Loadings", elem_id="emcl-heat")
                    gr.Markdown(SUBSPACE_HELP, elem_classes="emcl-help")
                with gr.Tab("Metrics", id="metrics") as metrics_tab:
                    metrics_note = gr.Markdown("")
                    headers = ["model"] + [
                        f"{d} {m}"
                        for d in ("t2v", "v2t")
                        for m in ("R@1", "R@5", "R@10", "MdR", "MnR")
                    ]
                    metrics_table = gr.Dataframe(
                        headers=headers, interactive=False, elem_id="emcl-metrics", wrap=True
                    )
                    gr.Markdown(
                        "R@K in %, MdR/MnR are 1-based ranks (lower is better). "
                        "Recomputed on every knob change.",
                        elem_classes="emcl-hint",
                    )
                    with gr.Row():
                        sweep_name = gr.Radio(
                            list(SWEEPS),
                            value="beta",
                            label="Sweep",
                            info="metrics over preset values of one knob, the others as set",
                            scale=3,
                        )
                        sweep_btn = gr.Button(
                            "Run sweep", variant="primary", scale=1, elem_id="emcl-sweep"
                        )
                    sweep_plot = gr.Plot(
                        plots.message_figure("Pick a knob and press Run sweep"),
                        label="Sweep",
                        elem_id="emcl-sweep-plot",
                    )
                    gr.Markdown(
                        "#### As trained: the EMCL-Net protocol\nThe demo models are trained and "
                        "evaluated with text-conditioned frame pooling and one EM run per block "
                        "of 32 captions × 32 videos (PAPER.md §2.1), too slow to follow every "
                        "knob: computed on demand with the current knobs (3–10 s on 2 CPU "
                        "cores).",
                        elem_classes="emcl-hint",
                    )
                    with gr.Row():
                        reference_btn = gr.Button(
                            "Compute EMCL-Net protocol rows", scale=1, elem_id="emcl-reference"
                        )
                        reference_note = gr.Markdown("", elem_classes="emcl-hint")
                    reference_table = gr.Dataframe(
                        headers=headers,
                        interactive=False,
                        elem_id="emcl-reference-table",
                        wrap=True,
                    )
                with gr.Tab("Embedding map", id="map") as map_tab:
                    with gr.Row():
                        map_btn = gr.Button(
                            "Compute map", variant="primary", scale=1, elem_id="emcl-map-btn"
                        )
                        map_note = gr.Markdown(
                            "UMAP of the active model's video and caption "
                            "embeddings before and after EMCL (one EM run "
                            "over all of them). Click a point to see it."
                        )
                    map_plot = gr.Plot(
                        plots.message_figure("Press Compute map"),
                        label="Embedding map",
                        elem_id="emcl-map",
                    )
                    map_pick = gr.Textbox(visible="hidden", elem_id="emcl-map-pick")
                    map_item = gr.HTML("", elem_id="emcl-map-item")
                with gr.Tab("Gallery", id="gallery") as gallery_tab:
                    gallery_md = gr.Markdown(gallery_summary(explorer))
                    gallery_table = gr.Dataframe(
                        explorer.gallery_rows(),
                        headers=["video", "split", "captions", "file"],
                        interactive=False,
                        max_height=320,
                        show_search="search",
                    )
                    skipped_table = gr.Dataframe(
                        explorer.skipped_rows(),
                        headers=["video", "reason", "message", "file"],
                        interactive=False,
                        max_height=200,
                        label="Skipped files",
                    )
                    with gr.Row():
                        uploads = gr.File(
                            file_count="multiple",
                            file_types=list(VIDEO_EXTENSIONS),
                            label=UPLOAD_LABEL,
                            scale=2,
                        )
                        with gr.Column(scale=1):
                            upload_caption = gr.Textbox(
                                label="Caption for the new videos (optional)"
                            )
                            upload_btn = gr.Button("Add to gallery", variant="primary")
                    upload_report = gr.Markdown("")

        # ---- handlers ----------------------------------------------------------------------
        def columns(result: Any) -> tuple[str, str, str, str]:
            top = result.knobs.top_k
            ranks = result.target_rank
            parts = [
                f"EMCL **{result.knobs.mode}** ({knob_summary(result.knobs)})",
                f"EM context **{result.context}** ({result.em_rows} rows per EM run)",
                f"effective K **{result.effective_k}**",
                f"{result.ms:.1f} ms",
            ]
            if result.targets:
                parts.append(
                    f"ground truth {', '.join(result.targets)}: base **#{ranks['base']}**, "
                    f"EMCL **#{ranks['emcl']}**"
                )
            notes = "".join(f"\n\n> {n}" for n in result.notices)
            return (
                plots.results_html(result.base, top, url, caption, "base"),
                plots.results_html(result.emcl, top, url, caption, "emcl"),
                " · ".join(parts) + notes,
                f"effective K: **{result.effective_k}** (search EM run)",
            )

        @user_errors
        def search(q: str, *values: Any) -> tuple:
            knobs = knobs_from(*values)
            result = explorer.rank(q, knobs)
            # The ground truth (or the top EMCL hit) and the query go to the Subspaces tab.
            top = result.targets[0] if result.targets else result.emcl[0].video_id
            return (*columns(result), gr.update(value=top), gr.update(value=result.query))

        @user_errors
        def metrics(*values: Any) -> tuple:
            knobs = knobs_from(*values)
            result = explorer.metrics(knobs)
            return result.table(), metrics_caption(result, knobs), effective_k_line(result)

        @user_errors
        def reference_metrics(*values: Any, progress: gr.Progress = PROGRESS) -> tuple:
            knobs = knobs_from(*values)
            result = explorer.metrics(knobs, "emclnet", lambda f, m: progress(f, desc=m))
            return result.table(), metrics_caption(result, knobs)

        @user_errors
        def refresh(q: str, *values: Any) -> tuple:
            """Knob change: both columns (if there is a query) and the metrics."""
            table, note, effk = metrics(*values)
            if not isinstance(q, str) or not q.strip():
                return gr.skip(), gr.skip(), gr.skip(), table, note, effk
            base_html, emcl_html, line, effk = columns(explorer.rank(q, knobs_from(*values)))
            return base_html, emcl_html, line, table, note, effk

        @user_errors
        def align(video_id: str, text: str, selection: str, tab: str, *values: Any) -> tuple:
            knobs = knobs_from(*values)
            result = explorer.align(video_id, text, knobs)
            a = result.alignment
            choices = ["auto"] + [f"s{s + 1}" for s in range(a.n_subspaces)]
            selection = selection if selection in choices else "auto"
            chosen = -1 if selection == "auto" else int(selection[1:]) - 1
            frames = explorer.frames_rgb(video_id)
            average = explorer.grounding_average(knobs)
            figures = []
            for label, pick in ((selection, chosen), ("full", None)):
                frame, sim = a.links(pick)
                score = result.grounding.get(label)
                names = {None: "full space", -1: "each word in its dominant subspace"}
                name = names.get(pick, f"subspace {selection}")
                figures.append(
                    plots.alignment_figure(
                        frames,
                        a.words,
                        frame.tolist(),
                        sim.tolist(),
                        score.correct if score is not None else None,
                        title=f"{video_id} — {name}",
                    )
                )
            heat = plots.loadings_figure(a.frame_loadings.numpy(), a.word_loadings.numpy(), a.words)
            table = grounding_table(result, selection, average)
            labels = [("auto: each word in its dominant subspace", "auto")] + [
                (
                    f"s{s + 1} · {len(g)} of {knobs.k} EM columns · ~{a.width[s]:.0f} channels",
                    f"s{s + 1}",
                )
                for s, g in enumerate(a.groups)
            ]
            head = (
                f"**{a.n_subspaces} distinct subspace(s)** among K = {knobs.k} "
                f"(effective K {a.effective_k})."
            )
            if result.truncated:
                head += " The caption was truncated to the text encoder's context."
            return (
                figures[0],
                figures[1],
                heat,
                head + "\n\n" + table,
                gr.update(choices=labels, value=selection),
            )

        def align_if_visible(video_id: str, text: str, selection: str, tab: str, *values: Any):
            if tab != "subspaces" or not video_id or not (text or "").strip():
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return align(video_id, text, selection, tab, *values)

        @user_errors
        def pick_video(video_id: str) -> str:
            return caption(video_id)

        @user_errors
        def sweep(name: str, *values: Any, progress: gr.Progress = PROGRESS) -> Any:
            knobs = knobs_from(*values)
            result = explorer.sweep(knobs, name, lambda f, m: progress(f, desc=m))
            return plots.sweep_figure(result.name, result.values, result.series, result.reference)

        @user_errors
        def embedding_map(*values: Any, progress: gr.Progress = PROGRESS) -> tuple:
            knobs = knobs_from(*values)
            progress(0.0, desc="EM and projection (the first UMAP run compiles: ~30 s)")
            m = explorer.embedding_map(knobs, lambda f, msg: progress(f, desc=msg))
            figure = plots.map_figure(
                m.coords_before,
                m.coords_after,
                m.modality,
                m.labels,
                m.item_ids,
                m.gap_before,
                m.gap_after,
                m.method,
            )
            note = (
                f"**Modality gap** (distance between the video and caption centroids of the "
                f"L2-normalised embeddings): **{m.gap_before:.3f}** before → "
                f"**{m.gap_after:.3f}** after EMCL · {m.method.upper()} · {m.note} · "
                f"mode {knobs.mode}. Click a point to see it."
            )
            return figure, note

        @user_errors
        def show_item(item_id: str) -> str:
            if not item_id:
                return ""
            video_id, text, kind = explorer.map_item(item_id.split("|")[0])
            lines = [f"caption: {text}"] if text else [f"caption: {caption(video_id)}"]
            lines.append(f"split: {explorer.record(video_id).split}")
            title = f"{'caption of ' if kind == 'text' else ''}{video_id}"
            return plots.video_html(url(video_id), title, lines)

        @user_errors
        def add_videos(files: list | None, text: str, progress: gr.Progress = PROGRESS):
            paths = [getattr(f, "name", f) for f in (files or [])]
            added, refused = explorer.add_uploads(
                paths, text or "", lambda f, m: progress(f, desc=m)
            )
            lines = [f"Added {len(added)} video(s): {', '.join(added) or '—'}."]
            lines += [f"- refused {r['file']}: {r['reason']}" for r in refused]
            ids_now = [r.video_id for r in explorer.snapshot.records]
            return (
                "\n".join(lines),
                explorer.gallery_rows(),
                explorer.skipped_rows(),
                gallery_summary(explorer),
                summary(explorer),
                gr.update(choices=ids_now),
                None,
            )

        def reset_knobs(current_mode: str) -> tuple:
            d = explorer.defaults(current_mode)
            return (
                d.mode,
                d.beta,
                d.k,
                d.iters,
                math.log10(d.lam),
                d.init,
                d.seed,
                d.context,
                d.shortlist,
                d.isoftmax,
                math.log10(d.isoftmax_temp),
                d.top_k,
            )

        def snap_k(choice: str, current_k: float) -> Any:
            trained = explorer.trained
            if choice == "prior" and trained is not None:
                return trained.k
            return current_k

        # ---- wiring ------------------------------------------------------------------------
        model = {"concurrency_id": MODEL, "concurrency_limit": CONCURRENCY}
        search_outputs = [base_col, emcl_col, status, effective, sub_video, sub_caption]
        refresh_outputs = [base_col, emcl_col, status, metrics_table, metrics_note, effective]
        align_inputs = [sub_video, sub_caption, selector, active_tab, *knob_inputs]
        align_outputs = [sub_plot, full_plot, heat_plot, sub_score, selector]
        gr.on(
            [search_btn.click, query.submit],
            search,
            [query, *knob_inputs],
            search_outputs,
            api_name="search",
            trigger_mode="always_last",
            **model,
        )
        # A knob the user moved: columns + metrics, then the subspace view if it is showing.
        # Sliders fire on release and the rest on user input only (not when Reset sets them),
        # and every listener keeps just the last pending call: no storm of queued re-ranks.
        knob_events = [s.release for s in (beta, k, iters, log_lam, shortlist, log_temp, top_k)]
        knob_events += [mode.input, context.input, isoftmax.input, seed.submit, seed.blur]
        refresh_args = ([query, *knob_inputs], refresh_outputs)
        quiet = {"api_visibility": "private", "trigger_mode": "always_last", **model}
        refreshes = [trigger(refresh, *refresh_args, **quiet) for trigger in knob_events]
        # init 'prior' exists for the trained K only: set K first, then refresh.
        init_event = init.input(snap_k, [init, k], k, api_visibility="private", queue=False)
        refreshes.append(init_event.then(refresh, *refresh_args, **quiet))
        reset_event = reset.click(reset_knobs, mode, knob_inputs, api_name="defaults")
        refreshes.append(reset_event.then(refresh, *refresh_args, **quiet))
        for event in refreshes:
            event.then(align_if_visible, align_inputs, align_outputs, **quiet)
        log_lam.change(
            lambda v: f"λ = {10**v:.4g}",
            log_lam,
            lam_value,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
        demo.load(
            metrics,
            knob_inputs,
            [metrics_table, metrics_note, effective],
            api_name="metrics",
            **model,
        )
        gr.on(
            [sub_btn.click, selector.input],
            align,
            align_inputs,
            align_outputs,
            api_name="align",
            trigger_mode="always_last",
            **model,
        )
        sub_video.input(pick_video, sub_video, sub_caption, api_visibility="private")
        for tab, name in (
            (search_tab, "search"),
            (subspace_tab, "subspaces"),
            (metrics_tab, "metrics"),
            (map_tab, "map"),
            (gallery_tab, "gallery"),
        ):
            event = tab.select(
                lambda name=name: name, None, active_tab, api_visibility="private", queue=False
            )
            if name == "subspaces":
                event.then(
                    align_if_visible, align_inputs, align_outputs, api_visibility="private", **model
                )
        reference_btn.click(
            reference_metrics,
            knob_inputs,
            [reference_table, reference_note],
            api_name="reference_metrics",
            **model,
        )
        sweep_btn.click(sweep, [sweep_name, *knob_inputs], sweep_plot, api_name="sweep", **model)
        map_btn.click(
            embedding_map, knob_inputs, [map_plot, map_note], api_name="embedding_map", **model
        )
        map_pick.change(show_item, map_pick, map_item, api_name="map_item", **model)
        upload_btn.click(
            add_videos,
            [uploads, upload_caption],
            [upload_report, gallery_table, skipped_table, gallery_md, info, sub_video, uploads],
            api_name="add_videos",
            **model,
        )

        # The programmatic API: rank(query, beta, k, iters, lam, init, top_k, mode) -> JSON.
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
            try:
                base = explorer.defaults(mode if mode in ("joint", "inference") else None)
                knobs = Knobs(
                    mode=mode,
                    beta=beta,
                    k=k,
                    iters=iters,
                    lam=lam,
                    init=init,
                    seed=base.seed,
                    top_k=top_k,
                )
                with torch.inference_mode():
                    return explorer.rank(query, knobs).to_json()
            except KnobError as error:
                raise gr.Error(str(error), print_exception=False) from None

        gr.api(rank, api_name="rank", **model)
    return demo


def summary(explorer: Explorer) -> str:
    snap = explorer.snapshot
    base = snap.base.encoder
    lines = [
        f"**Gallery** {len(snap.records)} videos · {len(snap.captions)} captions · "
        f"{len(snap.skipped)} skipped",
        f"**Base** `{base.config.backbone}` ({base.fingerprint[:8]}) · "
        + (
            f"**EMCL** `{snap.emcl.encoder.config.backbone}` ({snap.emcl.encoder.fingerprint[:8]}, "
            f"trained K {explorer.trained.k})"
            if snap.emcl
            else "no jointly trained EMCL model"
        )
        + f" · {base.device.type}",
    ]
    return "  \n".join(lines)


def gallery_summary(explorer: Explorer) -> str:
    snap = explorer.snapshot
    splits: dict[str, int] = {}
    for r in snap.records:
        splits[r.split] = splits.get(r.split, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
    return (
        f"**{len(snap.records)} videos indexed** ({parts}); **{len(snap.skipped)} skipped** "
        "(listed below with the reason). Uploads are decoded in the guarded decoder, stored "
        "under generated names and added to both models' galleries."
    )


def metrics_caption(result: Any, knobs: Knobs) -> str:
    note = (
        f"{result.n_texts} captions × {result.n_videos} videos · {result.protocol} · "
        f"{knob_summary(knobs)} · {result.ms:.0f} ms"
    )
    if knobs.isoftmax:
        note += f" · inverted softmax τ = {knobs.isoftmax_temp:g}"
    return note


def effective_k_line(result: Any) -> str:
    return f"effective K: **{result.effective_k}** (first metrics EM block)"


def knob_summary(knobs: Knobs) -> str:
    return f"K {knobs.k}, T {knobs.iters}, λ {knobs.lam:g}, β {knobs.beta:g}, init {knobs.init}" + (
        f" (seed {knobs.seed})" if knobs.init != "prior" else ""
    )


def grounding_table(result: Any, selection: str, average: Any) -> str:
    def pct(g: Any) -> str:
        return (
            "–" if g is None or g.score is None else f"{100 * g.score:.0f}% ({g.hits}/{g.scored})"
        )

    def chance(g: Any) -> str:
        return "–" if g is None or g.chance_score is None else f"{100 * g.chance_score:.0f}%"

    if result.grounding.get("auto") is None:
        return "_No per-frame ground truth for this video: grounding is scored on the demo world._"
    rows = [
        ("subspaces, auto", result.grounding["auto"], average.auto if average else None),
        ("full space", result.grounding["full"], average.full if average else None),
    ]
    if selection != "auto":
        rows.insert(1, (f"subspace {selection}", result.grounding.get(selection), None))
    pairs = average.pairs if average else 0
    lines = [
        f"| grounding | this pair | test split ({pairs} pairs) | chance (this pair / split) |",
        "|---|---|---|---|",
    ]
    for label, here, split in rows:
        split_chance = chance(split) if split is not None else "–"
        lines.append(f"| {label} | {pct(here)} | {pct(split)} | {chance(here)} / {split_chance} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------
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
    for checkpoint in (setup.base_checkpoint, setup.checkpoint, ROOT / "checkpoints"):
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
        "js": MAP_CLICK_JS,
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="EMCL Explorer: base vs EMCL text-video retrieval")
    ap.add_argument(
        "--data",
        type=Path,
        help="MSR-VTT layout or a folder of videos (+ captions."
        "csv/jsonl); default: the demo world, built on first run under --cache-dir",
    )
    ap.add_argument("--split", default="test", help="MSR-VTT split to index (default: test)")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="jointly trained EMCL checkpoint (default: checkpoints/demo-emcl for the demo world)",
    )
    ap.add_argument(
        "--base-checkpoint",
        type=Path,
        help="base checkpoint (default: checkpoints/demo-base unless --model is given)",
    )
    ap.add_argument(
        "--model",
        help="open_clip backbone for a base model without a checkpoint, "
        "e.g. ViT-B-32 (zero-shot, mean-pooled frames)",
    )
    ap.add_argument("--pretrained", help="open_clip tag or local .safetensors for --model")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=ROOT / ".cache",
        help="demo world, feature and map caches, uploads (default: ./.cache)",
    )
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    ap.add_argument("--port", type=int, default=7860)
    return ap.parse_args(argv)


def setup_from(args: argparse.Namespace) -> Setup:
    base = args.base_checkpoint
    emcl = args.checkpoint
    if args.model is None:
        base = base or DEFAULT_BASE
        emcl = emcl or (DEFAULT_EMCL if args.data is None or DEFAULT_EMCL.exists() else None)
    return Setup(
        data=args.data,
        split=args.split,
        base_checkpoint=base,
        checkpoint=emcl,
        model=args.model,
        pretrained=args.pretrained,
        cache_dir=args.cache_dir,
        device=args.device,
    )


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    # Once, before any request thread exists; the cores this process may use (taskset, cgroups).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    setup = setup_from(args)
    explorer = load_explorer(setup)
    demo = queued(build_demo(explorer))
    settings = launch_settings(setup, explorer, args.host, args.port)
    _, url, _ = demo.launch(prevent_thread_lock=True, **settings)
    print(f"UI ready at {url} in {time.perf_counter() - start:.1f} s", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
