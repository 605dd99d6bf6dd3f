"""Stable sharding of a corpus: every file (or inline document) belongs to exactly one shard."""

from __future__ import annotations

import hashlib


def shard_of(key: str, shards: int) -> int:
    """The shard of ``key`` (a file path or document id) among ``shards``; the same on every machine."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def check_shard(shard: int | None, shards: int | None) -> None:
    """Both or neither, and ``0 <= shard < shards``; anything else is a clear ValueError."""
    if (shard is None) != (shards is None):
        raise ValueError("give both shard and shards, or neither")
    if shards is not None and shard is not None and not 0 <= shard < shards:
        raise ValueError(f"shard must be between 0 and {shards - 1}, got {shard}")
