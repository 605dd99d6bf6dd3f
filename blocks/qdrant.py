"""Qdrant vector-store block: a server by URL (with an optional API key), or embedded mode in a folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.base import CitadelBlock, url_scheme
from citadel.errors import ConfigurationError
from citadel.settings import get_settings

if TYPE_CHECKING:
    from citadel.store import VectorStore


class QdrantBlock(CitadelBlock):
    """Where vectors live: a Qdrant server, or Qdrant's embedded mode in a local folder."""

    _block_type_name: ClassVar[str] = "Citadel Qdrant"
    _block_type_slug: ClassVar[str] = "citadel-qdrant"
    _description: ClassVar[str] = (
        "Qdrant vector store: set a server URL (and API key), or a folder for embedded mode. "
        "With neither, embedded mode under CITADEL_DATA_DIR/qdrant."
    )

    url: str | None = Field(None, title="Server URL", description="e.g. http://qdrant:6333; empty for embedded mode.")
    api_key: SecretStr | None = Field(None, title="API key", description="For a server that requires one.")
    path: Path | None = Field(
        None,
        description="Folder of embedded mode (one process at a time); empty means CITADEL_DATA_DIR/qdrant.",
    )
    batch_size: int = Field(128, ge=64, le=256, description="Points per upsert request.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if url_scheme(value) not in ("http", "https"):
            raise ValueError("the Qdrant URL must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_mode(self) -> QdrantBlock:
        if self.url and self.path is not None:
            raise ValueError("set either url (a Qdrant server) or path (embedded mode), not both")
        if self.api_key is not None and not self.url:
            raise ValueError("api_key only applies to a Qdrant server: set url too")
        return self

    def build(self) -> VectorStore:
        """A :class:`VectorStore` on the server, or on the process-wide embedded client of the folder."""
        from citadel.store import VectorStore  # qdrant-client: imported by a run that writes, not by every start

        path = self.path if self.path is not None else get_settings().qdrant_path
        return VectorStore.connect(
            url=self.url,
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            path=path,
            batch_size=self.batch_size,
        )

    def settings_overrides(self) -> dict[str, Any]:
        """Settings keep the embedded store at ``data_dir/qdrant``, so a custom folder must end in ``qdrant``."""
        overrides: dict[str, Any] = {
            "qdrant_url": self.url,
            "qdrant_api_key": self.api_key,
            "upsert_batch_size": self.batch_size,
        }
        if self.path is not None:
            if self.path.name != "qdrant":
                raise ConfigurationError(
                    f"Citadel settings keep the embedded vector store at CITADEL_DATA_DIR/qdrant, so the block's "
                    f"path {str(self.path)!r} cannot configure a run; use a folder named 'qdrant' (its parent "
                    "becomes the data dir) or use the block's build() directly"
                )
            overrides["data_dir"] = self.path.parent
        return overrides
