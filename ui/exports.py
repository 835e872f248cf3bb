"""Downloads: the search results and the metrics table as CSV and JSON.

"Export" writes both files (through :mod:`emcl.fileio`) into a temp folder of the browser
session, named by a hash of Gradio's session id (never by user text), and shows the two
download buttons. Each export replaces that session's earlier files, and folders idle for
``MAX_AGE_S`` are removed, so the exports take bounded space.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from emcl.explorer.knobs import KnobError, Knobs
from emcl.explorer.service import Explorer
from emcl.fileio import atomic_write, atomic_write_json
from ui.common import user_errors
from ui.knob_panel import WIDGETS, KnobPanel, knobs_from_widgets

EXPORTS_ROOT = Path(tempfile.gettempdir()) / "emcl-exports"
MAX_AGE_S = 3600.0
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula triggers
HIT_FIELDS = ("video_id", "score", "rank", "other_rank", "rank_change", "is_target")


@dataclass
class Downloads:
    export: gr.Button
    csv: gr.DownloadButton
    json: gr.DownloadButton

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.csv, self.json]


def build(what: str) -> Downloads:
    """The Export button and its two (hidden until exported) download buttons."""
    with gr.Row(elem_classes="emcl-downloads"):
        export = gr.Button(f"Export {what}", size="sm", scale=0, elem_id=f"emcl-export-{what}")
        csv_button = gr.DownloadButton("CSV", visible=False, size="sm", scale=0)
        json_button = gr.DownloadButton("JSON", visible=False, size="sm", scale=0)
    return Downloads(export, csv_button, json_button)


# ---- the files ---------------------------------------------------------------------------
def session_folder(session: str | None, root: Path = EXPORTS_ROOT) -> Path:
    """The session's export folder (created), after removing folders idle past MAX_AGE_S."""
    _prune(root)
    name = hashlib.sha256(str(session or "no-session").encode()).hexdigest()[:20]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _prune(root: Path, now: float | None = None) -> None:
    if not root.is_dir():
        return
    now = time.time() if now is None else now
    for folder in root.iterdir():
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > MAX_AGE_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # another session's cleanup got there first


def _cell(value: Any) -> Any:
    """A CSV cell; text a spreadsheet would run as a formula is quoted with a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return "" if value is None else value


def csv_text(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([_cell(h) for h in headers])
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def write_table(
    folder: Path, stem: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], document: Any
) -> tuple[Path, Path]:
    """``stem.csv`` (headers + rows) and ``stem.json`` (``document``) in ``folder``."""
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    atomic_write(csv_path, csv_text(headers, rows))
    atomic_write_json(json_path, document, indent=1)
    folder.touch()  # the folder's age is the session's last export
    return csv_path, json_path


def search_table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per hit of both columns of a ``/rank`` result; hit fields beyond the known
    ones (added by later versions) become extra columns."""
    hits = [(column, hit) for column in ("base", "emcl") for hit in result[column]]
    extra = sorted({k for _, hit in hits for k in hit} - set(HIT_FIELDS))
    headers = ["query", "mode", "column", *HIT_FIELDS, *extra]
    rows = [
        [result["query"], result["mode"], column] + [hit.get(k) for k in (*HIT_FIELDS, *extra)]
        for column, hit in hits
    ]
    return headers, rows


def table_document(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    return {
        "columns": list(headers),
        "rows": [dict(zip(headers, row, strict=True)) for row in rows],
    }


def export_search(
    explorer: Explorer, query: object, knobs: Knobs, session: str | None
) -> tuple[Path, Path]:
    """Rank ``query`` with ``knobs`` (the numbers of ``/rank``, plus the knobs) and write
    ``search_results.csv`` and ``.json`` into the session's folder."""
    result = explorer.rank(query, knobs).to_json()
    result["knobs"] = knobs.to_dict()
    headers, rows = search_table(result)
    return write_table(session_folder(session), "search_results", headers, rows, result)


def export_table(shown: Any, stem: str, session: str | None) -> tuple[Path, Path]:
    """A table as the page shows it (a DataFrame) as ``stem.csv`` and ``stem.json``."""
    if shown is None or len(shown) == 0:
        raise KnobError("nothing to export yet")
    headers = [str(h) for h in shown.columns]
    rows = shown.astype(object).where(shown.notna(), None).values.tolist()
    folder = session_folder(session)
    return write_table(folder, stem, headers, rows, table_document(headers, rows))


# ---- wiring ------------------------------------------------------------------------------
def _shown(paths: tuple[Path, Path]) -> tuple[Any, Any]:
    return tuple(gr.update(value=str(p), visible=True) for p in paths)  # type: ignore[return-value]


def wire_search(
    downloads: Downloads, query: gr.Textbox, panel: KnobPanel, explorer: Explorer
) -> None:
    """Export ranks the query again with the knobs as set."""

    @user_errors
    def export(request: gr.Request, text: str, *values: Any) -> tuple[Any, Any]:
        knobs = knobs_from_widgets(dict(zip(WIDGETS, values, strict=True)))
        return _shown(export_search(explorer, text, knobs, request.session_hash))

    downloads.export.click(
        export, [query, *panel.inputs], downloads.outputs, api_visibility="private"
    )


def wire_table(downloads: Downloads, table: gr.Dataframe, stem: str) -> None:
    """Export writes the table as shown (its headers and cells)."""

    @user_errors
    def export(request: gr.Request, shown: Any) -> tuple[Any, Any]:
        return _shown(export_table(shown, stem, request.session_hash))

    downloads.export.click(export, table, downloads.outputs, api_visibility="private")


__all__ = [
    "Downloads",
    "build",
    "csv_text",
    "export_search",
    "export_table",
    "search_table",
    "session_folder",
    "table_document",
    "wire_search",
    "wire_table",
    "write_table",
]
