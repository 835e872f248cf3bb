"""``python -m emcl.study``: the same as ``python -m emcl study`` (emcl/cli/study.py)."""

import sys

from emcl.cli.study import main

if __name__ == "__main__":
    sys.exit(main())
