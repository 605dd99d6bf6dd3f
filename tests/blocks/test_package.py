"""The ``blocks`` package exposes every block type for registration and stays independent of flows and tasks."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from prefect.blocks.core import Block, InvalidBlockRegistration

import blocks
from blocks import BLOCK_TYPES, CitadelBlock

ROOT = Path(__file__).resolve().parents[2]


def test_every_block_type_is_importable_from_the_package() -> None:
    found = {cls for _, cls in inspect.getmembers(blocks) if Block.is_block_class(cls) and not inspect.isabstract(cls)}
    assert found == set(BLOCK_TYPES)
    assert len(BLOCK_TYPES) == 6


@pytest.mark.parametrize("cls", BLOCK_TYPES, ids=lambda cls: cls.__name__)
def test_block_types_are_named_and_described(cls: type[CitadelBlock]) -> None:
    assert issubclass(cls, CitadelBlock)
    assert cls.get_block_type_slug().startswith("citadel-")
    assert cls.get_block_type_slug() == cls._block_type_slug
    assert cls.get_block_type_name().startswith("Citadel ")
    assert cls.get_description()
    assert callable(cls.build) and callable(cls.settings_overrides)


def test_slugs_are_unique() -> None:
    slugs = [cls.get_block_type_slug() for cls in BLOCK_TYPES]
    assert len(set(slugs)) == len(slugs)


@pytest.mark.usefixtures("prefect_server")
async def test_the_abstract_base_is_not_registrable() -> None:
    assert inspect.isabstract(CitadelBlock)
    with pytest.raises(InvalidBlockRegistration):
        await CitadelBlock.aregister_type_and_schema()


def test_a_misspelt_field_is_reported_not_silently_dropped() -> None:
    with pytest.warns(UserWarning, match="ignores unknown field\\(s\\) url; its fields are model, urls"):
        block = blocks.OllamaEmbedderBlock(url="http://gpu:11434")
    assert block.urls == ["http://localhost:11434"]


@pytest.mark.parametrize("cls", BLOCK_TYPES, ids=lambda cls: cls.__name__)
def test_a_dumped_block_validates_back_without_warnings(cls: type[CitadelBlock], recwarn: pytest.WarningsRecorder) -> None:
    required = {"url": "redis://cache:6379/0"} if cls is blocks.RedisCacheBlock else {}
    if cls is blocks.RegistryDatabaseBlock:
        required = {"url": "sqlite:///registry.db"}
    block = cls(**required)
    again = cls.model_validate(block.model_dump())  # the dump carries Prefect's block_type_slug
    assert type(again) is cls
    assert all(getattr(again, field) == getattr(block, field) for field in cls.model_fields)
    assert not [w for w in recwarn if "unknown field" in str(w.message)]


def test_settings_from_blocks_layers_environment_blocks_and_overrides(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from citadel.settings import Settings

    monkeypatch.setenv("CITADEL_COLLECTION", "from-env")
    monkeypatch.setenv("CITADEL_EMBED_RETRIES", "9")
    settings = blocks.settings_from_blocks(
        blocks.OllamaEmbedderBlock(model="all-minilm", urls=["http://gpu:11434"], retries=1),
        blocks.RedisCacheBlock(url="redis://cache:6379/3", ttl_s=60),
        blocks.RegistryDatabaseBlock(url="postgresql://u:pw@db/citadel"),
        blocks.HashingEmbedderBlock(dimensions=64),  # a later block wins
        chunk_size=500,
    )
    assert isinstance(settings, Settings)
    assert settings.collection == "from-env"
    assert (settings.embedder, settings.embedding_dimensions, settings.embed_retries) == ("hashing", 64, 1)
    assert settings.ollama_urls == ["http://gpu:11434"]
    assert (settings.redis_url.get_secret_value(), settings.cache_ttl_s) == ("redis://cache:6379/3", 60)
    assert settings.registry_url == "postgresql+asyncpg://u:pw@db/citadel"
    assert settings.chunk_size == 500
