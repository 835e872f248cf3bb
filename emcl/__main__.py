"""``python -m emcl <command> [options]``: the project's commands in one entry point.

    python -m emcl train --preset demo-pretrain --out runs/demo-pretrain
    python -m emcl train --preset demo-pretrain-video --out runs/demo-pretrain-video
    python -m emcl study --seeds 5
    python -m emcl evaluate --preset demo --json runs/eval-demo.json
    python -m emcl index query INDEX "a man is cooking"
    python -m emcl auth add alice --file auth.txt
    torchrun --nproc_per_node=2 -m emcl train --preset msrvtt --data /data/msrvtt
    torchrun --nproc_per_node=2 -m emcl extract --data DIR --checkpoint checkpoints/demo-base

``pip install -e .`` installs the same dispatcher as the ``emcl`` command (pyproject.toml).
Each command is ``emcl/cli/<command>.py``'s ``main(argv)``, imported only when it runs (so one
command's dependencies never slow down or break another).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "train a model (emcl/cli/train.py)",
    "evaluate": "evaluate base vs EMCL retrieval (emcl/cli/evaluate.py)",
    "world": "build the synthetic demo world (emcl/cli/world.py)",
    "study": "the five-seed EMCL study on world v2 (emcl/cli/study.py)",
    "extract": "index video features, sharded over torchrun ranks (emcl/cli/extract.py)",
    "index": "build, query and export a search index (emcl/cli/index.py)",
    "auth": "add, remove and list the logins of a served app (emcl/cli/auth.py)",
    "knobs": "print docs/knobs.md, the knobs' meanings (emcl/cli/knobs.py)",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(
        ["usage: python -m emcl <command> [options]   (installed: emcl <command> [options])", "",
         "commands:", *lines, "", "python -m emcl <command> --help shows a command's options."]
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run ``argv[0]``'s command with the rest; no or an unknown command: the list, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"{usage()}\n\nerror: {problem}", file=sys.stderr)
        return 2
    from emcl.runtime import flush_subnormals

    flush_subnormals()  # before torch starts its threads, so that they inherit it
    command = importlib.import_module(f"emcl.cli.{argv[0]}")
    return int(command.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
