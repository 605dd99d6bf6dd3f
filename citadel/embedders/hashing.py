"""A deterministic lexical embedder: signed feature hashing of words and character n-grams.

It needs no model server, so the embedded default runs anywhere. It captures shared words and
spellings, not meaning: use Ollama or an OpenAI-compatible server for semantic search.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import re
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from citadel import metrics
from citadel.embedders.base import normalise_rows

log = logging.getLogger(__name__)

IN_PROCESS = "in-process"  # the server label of embeddings computed here

_WORD = re.compile(r"\w+", re.UNICODE)

# Batches at least this large are hashed in a worker process, the way a model server embeds
# elsewhere: the caller's event loop stays free to write the previous batch meanwhile.
OFFLOAD_MIN_TEXTS = 32

_pool: ProcessPoolExecutor | None = None
_pool_broken = False
_pool_lock = threading.Lock()


def _worker_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawn, not fork: the parent runs threads (Prefect, SQLite, httpx) that fork would copy mid-state.
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        return _pool


def _features(text: str, ngram: int) -> list[int]:
    words = _WORD.findall(text.lower())
    features = [zlib.crc32(word.encode()) for word in words]
    for word in words:
        padded = f"<{word}>"
        features.extend(zlib.crc32(padded[i : i + ngram].encode()) ^ 0x9E3779B9 for i in range(len(padded) - ngram + 1))
    return features


def hash_texts(texts: Sequence[str], dimensions: int, ngram: int) -> np.ndarray:
    """The hashing embedding of ``texts``: one L2-normalised float32 row per text."""
    out = np.zeros((len(texts), dimensions), dtype=np.float32)
    for row, text in enumerate(texts):
        hashes = np.fromiter(_features(text, ngram), dtype=np.uint32)
        if hashes.size == 0:
            continue
        buckets = (hashes % dimensions).astype(np.intp)
        signs = np.where(hashes & 0x80000000, -1.0, 1.0).astype(np.float32)
        out[row] = np.bincount(buckets, weights=signs, minlength=dimensions)
    return normalise_rows(out)


class HashingEmbedder:
    """Signed feature hashing (the "hashing trick") into ``dimensions`` buckets, L2-normalised."""

    def __init__(self, dimensions: int = 384, ngram: int = 3, *, offload: bool = True) -> None:
        if dimensions < 8:
            raise ValueError(f"hashing embedder needs at least 8 dimensions, got {dimensions}")
        self.dimensions = dimensions
        self.ngram = ngram
        self.offload = offload
        self.model = f"citadel-hashing-v1-{dimensions}d"

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` computed in this thread."""
        return hash_texts(texts, self.dimensions, self.ngram)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = await self._embed(texts)
        # Counted like a server's answers, so that the dashboards show the embedded default too.
        metrics.EMBED_REQUESTS.labels(IN_PROCESS, self.model).inc()
        metrics.EMBED_TEXTS.labels(IN_PROCESS, self.model).inc(len(texts))
        metrics.EMBED_LATENCY.labels(IN_PROCESS, self.model).observe(time.perf_counter() - started)
        return vectors

    async def _embed(self, texts: Sequence[str]) -> np.ndarray:
        global _pool, _pool_broken
        if not self.offload or _pool_broken or len(texts) < OFFLOAD_MIN_TEXTS:
            return self.embed_sync(texts)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_worker_pool(), hash_texts, list(texts), self.dimensions, self.ngram)
        except (BrokenProcessPool, OSError) as exc:
            # A worker cannot start where the main module cannot be re-imported (code read from
            # standard input, some embedded interpreters): hash in-process from now on.
            log.warning("hashing worker process unavailable (%s); hashing in-process", exc)
            with _pool_lock:
                _pool_broken, _pool = True, None
            return self.embed_sync(texts)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
