"""Embedding cache: key format, LRU bounds, Redis storage on the real server, and CachedEmbedder."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.embedders.cache import KEY_PREFIX, CachedEmbedder, CacheStats, LRUCache, RedisCache, build_cache, cache_key
from citadel.embedders.codec import decode_vector, encode_vector
from citadel.embedders.hashing import HashingEmbedder
from citadel.hashing import sha256_text

DIMS = 16


class CountingEmbedder:
    """A HashingEmbedder with its own model name that records every batch it is asked for."""

    def __init__(self, model: str, dimensions: int = DIMS) -> None:
        self.inner = HashingEmbedder(dimensions)
        self.model = model
        self.dimensions = dimensions
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return await self.inner.embed(texts)

    def expected(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_sync(texts)


def unique_model() -> str:
    return f"test-model-{uuid.uuid4().hex}"


@pytest.fixture
def plain_redis(redis_url: str):
    """A synchronous client on the test database, for checking what the cache wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def redis_cache(redis_url: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_url, ttl_s=600, batch=3)
    yield cache
    await cache.aclose()


# cache_key ---------------------------------------------------------------------------------
def test_cache_key_format() -> None:
    """Keys are citadel:embedding:{model}:{sha256 of the text}."""
    assert KEY_PREFIX == "citadel:embedding"
    assert cache_key("nomic-embed-text", "hello") == f"citadel:embedding:nomic-embed-text:{sha256_text('hello')}"
    assert re.fullmatch(r"citadel:embedding:m:[0-9a-f]{64}", cache_key("m", ""))


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30), st.text(max_size=100), st.text(max_size=100))
def test_cache_key_separates_models_and_texts(model_a: str, model_b: str, text_a: str, text_b: str) -> None:
    """Two keys are equal exactly when both model and text are equal."""
    same = cache_key(model_a, text_a) == cache_key(model_b, text_b)
    assert same == (model_a == model_b and text_a == text_b)


# LRUCache ----------------------------------------------------------------------------------
async def test_lru_evicts_oldest_first() -> None:
    """When full, the least recently written entry goes first."""
    cache = LRUCache(max_items=3)
    await cache.set_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
    await cache.set_many([("d", b"4")])
    assert len(cache) == 3
    assert await cache.get_many(["a", "b", "c", "d"]) == [None, b"2", b"3", b"4"]


async def test_lru_read_refreshes_entry() -> None:
    """Reading an entry makes it the most recent, so it survives the next eviction."""
    cache = LRUCache(max_items=3)
    await cache.set_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
    assert await cache.get_many(["a"]) == [b"1"]
    await cache.set_many([("d", b"4"), ("e", b"5")])
    assert await cache.get_many(["a", "b", "c", "d", "e"]) == [b"1", None, None, b"4", b"5"]


async def test_lru_rewrite_refreshes_and_replaces() -> None:
    """Writing an existing key replaces its value and makes it the most recent."""
    cache = LRUCache(max_items=2)
    await cache.set_many([("a", b"1"), ("b", b"2")])
    await cache.set_many([("a", b"9"), ("c", b"3")])
    assert await cache.get_many(["a", "b", "c"]) == [b"9", None, b"3"]


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=20), st.lists(st.integers(min_value=0, max_value=40), max_size=80))
def test_lru_never_exceeds_bound(max_items: int, keys: list[int]) -> None:
    """However many writes arrive, the cache holds at most max_items, the latest distinct keys."""
    import asyncio

    cache = LRUCache(max_items=max_items)
    for key in keys:
        asyncio.run(cache.set_many([(str(key), b"v")]))
        assert len(cache) <= max_items
    latest: list[str] = []
    for key in reversed(keys):
        if str(key) not in latest:
            latest.append(str(key))
    kept = set(latest[:max_items])
    every = sorted({str(key) for key in keys})
    found = asyncio.run(cache.get_many(every))
    assert {key for key, value in zip(every, found, strict=True) if value is not None} == kept


async def test_lru_of_size_zero_stores_nothing() -> None:
    """lru_size 0 disables the in-process cache."""
    cache = LRUCache(max_items=0)
    await cache.set_many([("a", b"1")])
    assert len(cache) == 0
    assert await cache.get_many(["a"]) == [None]


async def test_lru_is_bounded_in_bytes_as_well_as_in_vectors() -> None:
    """Large vectors fill the megabytes first: the oldest go, the newest stay, and a rewritten key
    is counted once, so an index run's memory does not grow with its corpus."""
    vector = b"v" * 3072  # a 768-dimensional float32 vector
    entry = 3 + 3072  # keys k10 to k99: three characters
    cache = LRUCache(max_items=50_000, max_bytes=10 * entry)
    await cache.set_many([(f"k{n}", vector) for n in range(10, 35)])
    assert len(cache) == 10 and cache.size_bytes == 10 * entry
    assert await cache.get_many(["k24", "k25", "k34"]) == [None, vector, vector]
    await cache.set_many([("k34", vector), ("k34", vector)])
    assert len(cache) == 10 and cache.size_bytes == 10 * entry
    assert (await cache.get_many(["k25"]))[0] == vector
    off = LRUCache(max_bytes=0)
    await off.set_many([("a", vector)])
    assert len(off) == 0


def test_build_cache_chooses_backend(redis_url: str) -> None:
    """A Redis URL gives a RedisCache with the TTL; none gives a bounded LRU."""
    lru = build_cache(None, ttl_s=10, lru_size=7, lru_mb=3)
    assert isinstance(lru, LRUCache) and lru.max_items == 7 and lru.max_bytes == 3 * 1024 * 1024
    remote = build_cache(redis_url, ttl_s=42, lru_size=7)
    assert isinstance(remote, RedisCache) and remote.ttl_s == 42


def test_cache_stats_as_dict() -> None:
    """Stats serialise with every counter."""
    assert CacheStats(1, 2, 3).as_dict() == {"hits": 1, "misses": 2, "errors": 3}


# RedisCache against the real server --------------------------------------------------------
async def test_redis_values_are_raw_float32_bytes(redis_cache: RedisCache, plain_redis: redis.Redis) -> None:
    """What the cache writes is exactly encode_vector's bytes, readable by any client."""
    model = unique_model()
    vector = np.array([0.25, -1.5, 3.0, 1e-3], dtype=np.float32)
    key = cache_key(model, "some text")
    await redis_cache.set_many([(key, encode_vector(vector))])
    raw = plain_redis.get(key)
    assert raw == encode_vector(vector)
    assert len(raw) == 4 * vector.size
    np.testing.assert_array_equal(decode_vector(raw, vector.size), vector)
    assert await redis_cache.get_many([key]) == [raw]


async def test_redis_sets_ttl(redis_url: str, plain_redis: redis.Redis) -> None:
    """Every write carries the configured expiry."""
    cache = RedisCache(redis_url, ttl_s=120)
    try:
        keys = [cache_key(unique_model(), str(i)) for i in range(3)]
        await cache.set_many([(k, encode_vector([1.0])) for k in keys])
        for key in keys:
            ttl = plain_redis.ttl(key)
            assert 0 < ttl <= 120
    finally:
        await cache.aclose()


async def test_redis_batches_reads_and_writes_beyond_batch_size(redis_cache: RedisCache, plain_redis: redis.Redis) -> None:
    """More keys than one MGET/pipeline batch still come back complete and in order."""
    model = unique_model()
    assert redis_cache.batch == 3
    items = [(cache_key(model, f"text {i}"), encode_vector([float(i), float(-i)])) for i in range(11)]
    await redis_cache.set_many(items)
    assert all(plain_redis.exists(key) for key, _ in items)
    missing = cache_key(model, "never written")
    keys = [key for key, _ in items]
    keys.insert(5, missing)
    found = await redis_cache.get_many(keys)
    expected: list[bytes | None] = [value for _, value in items]
    expected.insert(5, None)
    assert found == expected
    assert redis_cache.stats.errors == 0


async def test_redis_empty_requests(redis_cache: RedisCache) -> None:
    """Empty reads and writes are no-ops."""
    assert await redis_cache.get_many([]) == []
    await redis_cache.set_many([])
    await redis_cache.ping()
    assert redis_cache.stats.errors == 0


# CachedEmbedder ----------------------------------------------------------------------------
async def test_cached_embedder_misses_then_hits(redis_cache: RedisCache) -> None:
    """The first call embeds everything; the second is served from Redis with identical vectors."""
    embedder = CountingEmbedder(unique_model())
    cached = CachedEmbedder(embedder, redis_cache)
    assert cached.model == embedder.model and cached.dimensions == DIMS
    texts = [f"document number {i} about caching" for i in range(7)]

    first = await cached.embed(texts)
    assert (first.cache_hits, first.embedded) == (0, 7)
    assert embedder.calls == [texts]
    np.testing.assert_allclose(first.vectors, embedder.expected(texts), rtol=0, atol=0)
    assert redis_cache.stats.as_dict() == {"hits": 0, "misses": 7, "errors": 0}

    second = await cached.embed(texts)
    assert (second.cache_hits, second.embedded) == (7, 0)
    assert len(embedder.calls) == 1, "no embedder call when everything is cached"
    np.testing.assert_array_equal(second.vectors, first.vectors)
    assert second.vectors.dtype == np.float32
    assert redis_cache.stats.as_dict() == {"hits": 7, "misses": 7, "errors": 0}


async def test_cached_embedder_partial_hits(redis_cache: RedisCache) -> None:
    """Only the texts not cached yet reach the embedder, and rows keep input order."""
    embedder = CountingEmbedder(unique_model())
    cached = CachedEmbedder(embedder, redis_cache)
    await cached.embed(["alpha", "beta"])
    result = await cached.embed(["gamma", "alpha", "delta", "beta"])
    assert embedder.calls[-1] == ["gamma", "delta"]
    assert (result.cache_hits, result.embedded) == (2, 2)
    np.testing.assert_array_equal(result.vectors, embedder.expected(["gamma", "alpha", "delta", "beta"]))


async def test_cached_embedder_embeds_duplicates_once(redis_cache: RedisCache) -> None:
    """A text repeated within one call is embedded once and fills every row it occupies."""
    embedder = CountingEmbedder(unique_model())
    cached = CachedEmbedder(embedder, redis_cache)
    texts = ["same", "other", "same", "same", "other"]
    result = await cached.embed(texts)
    assert embedder.calls == [["same", "other"]]
    assert result.embedded == 2
    assert result.cache_hits == 0
    np.testing.assert_array_equal(result.vectors, embedder.expected(texts))
    assert redis_cache.stats.misses == 5


async def test_cached_embedder_with_lru() -> None:
    """The in-process cache serves repeats the same way."""
    embedder = CountingEmbedder(unique_model())
    cached = CachedEmbedder(embedder, LRUCache(max_items=10))
    await cached.embed(["one", "two"])
    result = await cached.embed(["two", "one"])
    assert (result.cache_hits, result.embedded) == (2, 0)
    assert len(embedder.calls) == 1
    np.testing.assert_array_equal(result.vectors, embedder.expected(["two", "one"]))


async def test_cached_embedder_empty_input(redis_cache: RedisCache) -> None:
    """No texts means no call and an empty (0, dims) result."""
    embedder = CountingEmbedder(unique_model())
    result = await CachedEmbedder(embedder, redis_cache).embed([])
    assert result.vectors.shape == (0, DIMS)
    assert embedder.calls == []


async def test_redis_outage_degrades_to_embedding() -> None:
    """With Redis unreachable, embedding still returns the right vectors; errors are counted, not raised."""
    cache = RedisCache("redis://127.0.0.1:1", ttl_s=60, cooldown_s=30.0)
    try:
        embedder = CountingEmbedder(unique_model())
        cached = CachedEmbedder(embedder, cache)
        texts = ["outage one", "outage two"]
        started = time.monotonic()
        result = await cached.embed(texts)
        np.testing.assert_array_equal(result.vectors, embedder.expected(texts))
        assert (result.cache_hits, result.embedded) == (0, 2)
        assert cache.stats.errors >= 1
        errors = cache.stats.errors
        again = await cached.embed(texts)
        np.testing.assert_array_equal(again.vectors, embedder.expected(texts))
        assert cache.stats.errors == errors, "during the cooldown Redis is not tried again"
        assert cache.stats.misses == 4
        assert time.monotonic() - started < 15
    finally:
        await cache.aclose()


@pytest.mark.parametrize("corrupt", [b"\x01\x02\x03", encode_vector([1.0] * (DIMS - 1)), b""])
async def test_corrupt_cached_value_is_a_miss_and_rewritten(
    redis_cache: RedisCache, plain_redis: redis.Redis, corrupt: bytes
) -> None:
    """A cached value of the wrong length is ignored, recomputed and overwritten with good bytes."""
    embedder = CountingEmbedder(unique_model())
    cached = CachedEmbedder(embedder, redis_cache)
    key = cache_key(embedder.model, "corrupted text")
    plain_redis.set(key, corrupt, ex=600)
    result = await cached.embed(["corrupted text"])
    assert (result.cache_hits, result.embedded) == (0, 1)
    expected = embedder.expected(["corrupted text"])
    np.testing.assert_array_equal(result.vectors, expected)
    assert plain_redis.get(key) == encode_vector(expected[0])
    assert redis_cache.stats.errors == 0
    again = await cached.embed(["corrupted text"])
    assert again.cache_hits == 1
