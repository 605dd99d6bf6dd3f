"""Prefect blocks that configure Citadel's backends; ``prefect block register -m blocks`` registers them all."""

from blocks.base import CitadelBlock, settings_from_blocks
from blocks.cache import RedisCacheBlock
from blocks.embedders import HashingEmbedderBlock, OllamaEmbedderBlock, OpenAICompatibleEmbedderBlock
from blocks.qdrant import QdrantBlock
from blocks.registry import RegistryDatabaseBlock

BLOCK_TYPES = (
    OllamaEmbedderBlock,
    OpenAICompatibleEmbedderBlock,
    HashingEmbedderBlock,
    RedisCacheBlock,
    QdrantBlock,
    RegistryDatabaseBlock,
)

__all__ = [
    "BLOCK_TYPES",
    "CitadelBlock",
    "HashingEmbedderBlock",
    "OllamaEmbedderBlock",
    "OpenAICompatibleEmbedderBlock",
    "QdrantBlock",
    "RedisCacheBlock",
    "RegistryDatabaseBlock",
    "settings_from_blocks",
]
