"""Code size: no function outside tests/ over 80 lines and no class over 300 (the house style,
docs/design.md), so every function reads top to bottom on a screen or two."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("emcl", "ui", "bench", "app.py")
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 300


def source_files(root: Path = REPO) -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = root / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def oversized(path: Path, root: Path = REPO) -> list[str]:
    """``file:line name (n lines)`` for each function or class of ``path`` over its limit."""
    relative = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_FUNCTION_LINES
        elif isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        else:
            continue
        lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
        if lines > limit:
            found.append(f"{relative}:{node.lineno} {node.name} ({lines} lines > {limit})")
    return found


def test_the_checker_counts_functions_and_classes(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (tmp_path / "emcl").mkdir()
    long_def = f"def f():\n{body}\n"  # 81 lines
    (tmp_path / "emcl" / "a.py").write_text(long_def + "\n\ndef g():\n    return 1\n")
    methods = "\n".join(f"    def m{i}(self):\n        return {i}\n" for i in range(100))
    (tmp_path / "emcl" / "b.py").write_text(f"class C:\n{methods}")  # 300 lines: at the limit
    (tmp_path / "emcl" / "c.py").write_text(f"class D:\n{methods}    x = 1\n")
    found = [
        line for p in sorted((tmp_path / "emcl").rglob("*.py")) for line in oversized(p, tmp_path)
    ]
    assert found == ["emcl/a.py:1 f (81 lines > 80)", "emcl/c.py:1 D (301 lines > 300)"]


def test_no_function_over_80_lines_and_no_class_over_300():
    files = source_files()
    assert REPO / "app.py" in files and any(p.parts[-2] == "core" for p in files)
    found = [line for path in files for line in oversized(path)]
    assert found == [], "split these:\n" + "\n".join(found)
