"""Datasets, the demo world, and the on-disk gallery and frame caches built from them."""
