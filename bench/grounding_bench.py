"""Grounding of the Figure 1 view over the demo world's test split, both word encodings.

    python -m bench.grounding_bench [--json PATH]

For each mode's default knobs (joint: the EMCL checkpoint's training EM; inference: the base
checkpoint with the inference module's EM), the share of links whose frame shows the word's
concept (only concepts visible in some but not all frames), in the subspaces ("auto") and
in the full space, with 95 % bootstrap intervals over the pairs, beside chance
(docs/method.md §5).
"""

from __future__ import annotations

import argparse

from emcl import paths
from emcl.explorer.setup import Setup, load_explorer
from emcl.fileio import atomic_write_json
from emcl.runtime import flush_subnormals


def main() -> None:
    flush_subnormals()  # as the app does (emcl/runtime.py), before torch's threads start
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    explorer = load_explorer(
        Setup(
            base_checkpoint=paths.DEMO_BASE_CHECKPOINT,
            checkpoint=paths.DEMO_EMCL_CHECKPOINT,
            log=lambda message: None,
        )
    )
    figures: dict[str, object] = {}
    for mode in ("joint", "inference"):
        knobs = explorer.defaults(mode)
        rows = {}
        for words in ("tokens", "alone"):
            average = explorer.grounding_average(knobs, words=words)
            if average is None:
                raise SystemExit("no per-frame ground truth: run on the demo world")
            rows[words] = average.to_json()
            low, high = average.auto_interval or (float("nan"), float("nan"))
            print(
                f"{mode:9s} {words:6s} subspaces {100 * average.auto.score:.1f} % "
                f"[{100 * low:.1f}, {100 * high:.1f}]  full space {100 * average.full.score:.1f} %"
                f"  chance {100 * average.auto.chance_score:.1f} %  "
                f"({average.pairs} pairs, {average.auto.scored} links)"
            )
        figures[mode] = {
            "knobs": knobs.to_dict(),
            "encodings": rows,
            "default": explorer.default_words(knobs),
        }
    if args.json:
        atomic_write_json(args.json, figures, indent=2)


if __name__ == "__main__":
    main()
