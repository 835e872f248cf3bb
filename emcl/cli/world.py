"""``python -m emcl world``: build the demo world (emcl/data/demo_world.py) in a folder."""

from __future__ import annotations

import argparse

from emcl.data import demo_world
from emcl.paths import DEMO_WORLD_SIZE


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``), build the world and say where it went."""
    ap = argparse.ArgumentParser(
        prog="python -m emcl world", description=demo_world.__doc__.split("\n")[0]
    )
    ap.add_argument("--out", required=True, help="output folder")
    n_train, n_test, seed = DEMO_WORLD_SIZE  # the app's default world
    ap.add_argument("--train", type=int, default=n_train)
    ap.add_argument("--test", type=int, default=n_test)
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--version", type=int, choices=demo_world.VERSIONS, default=demo_world.VERSION,
                    help="world version (2: distractors, textures, camera motion, multi-event "
                         "clips; emcl/data/world_v2.py)")  # fmt: skip
    a = ap.parse_args(argv)
    meta = demo_world.build_world(a.out, a.train, a.test, a.seed, a.workers, progress=True,
                                  version=a.version)  # fmt: skip
    print(f"wrote {a.train} train + {a.test} test clips to {a.out} in {meta['seconds']} s "
          f"({meta['workers']} workers)")  # fmt: skip
    if meta.get("ceiling_t2v_R1") is not None:
        print(f"ambiguity ceiling (best expected t2v R@1 on the test split): "
              f"{meta['ceiling_t2v_R1']} %")  # fmt: skip


if __name__ == "__main__":
    main()
