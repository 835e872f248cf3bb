"""The Models tab: any two checkpoints side by side. Two pickers (Base side, EMCL side) fed by
the checkpoint catalog, Refresh, Switch with a polled progress line while the current pair
keeps serving, the current pair, the catalog with each refused folder's reason, and the paired
evaluation of runs against the base (emcl/explorer/checkpoints.py, switching.py,
pair_eval.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from emcl.explorer.checkpoints import JOINT, NONE, CatalogEntry
from emcl.explorer.latest import JobState
from emcl.explorer.pair_eval import PairEvaluation
from emcl.explorer.service import Explorer
from emcl.explorer.switching import SwitchStatus, shown
from ui.common import user_errors
from ui.text import summary

POLL_S = 1.0  # the switch's and the evaluation's progress lines
NONE_LABEL = "none: EMCL at inference on the base model"
CATALOG_HEADERS = ["name", "source", "kind", "seed", "EM (K, iters, λ, β)", "status", "path"]
EVAL_HEADERS = ["row"] + [
    f"{d} {m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")
]
EVAL_HINT = (
    "† the base (no EM), ‡ the run (trained jointly, its own EM settings and prior), on the "
    "test split of the app's world in the study's protocol; beside them the study's † and ‡ "
    "of the same seed when the recipe (preset, world, backbone) is the study's, and with runs "
    "of two or more seeds the paired t-test. R@K in %, MdR/MnR ranks."
)


@dataclass
class ModelsTab:
    tab: gr.Tab
    base: gr.Dropdown
    emcl: gr.Dropdown
    refresh: gr.Button
    switch: gr.Button
    status: gr.Markdown
    current: gr.Markdown
    poll: gr.Timer  # active while a switch runs
    catalog: gr.Dataframe
    runs: gr.Dropdown
    study: gr.Dropdown
    evaluate: gr.Button
    eval_status: gr.Markdown
    eval_table: gr.Dataframe
    eval_poll: gr.Timer  # active while an evaluation runs


# ---- what the widgets show -------------------------------------------------------------------
def _em(entry: CatalogEntry) -> str:
    em = entry.em
    return "" if not em else f"{em['k']}, {em['iters']}, {em['lam']:g}, {em['beta']:g}"


def catalog_rows(entries: list[CatalogEntry]) -> list[list[str]]:
    """The catalog table: refused folders with their reason, not offered in the pickers."""
    return [
        [e.name, e.source, e.kind or "", "" if e.seed is None else str(e.seed), _em(e),
         "ok" if e.ok else f"refused: {e.reason}", str(e.path)]
        for e in entries
    ]  # fmt: skip


def served_names(entries: list[CatalogEntry], status: SwitchStatus) -> tuple[str | None, str]:
    """The pickers' values for the served pair (None: a base outside the catalog)."""
    by_path = {shown(e.path): e.name for e in entries if e.ok}
    return by_path.get(status.base), by_path.get(status.emcl, NONE)


@dataclass(frozen=True)
class Pickers:
    """What the pickers offer and show: ok checkpoints only (refused ones are in the table)."""

    base_choices: list[tuple[str, str]]
    emcl_choices: list[tuple[str, str]]  # "none" first, then the joint checkpoints
    runs_choices: list[tuple[str, str]]
    base: str | None
    emcl: str
    rows: list[list[str]]


def pickers(explorer: Explorer) -> Pickers:
    entries = explorer.checkpoint_catalog()
    base, emcl = served_names(entries, explorer.switch_status())
    joint = [(e.label, e.name) for e in entries if e.ok and e.kind == JOINT]
    return Pickers(
        base_choices=[(e.label, e.name) for e in entries if e.ok],
        emcl_choices=[(NONE_LABEL, NONE), *joint],
        runs_choices=joint,
        base=base,
        emcl=emcl,
        rows=catalog_rows(entries),
    )


def current_pair(status: SwitchStatus) -> str:
    return f"**Serving** Base `{status.base}` · EMCL `{status.emcl}` (snapshot {status.version})"


def evaluation_view(result: PairEvaluation | JobState) -> tuple[str, list[list[Any]], bool]:
    """The evaluation's status line, its table and whether to poll again."""
    if isinstance(result, JobState):
        if result.error:
            return f"**The evaluation failed:** {result.error}", [], False
        return f"evaluating ({result.fraction:.0%}): {result.message}", [], True
    recipe = result.recipe
    words = f"recipe {recipe.preset}, {recipe.world}, {recipe.backbone}" if recipe else "no recipe"
    line = (
        f"{len(result.rows)} run(s) against `{result.base}` on {result.videos:,} test clips "
        f"({result.seconds:.0f} s); {words}. {result.study_note}. {result.test_note}."
    )
    return line, result.table(), False


# ---- the tab ---------------------------------------------------------------------------------
def build(explorer: Explorer) -> ModelsTab:
    found = pickers(explorer)
    status = explorer.switch_status()
    with gr.Tab("Models", id="models") as tab:
        gr.Markdown(
            "Serve any two checkpoints side by side: a **Base side** (any checkpoint) and an "
            "**EMCL side** (a jointly trained EMCL checkpoint, or none: EMCL at inference on the "
            "base). Switching indexes the gallery with the new pair in the background; the "
            "current pair keeps serving until it is ready.",
            elem_classes="emcl-hint",
        )
        with gr.Row():
            base = gr.Dropdown(label="Base side", scale=3, elem_id="emcl-base-side",
                               choices=found.base_choices, value=found.base)  # fmt: skip
            emcl = gr.Dropdown(label="EMCL side", scale=3, elem_id="emcl-emcl-side",
                               choices=found.emcl_choices, value=found.emcl)  # fmt: skip
            refresh = gr.Button("Refresh", scale=1, elem_id="emcl-models-refresh")
            switch = gr.Button("Switch", variant="primary", scale=1, elem_id="emcl-switch")
        status_md = gr.Markdown(status.line(), elem_id="emcl-switch-status")
        current = gr.Markdown(current_pair(status), elem_id="emcl-current-pair")
        poll = gr.Timer(POLL_S, active=status.running)
        with gr.Accordion("Checkpoints found (refused folders with the reason)", open=False):
            catalog = gr.Dataframe(value=found.rows, headers=CATALOG_HEADERS, interactive=False,
                                   wrap=True, elem_id="emcl-catalog")  # fmt: skip
        gr.Markdown("#### Evaluate against the base\n" + EVAL_HINT, elem_classes="emcl-hint")
        with gr.Row():
            runs = gr.Dropdown(label="Runs (‡, one recipe)", multiselect=True, scale=3,
                               elem_id="emcl-eval-runs", choices=found.runs_choices,
                               value=[found.emcl] if found.emcl != NONE else [])  # fmt: skip
            names = explorer.studies()
            study = gr.Dropdown(choices=names, value=names[0] if names else None, scale=2,
                                label="Beside the study")  # fmt: skip
            evaluate = gr.Button("Evaluate against the base", scale=1, elem_id="emcl-evaluate")
        eval_status = gr.Markdown("", elem_id="emcl-eval-status")
        eval_table = gr.Dataframe(headers=EVAL_HEADERS, interactive=False, wrap=True,
                                  elem_id="emcl-eval-table")  # fmt: skip
        eval_poll = gr.Timer(POLL_S, active=False)
    return ModelsTab(tab, base, emcl, refresh, switch, status_md, current, poll, catalog, runs,
                     study, evaluate, eval_status, eval_table, eval_poll)  # fmt: skip


def wire(tab: ModelsTab, explorer: Explorer, header: gr.Markdown) -> None:
    """Refresh, switch (the poll updates the status, the pair and the page ``header``) and
    evaluate (its own poll)."""

    def refresh() -> tuple[Any, Any, Any, list[list[str]]]:
        found = pickers(explorer)
        runs = [found.emcl] if found.emcl != NONE else []
        return (
            gr.Dropdown(choices=found.base_choices, value=found.base),
            gr.Dropdown(choices=found.emcl_choices, value=found.emcl),
            gr.Dropdown(choices=found.runs_choices, value=runs),
            found.rows,
        )

    @user_errors
    def switch_models(base: str, emcl: str) -> tuple[str, Any]:
        status = explorer.switch_models(base, emcl)
        return status.line(), gr.Timer(active=True)

    def switch_status() -> tuple[str, str, str, Any]:
        status = explorer.switch_status()
        return (
            status.line(),
            current_pair(status),
            summary(explorer),
            gr.Timer(active=status.running),
        )

    @user_errors
    def evaluate_pair(runs: list[str], base: str, study: str) -> tuple[str, Any, Any]:
        line, table, again = evaluation_view(explorer.evaluate_pair(runs, base, study or None))
        return line, gr.Dataframe(value=table, headers=EVAL_HEADERS), gr.Timer(active=again)

    tab.refresh.click(refresh, None, [tab.base, tab.emcl, tab.runs, tab.catalog],
                      api_visibility="private")  # fmt: skip
    tab.switch.click(switch_models, [tab.base, tab.emcl], [tab.status, tab.poll],
                     api_name="switch_models")  # fmt: skip
    tab.poll.tick(switch_status, None, [tab.status, tab.current, header, tab.poll],
                  api_visibility="private", queue=False)  # fmt: skip
    evaluated = [tab.eval_status, tab.eval_table, tab.eval_poll]
    inputs = [tab.runs, tab.base, tab.study]
    tab.evaluate.click(evaluate_pair, inputs, evaluated, api_name="evaluate_pair")
    tab.eval_poll.tick(evaluate_pair, inputs, evaluated, api_visibility="private", queue=False)


__all__ = ["ModelsTab", "Pickers", "build", "catalog_rows", "evaluation_view", "pickers", "wire"]
