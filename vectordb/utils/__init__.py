"""Utilities with chromadb's module layout: `vectordb.utils.embedding_functions`."""
