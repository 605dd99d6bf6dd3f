"""API tests run against real ``citadel api`` processes over HTTP: one on the embedded defaults,
one on the real Redis and Postgres, each started once for the session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from citadel.apikeys import ApiKeys
from citadel.apisettings import ApiSettings
from citadel.auth import mint_token
from citadel.registry import Registry
from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from tests.conftest import POSTGRES_URL, REDIS_URL

JWT_SECRET = "test-secret-" + "x" * 40
KEYS = {"admin": ["admin"], "embed": ["embeddings"], "reader": ["search", "metrics"], "workflows": ["workflows"]}


@dataclass
class Api:
    """A running API with keys of several scopes and a client for it."""

    name: str
    process: ApiProcess
    settings: Settings
    keys: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url

    def headers(self, key: str = "admin", **extra: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[key], **extra}

    def token(
        self, subject: str = "tester", scopes: list[str] | None = None, ttl_s: float = 600, collections: list[str] | None = None
    ) -> str:
        return mint_token(ApiSettings(jwt_secret=JWT_SECRET), subject, scopes or ["admin"], ttl_s,
                          collections=["*"] if collections is None else collections)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The API's environment: nothing of the caller's CITADEL_ settings, a private data folder."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("CITADEL_") and not k.startswith("CITADEL_TEST_"))}
    env.update({
        "CITADEL_DATA_DIR": str(data_dir), "CITADEL_JWT_SECRET": JWT_SECRET, "CITADEL_API_RATE_LIMITS": "2000/second",
        "PREFECT_LOGGING_LEVEL": "WARNING", **extra,
    })
    return env


async def create_keys(settings: Settings, sources: Path | None = None) -> dict[str, str]:
    """The test keys: every collection, and the API's whole source root (tenants are tests/api/hostile/test_tenants.py)."""
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        keys = ApiKeys(registry)
        return {
            name: (await keys.create(f"test-{name}", scopes, collections="*", sources=[str(sources)] if sources else ())).key
            for name, scopes in KEYS.items()
        }
    finally:
        await registry.aclose()


def start_api(name: str, root: Path, prefect_api_url: str, **extra: str) -> Api:
    data_dir = root / "data"
    sources = root / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    env = base_env(data_dir, PREFECT_API_URL=prefect_api_url, CITADEL_API_SOURCE_ROOTS=str(sources), **extra)
    settings = Settings(data_dir=data_dir, redis_url=extra.get("CITADEL_REDIS_URL"), database_url=extra.get("CITADEL_DATABASE_URL"))
    keys = asyncio.run(create_keys(settings, sources))
    process = ApiProcess(env, root).start()
    return Api(name, process, settings, keys, env)


@pytest.fixture(scope="session")
def embedded_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Api]:
    api = start_api("embedded", tmp_path_factory.mktemp("api-embedded"), prefect_api_url)
    yield api
    api.process.stop()


@pytest.fixture(scope="session")
def shared_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Api]:
    api = start_api(
        "redis+postgres", tmp_path_factory.mktemp("api-shared"), prefect_api_url,
        CITADEL_REDIS_URL=REDIS_URL, CITADEL_DATABASE_URL=POSTGRES_URL,
    )
    yield api
    api.process.stop()


@pytest.fixture(params=["embedded", "redis+postgres"])
def api(request: pytest.FixtureRequest) -> Api:
    """Each test once on the embedded defaults and once on Redis and Postgres."""
    return request.getfixturevalue("embedded_api" if request.param == "embedded" else "shared_api")
