"""Print docs/knobs.md from the knobs' one source: ``python -m emcl knobs > docs/knobs.md``.

The meanings, labels and accepted values are emcl/explorer/knob_docs.py; tests/test_vocabulary.py
fails when the file on disk differs from what this prints.
"""

from __future__ import annotations

import argparse

from emcl.explorer import knob_docs


def main(argv: list[str] | None = None) -> int:
    """Write the knobs' Markdown table to standard output."""
    argparse.ArgumentParser(
        prog="python -m emcl knobs", description=__doc__.split("\n")[0]
    ).parse_args(argv)
    print(knob_docs.markdown(), end="")
    return 0
