"""Embedders behind one async interface, the factory that picks one from settings, and the
embedding cache in front of them (in-process LRU or Redis, raw float32 values)."""

from __future__ import annotations

from citadel.embedders.base import Embedder
from citadel.embedders.cache import KEY_PREFIX, CachedEmbedder, CacheStats, EmbeddingCache, LRUCache, RedisCache, build_cache, cache_key
from citadel.embedders.codec import decode_vector, encode_vector
from citadel.embedders.hashing import HashingEmbedder
from citadel.embedders.http import HttpEmbedder
from citadel.embedders.models import KNOWN_MODELS, base_model_name, resolve_dimensions
from citadel.embedders.ollama import OllamaEmbedder
from citadel.embedders.openai import OpenAIEmbedder
from citadel.embedders.wordllama import WordLlamaEmbedder
from citadel.errors import ConfigurationError
from citadel.settings import Settings

__all__ = [
    "CacheStats",
    "CachedEmbedder",
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "HttpEmbedder",
    "KEY_PREFIX",
    "KNOWN_MODELS",
    "LRUCache",
    "OllamaEmbedder",
    "OpenAIEmbedder",
    "RedisCache",
    "WordLlamaEmbedder",
    "base_model_name",
    "build_cache",
    "build_embedder",
    "cache_key",
    "decode_vector",
    "encode_vector",
    "resolve_dimensions",
]


def build_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` ask for; a bad model or size is a :class:`ConfigurationError`."""
    common = dict(
        dimensions=settings.embedding_dimensions,
        batch_size=settings.embed_batch_size,
        timeout_s=settings.embed_timeout_s,
        retries=settings.embed_retries,
        max_input_chars=settings.max_input_chars,
        requests_per_server=settings.embed_requests_per_server,
    )
    try:
        if settings.embedder == "hashing":
            return HashingEmbedder(dimensions=settings.embedding_dimensions or 384)
        if settings.embedder == "wordllama":
            return WordLlamaEmbedder(settings.embedding_dimensions)
        if settings.embedder == "ollama":
            return OllamaEmbedder(settings.embedding_model or "nomic-embed-text", settings.ollama_urls, **common)
        return OpenAIEmbedder(
            settings.embedding_model or "text-embedding-3-small",
            [settings.openai_base_url],
            api_key=settings.openai_api_key,
            **common,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
