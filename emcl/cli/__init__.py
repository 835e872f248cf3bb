"""Command-line entry points, run through ``python -m emcl <command>`` (emcl/__main__.py).

Each command is ``emcl/cli/<command>.py``'s ``main(argv)``; an installed project
(``pip install -e .``) runs the same dispatcher as ``emcl <command>``.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def redirect(command: str, module: str) -> NoReturn:
    """Name ``command``'s one form and exit 2: what ``python -m <module>`` answers.

    Every command has one form (``python -m emcl <command>``), so a per-command module entry
    runs nothing and points there instead.
    """
    print(
        f"`python -m {module}` runs nothing; the command is `python -m emcl {command}` "
        f"(or `emcl {command}` after `pip install -e .`).\n"
        f"Its options: python -m emcl {command} --help",
        file=sys.stderr,
    )
    raise SystemExit(2)


def device_flag(value: str) -> str:
    """argparse ``type`` of every ``--device`` flag: one of cpu | cuda | auto, and ``cuda`` only
    where torch sees a GPU (emcl/explorer/device.py; only ``auto`` falls back to the CPU)."""
    import argparse

    from emcl.explorer.device import check_device

    try:
        return check_device(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--device ")) from error
