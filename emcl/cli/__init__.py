"""Command-line entry points, run through ``python -m emcl <command>`` (emcl/__main__.py)."""
