"""Float32 vector codec for the embedding cache: raw little-endian bytes, never pickle or JSON."""

from __future__ import annotations

import numpy as np


def encode_vector(vector: np.ndarray | list[float]) -> bytes:
    """Pack one vector as little-endian float32 bytes (4 bytes per dimension)."""
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vector(data: bytes, dimensions: int | None = None) -> np.ndarray:
    """Unpack bytes written by :func:`encode_vector`; a wrong length is a ``ValueError``."""
    if len(data) % 4:
        raise ValueError(f"cached vector has {len(data)} bytes, not a multiple of 4")
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if dimensions is not None and vector.shape[0] != dimensions:
        raise ValueError(f"cached vector has {vector.shape[0]} dimensions, expected {dimensions}")
    return vector
