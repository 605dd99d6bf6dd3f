"""Embedding cache: Redis in production, a bounded in-process LRU otherwise.

Keys are ``citadel:embedding:{model}:{sha256 of the exact text}`` and values raw float32 bytes
with a TTL set at write. A Redis outage makes a run slower, never failed: errors count as misses
and the cache steps aside for a while before trying Redis again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

from citadel import metrics
from citadel.embedders.codec import decode_vector, encode_vector
from citadel.hashing import sha256_text

if TYPE_CHECKING:
    from citadel.embedders.base import Embedder

log = logging.getLogger(__name__)

KEY_PREFIX = "citadel:embedding"


def cache_key(model: str, text: str) -> str:
    """The cache key of ``text`` embedded by ``model``."""
    return f"{KEY_PREFIX}:{model}:{sha256_text(text)}"


@dataclass
class CacheStats:
    """Counters of one cache since it was built."""

    hits: int = 0
    misses: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors}


class EmbeddingCache(Protocol):
    stats: CacheStats

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def count_lookups(cache: str, hits: int, looked_up: int) -> None:
    """Add one read of ``looked_up`` keys to the cache's hit and miss counters."""
    if hits:
        metrics.CACHE_HITS.labels(cache).inc(hits)
    if looked_up > hits:
        metrics.CACHE_MISSES.labels(cache).inc(looked_up - hits)


@dataclass
class LRUCache:
    """A bounded in-process cache; the oldest entries go first when it is full."""

    max_items: int = 50_000
    max_bytes: int = 32 * 1024 * 1024  # of keys and vectors: the bound that matters at large dimensions
    stats: CacheStats = field(default_factory=CacheStats)
    name: str = "memory"  # the metrics' cache label
    _data: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    _bytes: int = 0

    def __post_init__(self) -> None:
        metrics.CACHE_ERRORS.labels(self.name)  # series that exist from the start: a rate of 0, not absent

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = []
        hits = 0
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                hits += 1
            found.append(value)
        count_lookups(self.name, hits, len(keys))
        return found

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if self.max_items <= 0 or self.max_bytes <= 0:
            return
        for key, value in items:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old)
            self._data[key] = value
            self._bytes += len(key) + len(value)
        while len(self._data) > self.max_items or self._bytes > self.max_bytes:
            key, value = self._data.popitem(last=False)
            self._bytes -= len(key) + len(value)

    @property
    def size_bytes(self) -> int:
        """Bytes of keys and vectors held (what the ``max_bytes`` bound counts)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisCache:
    """Redis-backed cache: MGET and pipelined ``SET EX`` in chunks of ``batch`` keys."""

    def __init__(
        self, url: str, *, ttl_s: int = 30 * 24 * 3600, batch: int = 100, cooldown_s: float = 30.0, max_connections: int = 64
    ) -> None:
        import redis.asyncio as redis

        self.url = url
        self.ttl_s = ttl_s
        self.batch = batch
        self.cooldown_s = cooldown_s
        self.stats = CacheStats()
        metrics.CACHE_ERRORS.labels("redis")  # a series from the start: a rate of 0, not absent
        # A bounded pool that waits for a free connection: an unbounded one opens a connection per
        # concurrent request under load, and redis-py's default fails with "Too many connections".
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=5.0, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._down_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception, action: str) -> None:
        self.stats.errors += 1
        metrics.CACHE_ERRORS.labels("redis").inc()
        self._down_until = time.monotonic() + self.cooldown_s
        log.warning("embedding cache unavailable (%s failed: %s); continuing without it for %.0fs", action, exc, self.cooldown_s)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys or not self._available():
            count_lookups("redis", 0, len(keys))
            return [None] * len(keys)
        found: list[bytes | None] = []
        try:
            for start in range(0, len(keys), self.batch):
                # Without decode_responses Redis answers bytes (or None for a miss).
                found.extend(cast("list[bytes | None]", await self._redis.mget(keys[start : start + self.batch])))
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to a miss
            self._failed(exc, "read")
            count_lookups("redis", 0, len(keys))
            return [None] * len(keys)
        count_lookups("redis", sum(value is not None for value in found), len(keys))
        return found

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items or not self._available():
            return
        try:
            for start in range(0, len(items), self.batch):
                pipe = self._redis.pipeline(transaction=False)
                for key, value in items[start : start + self.batch]:
                    pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, "write")

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass
class EmbedResult:
    """Vectors in input order, with how many came from the cache and how many were computed."""

    vectors: np.ndarray
    cache_hits: int
    embedded: int

    def as_dict(self, model: str, dimensions: int) -> dict[str, object]:
        """The JSON shape flows, workflow steps and the API return."""
        return {
            "model": model,
            "dimensions": dimensions,
            "vectors": self.vectors.tolist(),
            "cache_hits": self.cache_hits,
            "embedded": self.embedded,
        }


class CachedEmbedder:
    """Embeds through the cache: one batched read, one embedder call for the unique misses, one batched write."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache

    @property
    def model(self) -> str:
        return self.embedder.model

    @property
    def dimensions(self) -> int:
        return self.embedder.dimensions

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        dims = self.embedder.dimensions
        vectors = np.zeros((len(texts), dims), dtype=np.float32)
        keys = [cache_key(self.embedder.model, text) for text in texts]
        cached = await self.cache.get_many(keys)
        missing: dict[str, list[int]] = {}
        hits = 0
        for row, (key, value) in enumerate(zip(keys, cached, strict=True)):
            if value is not None:
                try:
                    vectors[row] = decode_vector(value, dims)
                    hits += 1
                    continue
                except ValueError:
                    pass  # a corrupt or foreign value is a miss, rewritten below
            missing.setdefault(key, []).append(row)
        self.cache.stats.hits += hits
        self.cache.stats.misses += len(texts) - hits
        if missing:
            first_rows = [rows[0] for rows in missing.values()]
            computed = await self.embedder.embed([texts[row] for row in first_rows])
            writes = [(key, encode_vector(vector)) for key, vector in zip(missing, computed, strict=True)]
            if len(first_rows) == len(texts):  # every text new and distinct (a first index): the rows are in order
                vectors = computed
            else:
                for rows, vector in zip(missing.values(), computed, strict=True):
                    vectors[rows] = vector
            await self.cache.set_many(writes)
        return EmbedResult(vectors, hits, len(missing))


def build_cache(redis_url: str | None, *, ttl_s: int, lru_size: int, lru_mb: int = 32) -> EmbeddingCache:
    """Redis when a URL is configured, else the in-process LRU (bounded in vectors and in megabytes)."""
    if redis_url:
        return RedisCache(redis_url, ttl_s=ttl_s)
    return LRUCache(max_items=lru_size, max_bytes=lru_mb * 1024 * 1024)
