"""Evaluation of base vs EMCL retrieval: the protocol and its reports (python -m emcl evaluate)."""
