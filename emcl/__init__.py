"""EMCL Explorer: EMCL (Expectation-Maximization Contrastive Learning) for text-video retrieval."""

__version__ = "0.1.0"
