"""A flow run's settings from the blocks its deployment names (CITADEL_BLOCKS), on a real Prefect
API: the blocks over the environment, the run's embedder choice over both, and ``citadel setup``'s
blocks saved from a configuration and never overwritten once an operator may have edited them."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from blocks import HashingEmbedderBlock, OllamaEmbedderBlock, QdrantBlock, RedisCacheBlock, RegistryDatabaseBlock
from citadel.errors import ConfigurationError
from citadel.settings import EmbedderConfig, Settings
from deployments.blocksetup import save_blocks
from tasks.runsettings import run_settings

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.system]


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def test_named_blocks_configure_a_run_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _name()
    await OllamaEmbedderBlock(urls=["http://gpu-a:11434", "http://gpu-b:11434"], model="all-minilm").save(name)
    await QdrantBlock(url="http://qdrant:6333", api_key="qdrant-key").save(name)
    monkeypatch.setenv("CITADEL_EMBEDDER", "hashing")
    monkeypatch.setenv("CITADEL_QDRANT_URL", "http://elsewhere:6333")
    monkeypatch.setenv("CITADEL_COLLECTION", "from-env")
    monkeypatch.setenv("CITADEL_BLOCKS", name)
    settings = await run_settings()
    assert (settings.embedder, settings.embedding_model, settings.ollama_urls) == ("ollama", "all-minilm", ["http://gpu-a:11434", "http://gpu-b:11434"])
    assert settings.qdrant_url == "http://qdrant:6333" and settings.qdrant_api_key == SecretStr("qdrant-key")
    assert settings.collection == "from-env"  # what no block sets stays the environment's
    # The run's own embedder choice goes over the blocks.
    chosen = await run_settings(EmbedderConfig(model="nomic-embed-text"))
    assert (chosen.embedder, chosen.embedding_model) == ("ollama", "nomic-embed-text")


async def test_without_blocks_a_run_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITADEL_EMBEDDER", "hashing")
    monkeypatch.delenv("CITADEL_BLOCKS", raising=False)
    assert (await run_settings()).embedder == "hashing"
    monkeypatch.setenv("CITADEL_BLOCKS", _name())  # named, but none saved: the environment, with a log line
    assert (await run_settings()).embedder == "hashing"


async def test_two_embedder_blocks_of_one_name_are_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _name()
    await OllamaEmbedderBlock().save(name)
    await HashingEmbedderBlock(dimensions=64).save(name)
    monkeypatch.setenv("CITADEL_BLOCKS", name)
    with pytest.raises(ConfigurationError, match="citadel-hashing-embedder, citadel-ollama-embedder"):
        await run_settings()


async def test_setup_saves_a_block_per_configured_backend_and_keeps_an_edited_one() -> None:
    name = _name()
    settings = Settings(
        embedder="ollama", ollama_urls=["http://gpu:11434"], redis_url="redis://:pw@cache:6379/0",
        qdrant_url="http://qdrant:6333", database_url="postgresql://citadel:pw@db/citadel",
    )
    done = await save_blocks(settings, name)
    slugs = ["citadel-ollama-embedder", "citadel-redis-cache", "citadel-qdrant", "citadel-registry-database"]
    assert [line for line in done if line.startswith("saved")] == [f"saved block {slug}/{name}" for slug in slugs]
    assert not any("pw" in line for line in done)  # no secret in what setup prints
    assert (await RedisCacheBlock.aload(name)).url.get_secret_value() == "redis://:pw@cache:6379/0"
    assert (await RegistryDatabaseBlock.aload(name)).url.get_secret_value() == "postgresql://citadel:pw@db/citadel"

    edited = await OllamaEmbedderBlock.aload(name)
    edited.urls = ["http://gpu-2:11434"]
    await edited.save(name, overwrite=True)
    again = await save_blocks(settings, name)  # setup run again leaves the operator's edit
    assert f"block citadel-ollama-embedder/{name} already exists: left as it is" in again
    assert (await OllamaEmbedderBlock.aload(name)).urls == ["http://gpu-2:11434"]


async def test_an_embedded_configuration_saves_no_blocks() -> None:
    assert await save_blocks(Settings(embedder="wordllama", redis_url=None, qdrant_url=None, database_url=None), _name()) == []
