"""``python -m emcl ship SOURCE TARGET``: store a trained checkpoint the way the app ships it.

    python -m emcl ship runs/study/s0-base/export checkpoints/demo-base

The weights are re-stored in fp16 (half the bytes; they load back as fp32, rounded), and the
run's records (``log.jsonl``, ``summary.json``, ``train_config.json``) are copied beside them,
so the shipped folder says how it was trained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emcl.fileio import atomic_write
from emcl.model.checkpoint import WEIGHTS, CheckpointError, convert_checkpoint

RUN_RECORDS = ("log.jsonl", "summary.json", "train_config.json")
STORAGES = ("float16", "float32")


def ship(source: Path, target: Path, storage: str = "float16") -> list[str]:
    """Write ``source``'s checkpoint to ``target`` at ``storage`` precision with its run records;
    a record ``source`` lacks is removed from ``target`` (no stale log beside new weights).
    Returns the names of the records copied."""
    if source.resolve() == target.resolve():
        raise CheckpointError(f"source and target are the same folder: {source}")
    convert_checkpoint(source, target, storage=storage)
    copied = []
    for name in RUN_RECORDS:
        if (source / name).is_file():
            atomic_write(target / name, (source / name).read_bytes())
            copied.append(name)
        else:
            (target / name).unlink(missing_ok=True)
    return copied


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and ship; a bad checkpoint: message, exit 2."""
    ap = argparse.ArgumentParser(prog="python -m emcl ship", description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="a checkpoint folder (e.g. a run's export/)")
    ap.add_argument("target", type=Path, help="where to store it (e.g. checkpoints/demo-emcl)")
    ap.add_argument("--storage", choices=STORAGES, default="float16")
    a = ap.parse_args(argv)
    try:
        copied = ship(a.source, a.target, a.storage)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = (a.target / WEIGHTS).stat().st_size / 2**20
    print(f"wrote {a.target} ({a.storage}, {size:.1f} MiB; records: {', '.join(copied) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
