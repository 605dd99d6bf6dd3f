"""The block documents that configure what a Settings configures: ``citadel setup`` saves them, so
that deployed runs read their backends from blocks an operator edits in the Prefect UI."""

from __future__ import annotations

from typing import Any

from blocks.base import CitadelBlock
from blocks.cache import RedisCacheBlock
from blocks.embedders import HashingEmbedderBlock, OllamaEmbedderBlock, OpenAICompatibleEmbedderBlock
from blocks.qdrant import QdrantBlock
from blocks.registry import RegistryDatabaseBlock
from citadel.settings import Settings


def _embedder(settings: Settings) -> CitadelBlock | None:
    http: dict[str, Any] = {
        "dimensions": settings.embedding_dimensions, "timeout_s": settings.embed_timeout_s, "retries": settings.embed_retries,
        "batch_size": settings.embed_batch_size, "max_input_chars": settings.max_input_chars,
    }
    if settings.embedding_model:  # else each block's default, the embedder's own
        http["model"] = settings.embedding_model
    if settings.embedder == "ollama":
        return OllamaEmbedderBlock(urls=settings.ollama_urls, **http)
    if settings.embedder == "openai":
        return OpenAICompatibleEmbedderBlock(base_url=settings.openai_base_url, api_key=settings.openai_api_key, **http)
    if settings.embedder == "hashing":
        return HashingEmbedderBlock(dimensions=settings.embedding_dimensions or 384)
    return None  # WordLlama runs inside each process from its wheel: nothing to configure


def blocks_for(settings: Settings) -> list[CitadelBlock]:
    """A block for each backend ``settings`` names: the embedder (a server, or the hashing one), the
    Redis cache, the Qdrant server and the registry database; none for an embedded default."""
    found: list[CitadelBlock | None] = [_embedder(settings)]
    if settings.redis_url is not None:
        found.append(RedisCacheBlock(url=settings.redis_url, ttl_s=settings.cache_ttl_s))
    if settings.qdrant_url:
        found.append(QdrantBlock(url=settings.qdrant_url, api_key=settings.qdrant_api_key, batch_size=settings.upsert_batch_size))
    if settings.database_url is not None:
        found.append(RegistryDatabaseBlock(url=settings.database_url))
    return [block for block in found if block is not None]
