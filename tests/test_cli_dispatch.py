"""One command line: ``python -m emcl <command>`` (and the installed ``emcl``), every command in
the dispatcher's table, and the per-module forms that only name it."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from emcl.__main__ import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]

# ``python -m <module>`` forms that run nothing and name the command's one form instead.
REDIRECTS = {
    "emcl.train": "train",
    "emcl.index": "index",
    "emcl.study": "study",
    "emcl.auth": "auth",
}


def exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit status, whether it returns or argparse exits."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help_with_its_one_form(command, capsys):
    assert exit_code([command, "--help"]) == 0
    out = capsys.readouterr().out
    # argparse wraps long usage lines, so compare the words only.
    assert " ".join(out.split()).startswith(f"usage: python -m emcl {command}"), out[:200]


def test_the_table_names_a_module_with_a_main_for_every_command():
    for command in COMMANDS:
        module = importlib.import_module(f"emcl.cli.{command}")
        assert callable(getattr(module, "main", None)), command


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    listed = re.findall(r"^  (\S+)  ", capsys.readouterr().out, flags=re.MULTILINE)
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("argv", [[], ["fly"], ["--train"]])
def test_no_or_an_unknown_command_exits_2_with_the_list(argv, capsys):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "usage: python -m emcl <command>" in err
    assert all(f"  {command}" in err for command in COMMANDS)
    assert ("unknown command" if argv else "no command given") in err


@pytest.mark.parametrize(("module", "command"), sorted(REDIRECTS.items()))
def test_per_module_forms_exit_2_naming_the_command(module, command):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"python -m emcl {command}" in done.stderr
    assert done.stdout == ""  # nothing ran


def test_every_module_entry_under_emcl_is_the_dispatcher_or_a_redirect():
    """A ``__main__`` guard anywhere else would be a second form of some command."""
    entries = set()
    for path in (ROOT / "emcl").rglob("*.py"):
        if re.search(r"""^if __name__ == ["']__main__["']:""", path.read_text(), re.MULTILINE):
            entries.add(path.relative_to(ROOT).as_posix())
    assert entries == {"emcl/__main__.py"} | {_entry_file(module) for module in REDIRECTS}


def _entry_file(module: str) -> str:
    """The file ``python -m module`` runs: a package's ``__main__.py`` or the module itself."""
    path = ROOT / module.replace(".", "/")
    path = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    return path.relative_to(ROOT).as_posix()


def test_the_installed_script_is_the_dispatcher(capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["emcl"]
    module_name, _, attribute = target.partition(":")
    entry = getattr(importlib.import_module(module_name), attribute)
    assert entry is main
    assert entry(["--help"]) == 0 and "commands:" in capsys.readouterr().out
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"emcl*", "ui*"} <= set(packages)
