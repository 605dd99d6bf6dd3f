"""Citadel core: embedders, embedding cache, vector store, document registry and chunking.

This package never imports Prefect; flows and tasks wrap it, and the CLI reuses it directly.
"""

__version__ = "0.1.0"
