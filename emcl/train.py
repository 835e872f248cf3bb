"""``python -m emcl.train``: the same as ``python -m emcl train`` (emcl/cli/train.py)."""

import sys

from emcl.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
