"""Training: presets, data, distributed helpers, the optimiser, the loop (python -m emcl train)."""
