"""Redis embedding-cache block; the URL is a secret because it may carry a password."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from blocks.base import CitadelBlock, url_scheme
from citadel.embedders import RedisCache

_SCHEMES = ("redis", "rediss", "unix")


class RedisCacheBlock(CitadelBlock):
    """Where embeddings are cached across runs and workers, and for how long."""

    _block_type_name: ClassVar[str] = "Citadel Redis Cache"
    _block_type_slug: ClassVar[str] = "citadel-redis-cache"
    _description: ClassVar[str] = (
        "Redis cache of computed embeddings, keyed by model and text. An outage slows a run down, never fails it."
    )

    url: SecretStr = Field(
        ..., title="Redis URL", description="e.g. redis://:password@redis:6379/0 (rediss:// for TLS)."
    )
    ttl_s: int = Field(30 * 24 * 3600, gt=0, title="TTL (seconds)", description="How long a cached embedding lives.")

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, value: SecretStr) -> SecretStr:
        if url_scheme(value.get_secret_value()) not in _SCHEMES:
            raise ValueError("the Redis URL must start with redis://, rediss:// or unix://")
        return value

    def build(self) -> RedisCache:
        """A :class:`RedisCache` (it connects on first use; close it with ``aclose``)."""
        return RedisCache(self.url.get_secret_value(), ttl_s=self.ttl_s)

    def settings_overrides(self) -> dict[str, Any]:
        return {"redis_url": self.url.get_secret_value(), "cache_ttl_s": self.ttl_s}
