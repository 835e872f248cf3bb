"""``python -m emcl.index build|query|export``: the command line of emcl/cli/index.py."""

import sys

from emcl.cli.index import main

if __name__ == "__main__":
    sys.exit(main())
