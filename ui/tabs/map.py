"""The Embedding map tab: UMAP of video and caption embeddings before and after EMCL; click a
point to play its video."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.knobs import Knobs
from emcl.explorer.service import Explorer
from ui import plots
from ui.common import (
    MAPS_EVENT,
    PROGRESS,
    first_caption,
    progress_callback,
    user_errors,
    video_url,
)

# Plotly clicks on the map -> the hidden "picked item" textbox (its change event).
CLICK_JS = """
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


@dataclass
class MapTab:
    tab: gr.Tab
    button: gr.Button
    note: gr.Markdown
    plot: gr.Plot
    pick: gr.Textbox
    item: gr.HTML


def build() -> MapTab:
    with gr.Tab("Embedding map", id="map") as tab:
        with gr.Row():
            button = gr.Button("Compute map", variant="primary", scale=1, elem_id="emcl-map-btn")
            note = gr.Markdown(
                "UMAP of the active model's video and caption embeddings before and after "
                "EMCL (one EM run over all of them). Click a point to see it."
            )
        plot = gr.Plot(
            plots.message_figure("Press Compute map"), label="Embedding map", elem_id="emcl-map"
        )
        pick = gr.Textbox(visible="hidden", elem_id="emcl-map-pick")
        item = gr.HTML("", elem_id="emcl-map-item")
    return MapTab(tab, button, note, plot, pick, item)


def wire(tab: MapTab, panel: Any, explorer: Explorer) -> None:
    def embedding_map(knobs: Knobs, progress: gr.Progress = PROGRESS) -> tuple[Any, str]:
        progress(0.0, desc="EM and projection (the first UMAP run compiles: ~30 s)")
        m = explorer.embedding_map(knobs, progress_callback(progress))
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
        if m.note.startswith("SAMPLE"):  # a sampled map says so on the figure itself
            figure.add_annotation(
                text=m.note.split(". ")[0] + ".",
                xref="paper",
                yref="paper",
                x=0.5,
                y=-0.08,
                showarrow=False,
                font={"size": 12, "color": "#b45309"},
            )
            figure.update_layout(margin={"b": 60})
        note = (
            f"**Modality gap** (distance between the video and caption centroids of the "
            f"L2-normalised embeddings): **{m.gap_before:.3f}** before → "
            f"**{m.gap_after:.3f}** after EMCL · {m.method.upper()} · {m.note} · "
            f"mode {knobs.mode}. Click a point to see it."
        )
        return figure, note

    @user_errors
    def map_item(item_id: str) -> str:
        if not item_id:
            return ""
        video_id, text, kind = explorer.map_item(item_id.split("|")[0])
        caption = text or first_caption(explorer, video_id)
        lines = [f"caption: {caption}", f"split: {explorer.record(video_id).split}"]
        title = f"{'caption of ' if kind == 'text' else ''}{video_id}"
        return plots.video_html(video_url(explorer.video_path(video_id)), title, lines)

    tab.button.click(
        panel.bind(embedding_map),
        panel.inputs,
        [tab.plot, tab.note],
        api_name="embedding_map",
        **MAPS_EVENT,
    )
    tab.pick.change(map_item, tab.pick, tab.item, api_name="map_item", **MAPS_EVENT)
