"""Registry database block: Postgres for shared deployments or a SQLite file; the URL is a secret."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from blocks.base import CitadelBlock, url_scheme
from citadel.errors import ConfigurationError
from citadel.registry import Registry
from citadel.settings import Settings, masked_url

_SCHEMES = (
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "sqlite",
    "sqlite+aiosqlite",
)


class RegistryDatabaseBlock(CitadelBlock):
    """The SQL database of the document registry (what is indexed where, runs and dead letters)."""

    _block_type_name: ClassVar[str] = "Citadel Registry Database"
    _block_type_slug: ClassVar[str] = "citadel-registry-database"
    _description: ClassVar[str] = (
        "Database of Citadel's document registry: postgresql://user:password@host/db, or sqlite:///path/registry.db."
    )

    url: SecretStr = Field(
        ...,
        title="Database URL",
        description="postgresql://user:password@host:5432/db or sqlite:///path/to/registry.db.",
    )

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, value: SecretStr) -> SecretStr:
        if url_scheme(value.get_secret_value()) not in _SCHEMES:
            raise ValueError("the registry URL must be a postgresql:// or sqlite:/// URL")
        return value

    @property
    def async_url(self) -> str:
        """The SQLAlchemy async URL (asyncpg or aiosqlite), exactly as Citadel's settings derive it."""
        return Settings.model_construct(database_url=self.url).registry_url

    def build(self) -> Registry:
        """A :class:`Registry`, not yet initialised: ``await registry.init()`` creates or upgrades the schema."""
        url = self.async_url
        try:
            return Registry(url)
        except ConfigurationError:
            raise ConfigurationError(f"cannot open the registry database {masked_url(url)}") from None

    def settings_overrides(self) -> dict[str, Any]:
        return {"database_url": self.url.get_secret_value()}
