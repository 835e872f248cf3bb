"""Tables that page: a search box, page controls and one page of rows at a time, so a
gallery of 100K videos never ships 100K rows to the browser."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

PAGE_ROWS = 50


def page_of(
    rows: Sequence[Sequence[Any]], query: object, page: object, size: int = PAGE_ROWS
) -> tuple[list[list[Any]], int, str]:
    """The rows of page ``page`` (1-based, clamped) among those with a cell containing
    ``query`` (case-insensitive), the page shown, and a line saying where it is."""
    needle = str(query or "").strip().lower()
    matched = [list(r) for r in rows if not needle or any(needle in str(v).lower() for v in r)]
    pages = max(1, math.ceil(len(matched) / size))
    try:
        number = int(page)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        number = 1
    number = min(max(number, 1), pages)
    start = (number - 1) * size
    shown = matched[start : start + size]
    where = f"rows {start + 1}–{start + len(shown)} of {len(matched):,}" if shown else "no rows"
    if needle:
        where += f" matching “{needle[:40]}” ({len(rows):,} in all)"
    return shown, number, f"{where} · page {number} of {pages}"


@dataclass
class PagedTable:
    search: gr.Textbox
    page: gr.Number
    previous: gr.Button
    next: gr.Button
    note: gr.Markdown
    table: gr.Dataframe

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.table, self.page, self.note]


def build(
    rows: Sequence[Sequence[Any]], headers: list[str], label: str, **table_options: Any
) -> PagedTable:
    """A paged table showing the first page of ``rows``."""
    first, number, note = page_of(rows, "", 1)
    with gr.Row(equal_height=True):
        search = gr.Textbox(
            label=f"Search {label.lower()}",
            placeholder="part of an id, caption or file name; Enter",
            scale=3,
        )
        previous = gr.Button("◀", size="sm", scale=0, min_width=40)
        page = gr.Number(number, precision=0, minimum=1, label="page", scale=0, min_width=80)
        next_ = gr.Button("▶", size="sm", scale=0, min_width=40)
    note_md = gr.Markdown(note, elem_classes="emcl-hint")
    table = gr.Dataframe(first, headers=headers, interactive=False, label=label, **table_options)
    return PagedTable(search, page, previous, next_, note_md, table)


def wire(paged: PagedTable, rows: Callable[[], Sequence[Sequence[Any]]]) -> Callable:
    """Search and page through ``rows()`` (read on every event, so it shows the current
    gallery). Returns ``fill(query, page)`` for other events that refresh the table."""

    def fill(query: str, page: Any) -> tuple[Any, int, str]:
        return page_of(rows(), query, page)

    def step(delta: int) -> Callable:
        def move(query: str, page: Any) -> tuple[Any, int, str]:
            try:
                return fill(query, int(page) + delta)
            except (TypeError, ValueError, OverflowError):
                return fill(query, 1)

        return move

    private = {"api_visibility": "private", "show_progress": "hidden"}
    inputs = [paged.search, paged.page]
    paged.search.submit(lambda query: fill(query, 1), paged.search, paged.outputs, **private)
    paged.page.submit(fill, inputs, paged.outputs, **private)
    paged.previous.click(step(-1), inputs, paged.outputs, **private)
    paged.next.click(step(+1), inputs, paged.outputs, **private)
    return fill


__all__ = ["PAGE_ROWS", "PagedTable", "build", "page_of", "wire"]
