"""The Gallery tab: the indexed videos and the skipped files (paged tables with a search),
and uploads when the server allows them (``--allow-uploads``, with per-user and total caps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.service import Explorer
from emcl.explorer.uploads import ANONYMOUS, MAX_UPLOADS, MIB, UploadLimits
from emcl.video.probe import VIDEO_EXTENSIONS
from ui import paging
from ui.common import PROGRESS, UPLOADS_EVENT, progress_callback, user_errors
from ui.text import gallery_summary, summary

UPLOADS_OFF = "Uploads are off on this server (its operator can start it with `--allow-uploads`)."


@dataclass
class Uploader:
    files: gr.File
    caption: gr.Textbox
    button: gr.Button
    report: gr.Markdown


@dataclass
class GalleryTab:
    tab: gr.Tab
    summary: gr.Markdown
    videos: paging.PagedTable
    skipped: paging.PagedTable
    uploader: Uploader | None  # None: uploads off


def upload_label(explorer: Explorer, limits: UploadLimits) -> str:
    return (
        f"Add videos (≤ {MAX_UPLOADS} files, {explorer.upload_max_bytes // MIB} MiB each, "
        f"{limits.per_user_bytes // MIB} MiB per user)"
    )


def build(explorer: Explorer, uploads: UploadLimits | None = None) -> GalleryTab:
    with gr.Tab("Gallery", id="gallery") as tab:
        summary_md = gr.Markdown(gallery_summary(explorer))
        videos = paging.build(
            explorer.gallery_rows(), ["video", "split", "captions", "file"], "Videos"
        )
        skipped = paging.build(
            explorer.skipped_rows(), ["video", "reason", "message", "file"], "Skipped files"
        )
        uploader = None
        if uploads is None or explorer.uploads_dir is None:
            gr.Markdown(UPLOADS_OFF, elem_classes="emcl-hint")
        else:
            with gr.Row():
                files = gr.File(
                    file_count="multiple",
                    file_types=list(VIDEO_EXTENSIONS),
                    label=upload_label(explorer, uploads),
                    scale=2,
                )
                with gr.Column(scale=1):
                    caption = gr.Textbox(label="Caption for the new videos (optional)")
                    button = gr.Button("Add to gallery", variant="primary")
            uploader = Uploader(files, caption, button, gr.Markdown(""))
    return GalleryTab(tab, summary_md, videos, skipped, uploader)


def wire(
    tab: GalleryTab,
    explorer: Explorer,
    header: gr.Markdown,
    video_picker: Any,
    uploads: UploadLimits | None = None,
) -> None:
    """Paging, and uploads that refresh this tab, the page header and ``video_picker``
    (the Subspaces tab's video box, set to the first added video)."""
    fill_videos = paging.wire(tab.videos, explorer.gallery_rows)
    fill_skipped = paging.wire(tab.skipped, explorer.skipped_rows)
    up = tab.uploader
    if up is None or uploads is None:
        return

    @user_errors
    def add_videos(
        files: list | None,
        caption: str,
        request: gr.Request,
        progress: gr.Progress = PROGRESS,
    ) -> tuple:
        paths = [getattr(f, "name", f) for f in (files or [])]
        user = getattr(request, "username", None) or ANONYMOUS
        added, refused = explorer.add_uploads(
            paths, caption or "", progress_callback(progress), user=user, limits=uploads
        )
        lines = [f"Added {len(added)} video(s): {', '.join(added) or '—'}."]
        lines += [f"- refused {r['file']}: {r['reason']}" for r in refused]
        return (
            "\n".join(lines),
            *fill_videos("", 1),
            *fill_skipped("", 1),
            gallery_summary(explorer),
            summary(explorer),
            gr.update(value=added[0]) if added else gr.skip(),
            None,
        )

    up.button.click(
        add_videos,
        [up.files, up.caption],
        [
            up.report,
            *tab.videos.outputs,
            *tab.skipped.outputs,
            tab.summary,
            header,
            video_picker,
            up.files,
        ],
        api_name="add_videos",
        **UPLOADS_EVENT,
    )
