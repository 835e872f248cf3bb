"""Ranking, block similarity matrices and retrieval metrics over cached embeddings."""
