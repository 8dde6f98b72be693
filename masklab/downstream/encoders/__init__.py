"""Texts -> embeddings: encoder kinds and loading, chunking and batching, backends, pooling."""
