"""Blocks round-trip through a real Prefect API, and ``prefect block register -m blocks`` registers them all."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
import warnings
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from blocks import (
    BLOCK_TYPES,
    HashingEmbedderBlock,
    OllamaEmbedderBlock,
    OpenAICompatibleEmbedderBlock,
    QdrantBlock,
    RedisCacheBlock,
    RegistryDatabaseBlock,
)
from citadel.embedders import OllamaEmbedder

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.system]  # system: a test starts a process


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def test_save_and_load_round_trips_every_field_including_secrets() -> None:
    saved = [
        OllamaEmbedderBlock(model="all-minilm", urls=["http://a:11434", "http://b:11434"], retries=1, batch_size=8),
        OpenAICompatibleEmbedderBlock(model="acme/embed", dimensions=512, base_url="https://x/v1", api_key="sk-round-trip"),
        HashingEmbedderBlock(dimensions=96),
        RedisCacheBlock(url="redis://:redis-pw@cache:6379/2", ttl_s=77),
        QdrantBlock(url="https://qdrant:6333", api_key="qd-round-trip", batch_size=200),
        QdrantBlock(path=Path("/srv/citadel/qdrant")),
        RegistryDatabaseBlock(url="postgresql://citadel:db-pw@db:5432/citadel"),
    ]
    for block in saved:
        name = _name()
        document_id = await block.asave(name, overwrite=True)
        assert block._block_document_id == document_id
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = await type(block).aload(name)
        assert not [w for w in caught if "unknown field" in str(w.message)]
        assert type(loaded) is type(block)
        assert loaded._block_document_name == name
        for field in type(block).model_fields:
            ours, theirs = getattr(block, field), getattr(loaded, field)
            if hasattr(ours, "get_secret_value"):
                assert theirs.get_secret_value() == ours.get_secret_value(), field
            else:
                assert theirs == ours, field


async def test_overwrite_updates_a_saved_block_and_secrets_stay_hidden_from_the_api() -> None:
    name = _name()
    await RedisCacheBlock(url="redis://:first@cache:6379/0", ttl_s=10).asave(name)
    with pytest.raises(ValueError, match="overwrite=True"):
        await RedisCacheBlock(url="redis://:second@cache:6379/0").asave(name)
    await RedisCacheBlock(url="redis://:second@cache:6379/0", ttl_s=20).asave(name, overwrite=True)
    loaded = await RedisCacheBlock.aload(name)
    assert (loaded.url.get_secret_value(), loaded.ttl_s) == ("redis://:second@cache:6379/0", 20)

    async with get_client() as client:
        document = await client.read_block_document_by_name(name, "citadel-redis-cache", include_secrets=False)
    assert document.data["url"] != "redis://:second@cache:6379/0"
    assert "second" not in str(document.data)


async def test_a_loaded_block_builds_its_core_object() -> None:
    name = _name()
    await OllamaEmbedderBlock(model="mxbai-embed-large", urls=["http://gpu-1:11434"]).asave(name)
    embedder = (await OllamaEmbedderBlock.aload(name)).build()
    try:
        assert isinstance(embedder, OllamaEmbedder)
        assert (embedder.dimensions, embedder.urls) == (1024, ["http://gpu-1:11434"])
    finally:
        await embedder.aclose()


async def test_prefect_cli_registers_every_block_type() -> None:
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness should set PREFECT_API_URL"
    slugs = [cls.get_block_type_slug() for cls in BLOCK_TYPES]

    # Start from an API that knows none of the types, so only the CLI can have registered them.
    async with get_client() as client:
        for slug in slugs:
            try:
                block_type = await client.read_block_type_by_slug(slug)
            except ObjectNotFound:
                continue
            await client.delete_block_type(block_type.id)
            with pytest.raises(ObjectNotFound):
                await client.read_block_type_by_slug(slug)

    # The `prefect` console script does not put the working directory on sys.path, so say where `blocks` is.
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("prefect")), "block", "register", "-m", "blocks",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
    output = stdout.decode() + stderr.decode()
    assert process.returncode == 0, output
    assert "Successfully registered 6 blocks" in " ".join(output.split()), output

    async with get_client() as client:
        for cls in BLOCK_TYPES:
            block_type = await client.read_block_type_by_slug(cls.get_block_type_slug())
            assert block_type.name == cls.get_block_type_name()
            assert block_type.description == cls.get_description()
            schema = await client.read_block_schema_by_checksum(cls._calculate_schema_checksum())
            assert schema.block_type_id == block_type.id
            assert schema.fields["secret_fields"] == cls.model_json_schema()["secret_fields"]
