"""``python -m emcl world``: build the demo world (emcl/data/world/) in a folder."""

from __future__ import annotations

import argparse

from emcl.data import world as demo_worlds
from emcl.paths import DEMO_WORLD, DEMO_WORLDS


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``), build the world and say where it went."""
    ap = argparse.ArgumentParser(
        prog="python -m emcl world", description=demo_worlds.__doc__.split("\n")[0]
    )
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--version", type=int, choices=sorted(DEMO_WORLDS), default=None,
                    help="world version (2, the app's: distractors, textures, camera motion, "
                         "multi-event clips, emcl/data/world/v2.py; 1: the first)")  # fmt: skip
    ap.add_argument("--train", type=int, default=None, help="training clips (version default)")
    ap.add_argument("--test", type=int, default=None, help="test clips (version default)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args(argv)
    world = DEMO_WORLD if a.version is None else DEMO_WORLDS[a.version]
    a.version = world.version
    a.train = world.n_train if a.train is None else a.train
    a.test = world.n_test if a.test is None else a.test
    a.seed = world.seed if a.seed is None else a.seed
    meta = demo_worlds.build_world(a.out, a.train, a.test, a.seed, workers=a.workers,
                                   progress=True, version=a.version)  # fmt: skip
    print(f"wrote {a.train} train + {a.test} test clips to {a.out} in {meta['seconds']} s "
          f"({meta['workers']} workers)")  # fmt: skip
    if meta.get("ceiling_t2v_R1") is not None:
        print(f"ambiguity ceiling (best expected t2v R@1 on the test split): "
              f"{meta['ceiling_t2v_R1']} %")  # fmt: skip
