"""The Gallery tab: the indexed videos, the skipped files with their reasons, and uploads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.service import Explorer
from emcl.explorer.uploads import MAX_UPLOADS, UPLOAD_MAX_BYTES
from emcl.video.probe import VIDEO_EXTENSIONS
from ui.common import MODEL_EVENT, PROGRESS, progress_callback, user_errors
from ui.text import gallery_summary, summary

UPLOAD_LABEL = f"Add videos (≤ {MAX_UPLOADS} files, {UPLOAD_MAX_BYTES >> 20} MiB each)"


@dataclass
class GalleryTab:
    tab: gr.Tab
    summary: gr.Markdown
    table: gr.Dataframe
    skipped: gr.Dataframe
    files: gr.File
    caption: gr.Textbox
    button: gr.Button
    report: gr.Markdown


def build(explorer: Explorer) -> GalleryTab:
    with gr.Tab("Gallery", id="gallery") as tab:
        summary_md = gr.Markdown(gallery_summary(explorer))
        table = gr.Dataframe(
            explorer.gallery_rows(),
            headers=["video", "split", "captions", "file"],
            interactive=False,
            max_height=320,
            show_search="search",
        )
        skipped = gr.Dataframe(
            explorer.skipped_rows(),
            headers=["video", "reason", "message", "file"],
            interactive=False,
            max_height=200,
            label="Skipped files",
        )
        with gr.Row():
            files = gr.File(
                file_count="multiple",
                file_types=list(VIDEO_EXTENSIONS),
                label=UPLOAD_LABEL,
                scale=2,
            )
            with gr.Column(scale=1):
                caption = gr.Textbox(label="Caption for the new videos (optional)")
                button = gr.Button("Add to gallery", variant="primary")
        report = gr.Markdown("")
    return GalleryTab(tab, summary_md, table, skipped, files, caption, button, report)


def wire(tab: GalleryTab, explorer: Explorer, header: gr.Markdown, video_picker: Any) -> None:
    """Uploads refresh this tab, the page header and ``video_picker`` (the Subspaces tab's
    video choices)."""

    @user_errors
    def add_videos(files: list | None, caption: str, progress: gr.Progress = PROGRESS) -> tuple:
        paths = [getattr(f, "name", f) for f in (files or [])]
        added, refused = explorer.add_uploads(paths, caption or "", progress_callback(progress))
        lines = [f"Added {len(added)} video(s): {', '.join(added) or '—'}."]
        lines += [f"- refused {r['file']}: {r['reason']}" for r in refused]
        ids = [r.video_id for r in explorer.snapshot.records]
        return (
            "\n".join(lines),
            explorer.gallery_rows(),
            explorer.skipped_rows(),
            gallery_summary(explorer),
            summary(explorer),
            gr.update(choices=ids),
            None,
        )

    tab.button.click(
        add_videos,
        [tab.files, tab.caption],
        [tab.report, tab.table, tab.skipped, tab.summary, header, video_picker, tab.files],
        api_name="add_videos",
        **MODEL_EVENT,
    )
