"""A deterministic lexical embedder: signed feature hashing of words and character n-grams.

It needs no model server, so the embedded default runs anywhere. It captures shared words and
spellings, not meaning: use Ollama or an OpenAI-compatible server for semantic search.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

from citadel.embedders.base import normalise_rows

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Signed feature hashing (the "hashing trick") into ``dimensions`` buckets, L2-normalised."""

    def __init__(self, dimensions: int = 384, ngram: int = 3) -> None:
        if dimensions < 8:
            raise ValueError(f"hashing embedder needs at least 8 dimensions, got {dimensions}")
        self.dimensions = dimensions
        self.ngram = ngram
        self.model = f"citadel-hashing-v1-{dimensions}d"

    def _features(self, text: str) -> list[int]:
        words = _WORD.findall(text.lower())
        n = self.ngram
        features = [zlib.crc32(word.encode()) for word in words]
        for word in words:
            padded = f"<{word}>"
            features.extend(zlib.crc32(padded[i : i + n].encode()) ^ 0x9E3779B9 for i in range(len(padded) - n + 1))
        return features

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``; CPU-bound, so async callers run it in a thread."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            hashes = np.fromiter(self._features(text), dtype=np.uint32)
            if hashes.size == 0:
                continue
            buckets = (hashes % self.dimensions).astype(np.intp)
            signs = np.where(hashes & 0x80000000, -1.0, 1.0).astype(np.float32)
            out[row] = np.bincount(buckets, weights=signs, minlength=self.dimensions)
        return normalise_rows(out)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_sync(texts)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
