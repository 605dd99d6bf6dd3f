"""The one small interface every embedder implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into float32 vectors of a fixed size.

    ``model`` names the vector space: vectors of different models never share a collection.
    """

    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` in order, as an array of shape ``(len(texts), dimensions)``."""
        ...

    async def check(self) -> None:
        """Raise a clear error when the backend or model is unavailable."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalise each row in place; an all-zero row stays zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix
