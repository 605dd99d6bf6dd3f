"""The registry block builds a Registry that initialises on the real Postgres and on SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks import RegistryDatabaseBlock
from citadel.registry import Registry
from citadel.settings import Settings


async def test_registry_block_initialises_against_postgres(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    registry = RegistryDatabaseBlock(url=plain).build()
    name = f"block_test_{uuid.uuid4().hex[:12]}"
    try:
        assert isinstance(registry, Registry)
        assert registry.dialect == "postgresql"
        assert registry.url.startswith("postgresql+asyncpg://")
        await registry.init()
        await registry.ensure_collection(name, "block-test-model", 8)
        assert await registry.collection(name) == ("block-test-model", 8)
    finally:
        await registry.forget_collection(name)
        await registry.aclose()


async def test_registry_block_initialises_a_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "registry.db"
    registry = RegistryDatabaseBlock(url=f"sqlite:///{database}").build()
    try:
        assert registry.dialect == "sqlite"
        assert registry.url == f"sqlite+aiosqlite:///{database}"
        await registry.init()
        await registry.ensure_collection("docs", "block-test-model", 8)
        assert await registry.collection("docs") == ("block-test-model", 8)
    finally:
        await registry.aclose()
    assert database.is_file()


def test_registry_block_refuses_other_databases_without_echoing_the_url() -> None:
    with pytest.raises(ValidationError) as caught:
        RegistryDatabaseBlock(url="mysql://root:hunter2@db/citadel")
    assert "postgresql://" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_registry_overrides_configure_a_run(data_dir: Path) -> None:
    settings = Settings(**RegistryDatabaseBlock(url="postgres://u:pw@db:5432/citadel").settings_overrides())
    assert settings.registry_url == "postgresql+asyncpg://u:pw@db:5432/citadel"
    assert RegistryDatabaseBlock(url="postgres://u:pw@db:5432/citadel").async_url == settings.registry_url
