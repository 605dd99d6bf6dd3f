"""The Redis cache block builds a RedisCache that stores and expires embeddings in the real Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as redis
from pydantic import ValidationError

from blocks import RedisCacheBlock
from citadel.embedders import HashingEmbedder
from citadel.embedders.cache import CachedEmbedder, LRUCache, RedisCache, build_cache, cache_key
from citadel.embedders.codec import encode_vector
from citadel.settings import Settings


async def test_redis_block_builds_a_working_redis_cache(redis_url: str) -> None:
    cache = RedisCacheBlock(url=redis_url, ttl_s=120).build()
    key = cache_key("block-test", f"text {uuid.uuid4()}")
    value = encode_vector(np.arange(8, dtype=np.float32))
    raw = redis.Redis.from_url(redis_url)
    try:
        assert isinstance(cache, RedisCache)
        assert cache.ttl_s == 120
        await cache.ping()
        assert await cache.get_many([key]) == [None]
        await cache.set_many([(key, value)])
        assert await cache.get_many([key]) == [value]
        assert 0 < await raw.ttl(key) <= 120
        assert cache.stats.errors == 0
    finally:
        await raw.delete(key)
        await raw.aclose()
        await cache.aclose()


async def test_built_cache_serves_a_cached_embedder(redis_url: str) -> None:
    cache = RedisCacheBlock(url=redis_url, ttl_s=60).build()
    embedder = CachedEmbedder(HashingEmbedder(dimensions=16), cache)
    texts = [f"cache block {uuid.uuid4()}", f"cache block {uuid.uuid4()}"]
    raw = redis.Redis.from_url(redis_url)
    try:
        first = await embedder.embed(texts)
        second = await embedder.embed(texts)
        assert (first.cache_hits, first.embedded) == (0, 2)
        assert (second.cache_hits, second.embedded) == (2, 0)
        np.testing.assert_array_equal(first.vectors, second.vectors)
    finally:
        await raw.delete(*[cache_key(embedder.model, text) for text in texts])
        await raw.aclose()
        await cache.aclose()


def test_redis_block_refuses_a_url_that_is_not_redis_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        RedisCacheBlock(url="http://user:hunter2@cache:6379/0")
    assert "redis://" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValidationError):
        RedisCacheBlock(url="redis://cache:6379/0", ttl_s=0)
    assert RedisCacheBlock(url="rediss://:pw@cache:6380/1").ttl_s == Settings.model_fields["cache_ttl_s"].default


def test_redis_overrides_configure_the_cache_through_settings(data_dir: Path, redis_url: str) -> None:
    settings = Settings(**RedisCacheBlock(url=redis_url, ttl_s=90).settings_overrides())
    assert (settings.redis_url.get_secret_value(), settings.cache_ttl_s) == (redis_url, 90)
    cache = build_cache(settings.redis_url.get_secret_value(), ttl_s=settings.cache_ttl_s, lru_size=settings.lru_size)
    assert isinstance(cache, RedisCache) and cache.ttl_s == 90
    assert Settings().redis_url is None
    assert isinstance(build_cache(None, ttl_s=1, lru_size=1), LRUCache)
