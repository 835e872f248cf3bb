"""The documents say what the code is: design.md's layout names every module and package, the
README stays short, every command shown exists, and every README link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emcl.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
README_MAX_LINES = 250

# How design.md's layout block is read (its "## Package layout" section, first fenced block):
# - a line indented by fewer than NAME_COLUMN spaces is an *entry*: its first word is a name
#   (`core/`, `em.py`, `training/pretrain.py`), two spaces of indent per level, and its path is
#   the path of the enclosing entry one level up followed by that name (`emcl/` + `core/`);
# - a line indented by NAME_COLUMN spaces or more continues the previous entry's description.
# A package directory (a folder under emcl/ or ui/ holding a .py file) is named when an entry
# has its path. A module `<dir>/<stem>.py` (every .py file except __init__.py) is named when an
# entry has its path, or when the entry of `<dir>/` mentions `<stem>.py` as a whole word in its
# name or description. So `metrics.py` under `retrieval/` does not name explorer/metrics.py.
NAME_COLUMN = 16
LAYOUT_ROOTS = ("emcl", "ui")


def layout_entries(design: str) -> dict[str, str]:
    """``{path: text}`` of the layout block's entries (see the rule above)."""
    section = re.search(r"^## Package layout\n(.*?)(?=^## |\Z)", design, re.S | re.M)
    assert section, "docs/design.md has no '## Package layout' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the layout section has no fenced block"
    entries: dict[str, str] = {}
    parents: list[str] = []  # the path at each depth
    current = None
    for number, line in enumerate(block.group(1).splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent >= NAME_COLUMN:
            assert current is not None, f"layout line {number} continues nothing"
            entries[current] += " " + line.strip()
            continue
        assert indent % 2 == 0, f"layout line {number}: indent by two spaces per level"
        depth = indent // 2
        assert depth <= len(parents), f"layout line {number} skips a level"
        name = line.split()[0]
        current = (parents[depth - 1] if depth else "") + name
        del parents[depth:]
        parents.append(current if current.endswith("/") else current + "?")
        entries[current] = line.strip()
    return entries


def names_module(entries: dict[str, str], path: str) -> bool:
    folder, _, file = path.rpartition("/")
    if path in entries:
        return True
    text = entries.get(folder + "/", "")
    return re.search(rf"(?<![\w./-]){re.escape(file)}(?!\w)", text) is not None


def code_layout() -> tuple[list[str], list[str]]:
    """The package folders and the modules under emcl/ and ui/, as repository paths."""
    files = [
        p.relative_to(ROOT).as_posix()
        for root in LAYOUT_ROOTS
        for p in (ROOT / root).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    folders = sorted({f.rpartition("/")[0] + "/" for f in files})
    modules = sorted(f for f in files if not f.endswith("/__init__.py"))
    return folders, modules


def test_the_layout_rule_reads_entries_and_descriptions():
    design = "## Package layout\n\n```\nemcl/   the library\n  core/    em.py (EM),\n" + (
        " " * 20 + "gram.py\n  training/pretrain.py  pretraining\n```\n## Next\n"
    )
    entries = layout_entries(design)
    assert set(entries) == {"emcl/", "emcl/core/", "emcl/training/pretrain.py"}
    assert names_module(entries, "emcl/core/gram.py")
    assert names_module(entries, "emcl/training/pretrain.py")
    assert not names_module(entries, "emcl/core/logits.py")
    assert not names_module(entries, "emcl/retrieval/em.py")  # another folder's em.py


def test_design_layout_names_every_package_and_module():
    entries = layout_entries((ROOT / "docs" / "design.md").read_text())
    folders, modules = code_layout()
    missing = [f for f in folders if f not in entries]
    missing += [m for m in modules if not names_module(entries, m)]
    assert not missing, f"docs/design.md's package layout does not name: {missing}"


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_command_shown_is_in_the_dispatcher(doc):
    text = doc.read_text()
    shown = re.findall(r"-m emcl[ \t]+([A-Za-z][\w-]*)", text)
    unknown = sorted({name for name in shown if name not in COMMANDS})
    assert not unknown, f"{doc.name} shows commands the dispatcher lacks: {unknown}"
    other_forms = sorted(set(re.findall(r"-m emcl\.[\w.]+", text)))
    assert not other_forms, f"{doc.name} shows forms other than `python -m emcl <command>`"


def test_every_relative_readme_link_resolves():
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    relative = [link for link in links if not re.match(r"[a-z]+:|#", link)]
    assert relative, "README.md links nothing"
    broken = [link for link in relative if not (ROOT / link.split("#")[0]).exists()]
    assert not broken, f"README.md links to missing files: {broken}"
