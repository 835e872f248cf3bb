"""The five-seed study of EMCL on the demo world v2 (``python -m emcl study``)."""
