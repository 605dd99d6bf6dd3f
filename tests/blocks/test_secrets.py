"""Secrets of every block stay masked in repr, str, dumps and JSON, and Prefect knows which fields they are."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from blocks import OpenAICompatibleEmbedderBlock, QdrantBlock, RedisCacheBlock, RegistryDatabaseBlock
from blocks.base import CitadelBlock, masked_url

SECRET = "s3cr3t-Pa55"

CASES = [
    pytest.param(OpenAICompatibleEmbedderBlock(api_key=SECRET), "api_key", id="openai"),
    pytest.param(RedisCacheBlock(url=f"redis://:{SECRET}@cache:6379/0"), "url", id="redis"),
    pytest.param(QdrantBlock(url="https://qdrant:6333", api_key=SECRET), "api_key", id="qdrant"),
    pytest.param(RegistryDatabaseBlock(url=f"postgresql://citadel:{SECRET}@db/citadel"), "url", id="registry"),
]


@pytest.mark.parametrize(("block", "field"), CASES)
def test_secret_is_masked_everywhere_a_block_is_shown(block: CitadelBlock, field: str) -> None:
    assert isinstance(getattr(block, field), SecretStr)
    assert SECRET in getattr(block, field).get_secret_value()
    shown = [
        repr(block),
        str(block),
        str(block.model_dump()),
        json.dumps(block.model_dump(mode="json")),
        block.model_dump_json(),
    ]
    for text in shown:
        assert SECRET not in text
    assert block.model_dump(mode="json")[field] == "**********"


@pytest.mark.parametrize(("block", "field"), CASES)
def test_prefect_schema_lists_the_secret_field(block: CitadelBlock, field: str) -> None:
    schema = type(block).model_json_schema()
    assert schema["secret_fields"] == [field]


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url(f"postgresql+asyncpg://citadel:{SECRET}@db:5432/x") == "postgresql+asyncpg://citadel:***@db:5432/x"
    assert masked_url(f"redis://:{SECRET}@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert masked_url("sqlite+aiosqlite:////tmp/r.db") == "sqlite+aiosqlite:////tmp/r.db"
    # redis-py also takes the password from the query; other query values stay readable
    assert masked_url(f"redis://cache:6379/0?password={SECRET}&socket_timeout=5") == "redis://cache:6379/0?password=***&socket_timeout=5"
    assert masked_url(f"postgresql://u:{SECRET}@db/x?sslmode=require") == "postgresql://u:***@db/x?sslmode=require"
