"""Embedder blocks: Ollama servers, an OpenAI-compatible server, or the embedded hashing embedder."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from pydantic import Field, SecretStr, field_validator

from blocks.base import CitadelBlock, settings_from_blocks
from citadel.embedders import KNOWN_MODELS, HashingEmbedder, OllamaEmbedder, OpenAIEmbedder, base_model_name, build_embedder
from citadel.errors import ConfigurationError
from citadel.settings import http_url, split_comma_list


def _known_size_or_fail(block: CitadelBlock, model: str, dimensions: int | None) -> None:
    """Refuse a model of unknown vector size before anything is built (the size keys every collection)."""
    if dimensions is None and base_model_name(model) not in KNOWN_MODELS:
        raise ConfigurationError(
            f"{block.get_block_type_name()}: the vector size of model {model!r} is unknown; set the block's "
            f"'dimensions' field to it. Models of known size: {', '.join(sorted(KNOWN_MODELS))}"
        )


def _http_settings(block: Any) -> dict[str, Any]:
    """The Settings fields both HTTP embedder blocks share."""
    return {
        "embedding_model": block.model,
        "embedding_dimensions": block.dimensions,
        "embed_batch_size": block.batch_size,
        "embed_timeout_s": block.timeout_s,
        "embed_retries": block.retries,
        "max_input_chars": block.max_input_chars,
    }


class OllamaEmbedderBlock(CitadelBlock):
    """One or more Ollama servers serving one embedding model; batches spread over all of them."""

    _block_type_name: ClassVar[str] = "Citadel Ollama Embedder"
    _block_type_slug: ClassVar[str] = "citadel-ollama-embedder"
    _description: ClassVar[str] = (
        "Embeds texts through one or more Ollama servers. Models Citadel does not know need their vector size."
    )

    model: str = Field("nomic-embed-text", description="Ollama model name, e.g. nomic-embed-text or all-minilm.")
    urls: list[str] = Field(
        default_factory=lambda: ["http://localhost:11434"],
        title="Server URLs",
        description="Ollama base URLs; each one embeds one batch at a time.",
    )
    dimensions: int | None = Field(None, gt=0, description="Vector size; needed only for models Citadel does not know.")
    timeout_s: float = Field(60.0, gt=0, title="Timeout (seconds)", description="Per request.")
    retries: int = Field(4, ge=0, description="Retries of connection errors, 429 and 5xx answers.")
    batch_size: int = Field(64, gt=0, description="Texts per embedding request.")
    max_input_chars: int = Field(8000, gt=0, description="Longer inputs are truncated before sending.")

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        return split_comma_list(value)

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one Ollama URL is needed, e.g. http://localhost:11434")
        return [http_url(url) for url in value]

    def build(self) -> OllamaEmbedder:
        """An :class:`OllamaEmbedder` (close it with ``aclose``); an unknown model without dimensions is refused."""
        _known_size_or_fail(self, self.model, self.dimensions)
        return cast(OllamaEmbedder, build_embedder(settings_from_blocks(self)))  # these settings name Ollama

    def settings_overrides(self) -> dict[str, Any]:
        return {"embedder": "ollama", "ollama_urls": list(self.urls), **_http_settings(self)}


class OpenAICompatibleEmbedderBlock(CitadelBlock):
    """A server with the OpenAI ``/v1/embeddings`` API: OpenAI itself, TEI, vLLM, llama.cpp or Infinity."""

    _block_type_name: ClassVar[str] = "Citadel OpenAI-Compatible Embedder"
    _block_type_slug: ClassVar[str] = "citadel-openai-compatible-embedder"
    _description: ClassVar[str] = (
        "Embeds texts through an OpenAI-compatible /v1/embeddings server; the API key is stored as a secret."
    )

    model: str = Field("text-embedding-3-small", description="Model name as the server knows it.")
    base_url: str = Field(
        "http://localhost:8080/v1", title="Base URL", description="Up to and including /v1, e.g. https://api.openai.com/v1."
    )
    api_key: SecretStr | None = Field(None, title="API key", description="Sent as a bearer token; leave empty if unused.")
    dimensions: int | None = Field(None, gt=0, description="Vector size; needed only for models Citadel does not know.")
    timeout_s: float = Field(60.0, gt=0, title="Timeout (seconds)", description="Per request.")
    retries: int = Field(4, ge=0, description="Retries of connection errors, 429 and 5xx answers.")
    batch_size: int = Field(64, gt=0, description="Texts per embedding request.")
    max_input_chars: int = Field(8000, gt=0, description="Longer inputs are truncated before sending.")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return http_url(value)

    def build(self) -> OpenAIEmbedder:
        """An :class:`OpenAIEmbedder` (close it with ``aclose``); an unknown model without dimensions is refused."""
        _known_size_or_fail(self, self.model, self.dimensions)
        return cast(OpenAIEmbedder, build_embedder(settings_from_blocks(self)))  # these settings name an OpenAI-compatible server

    def settings_overrides(self) -> dict[str, Any]:
        return {
            "embedder": "openai",
            "openai_base_url": self.base_url,
            "openai_api_key": self.api_key,
            **_http_settings(self),
        }


class HashingEmbedderBlock(CitadelBlock):
    """The embedded lexical embedder: no server, deterministic, for tests and offline use (not semantic)."""

    _block_type_name: ClassVar[str] = "Citadel Hashing Embedder"
    _block_type_slug: ClassVar[str] = "citadel-hashing-embedder"
    _description: ClassVar[str] = (
        "Citadel's built-in feature-hashing embedder: needs no model server, matches words and spellings, not meaning."
    )

    dimensions: int = Field(384, ge=8, description="Vector size (at least 8).")

    def build(self) -> HashingEmbedder:
        return HashingEmbedder(dimensions=self.dimensions)

    def settings_overrides(self) -> dict[str, Any]:
        return {"embedder": "hashing", "embedding_model": None, "embedding_dimensions": self.dimensions}
