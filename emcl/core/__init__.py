"""The EMCL maths: EM subspaces, EMCL-Net block EM, logits, the subspace view."""
