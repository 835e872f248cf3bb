"""Guarded video decoding, frame sampling, probing and writing (docs/reliability.md §1)."""
