"""Embedder blocks build the embedder they describe, and that embedder works against a real HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from blocks import HashingEmbedderBlock, OllamaEmbedderBlock, OpenAICompatibleEmbedderBlock
from citadel.embedders import HashingEmbedder, OllamaEmbedder, OpenAIEmbedder, build_embedder
from citadel.errors import ConfigurationError
from citadel.settings import Settings
from tests.support.embedding_server import EmbeddingServer

TEXTS = ["the quick brown fox", "jumps over the lazy dog", "the quick brown fox"]


@pytest.fixture(scope="module")
def _server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer() as server:
        yield server


@pytest.fixture
def server(_server: EmbeddingServer) -> EmbeddingServer:
    _server.reset()
    return _server


# Ollama ----------------------------------------------------------------------------------------
async def test_ollama_block_builds_an_ollama_embedder_with_the_configured_values() -> None:
    block = OllamaEmbedderBlock(
        model="all-minilm", urls=["http://a:11434/", "http://b:11434"], timeout_s=5, retries=1, batch_size=16, max_input_chars=500
    )
    embedder = block.build()
    try:
        assert isinstance(embedder, OllamaEmbedder)
        assert embedder.model == "all-minilm"
        assert embedder.dimensions == 384
        assert embedder.urls == ["http://a:11434", "http://b:11434"]
        assert (embedder.batch_size, embedder.retries, embedder.max_input_chars) == (16, 1, 500)
        assert embedder._client.timeout.read == 5
    finally:
        await embedder.aclose()


async def test_ollama_block_defaults_match_citadel_defaults() -> None:
    block = OllamaEmbedderBlock()
    embedder = block.build()
    try:
        assert (embedder.model, embedder.dimensions, embedder.urls) == ("nomic-embed-text", 768, ["http://localhost:11434"])
        assert embedder.batch_size == Settings.model_fields["embed_batch_size"].default
    finally:
        await embedder.aclose()


async def test_ollama_block_takes_a_tagged_model_and_explicit_dimensions() -> None:
    tagged = OllamaEmbedderBlock(model="all-minilm:latest").build()
    custom = OllamaEmbedderBlock(model="my-own-embedder", dimensions=256).build()
    try:
        assert tagged.dimensions == 384
        assert (custom.model, custom.dimensions) == ("my-own-embedder", 256)
    finally:
        await tagged.aclose()
        await custom.aclose()


def test_unknown_ollama_model_without_dimensions_is_a_clear_error() -> None:
    block = OllamaEmbedderBlock(model="my-own-embedder")
    with pytest.raises(ConfigurationError) as caught:
        block.build()
    message = str(caught.value)
    assert "my-own-embedder" in message
    assert "'dimensions'" in message
    assert "nomic-embed-text" in message  # the known models are listed


def test_ollama_block_accepts_comma_separated_urls_and_refuses_bad_ones() -> None:
    assert OllamaEmbedderBlock(urls="http://a:1, http://b:2/").urls == ["http://a:1", "http://b:2"]
    with pytest.raises(ValidationError, match="at least one Ollama URL"):
        OllamaEmbedderBlock(urls=[])
    with pytest.raises(ValidationError, match="http:// or https://"):
        OllamaEmbedderBlock(urls=["localhost:11434"])
    with pytest.raises(ValidationError):
        OllamaEmbedderBlock(dimensions=0)


async def test_built_ollama_embedder_embeds_through_the_configured_servers(server: EmbeddingServer) -> None:
    embedder = OllamaEmbedderBlock(model="all-minilm", urls=[server.url], batch_size=2).build()
    try:
        vectors = await embedder.embed(TEXTS)
    finally:
        await embedder.aclose()
    np.testing.assert_allclose(vectors, server.vectors(TEXTS, "all-minilm"), rtol=1e-5, atol=1e-6)
    # Two requests, of 2 texts and 1; they are in flight together (two a server), so either may arrive first.
    assert sorted(server.batch_sizes) == [1, 2]


def test_ollama_overrides_configure_the_same_embedder_through_settings(data_dir: Path) -> None:
    block = OllamaEmbedderBlock(model="all-minilm", urls=["http://a:1", "http://b:2"], batch_size=8, retries=2, timeout_s=3)
    settings = Settings(**block.settings_overrides())
    assert settings.embedder == "ollama"
    assert settings.ollama_urls == ["http://a:1", "http://b:2"]
    assert (settings.embed_batch_size, settings.embed_retries, settings.embed_timeout_s) == (8, 2, 3)
    embedder = build_embedder(settings)
    assert isinstance(embedder, OllamaEmbedder)
    assert (embedder.model, embedder.dimensions, embedder.urls) == ("all-minilm", 384, ["http://a:1", "http://b:2"])


# OpenAI-compatible -----------------------------------------------------------------------------
async def test_openai_block_builds_an_openai_embedder_with_the_configured_values() -> None:
    block = OpenAICompatibleEmbedderBlock(
        model="BAAI/bge-small-en-v1.5", base_url="http://tei:8080/v1/", api_key="sk-test-123", batch_size=32, retries=0
    )
    embedder = block.build()
    try:
        assert isinstance(embedder, OpenAIEmbedder)
        assert (embedder.model, embedder.dimensions) == ("BAAI/bge-small-en-v1.5", 384)
        assert embedder.urls == ["http://tei:8080/v1"]
        assert (embedder.batch_size, embedder.retries) == (32, 0)
        assert embedder._client.headers["Authorization"] == "Bearer sk-test-123"
        assert "sk-test-123" not in repr(embedder)
    finally:
        await embedder.aclose()


async def test_openai_block_without_key_sends_no_authorization() -> None:
    embedder = OpenAICompatibleEmbedderBlock().build()
    try:
        assert (embedder.model, embedder.dimensions) == ("text-embedding-3-small", 1536)
        assert "Authorization" not in embedder._client.headers
    finally:
        await embedder.aclose()


def test_unknown_openai_model_without_dimensions_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="'dimensions'"):
        OpenAICompatibleEmbedderBlock(model="acme/embed-v9").build()
    assert OpenAICompatibleEmbedderBlock(model="acme/embed-v9", dimensions=512).build().dimensions == 512


async def test_built_openai_embedder_authenticates_with_the_secret_key(server: EmbeddingServer) -> None:
    server.api_key = "sk-right"
    block = OpenAICompatibleEmbedderBlock(model="text-embedding-3-small", base_url=server.openai_url, api_key="sk-right")
    embedder = block.build()
    try:
        vectors = await embedder.embed(TEXTS[:2])
    finally:
        await embedder.aclose()
    np.testing.assert_allclose(vectors, server.vectors(TEXTS[:2], "text-embedding-3-small"), rtol=1e-5, atol=1e-6)
    assert server.authorizations == ["Bearer sk-right"]


def test_openai_overrides_carry_the_key_as_a_secret(data_dir: Path) -> None:
    block = OpenAICompatibleEmbedderBlock(model="acme/embed-v9", dimensions=512, base_url="https://api.example/v1", api_key="sk-x")
    overrides = block.settings_overrides()
    assert isinstance(overrides["openai_api_key"], SecretStr)
    settings = Settings(**overrides)
    assert settings.embedder == "openai"
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == "sk-x"
    embedder = build_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    assert (embedder.model, embedder.dimensions, embedder.urls) == ("acme/embed-v9", 512, ["https://api.example/v1"])


# hashing ---------------------------------------------------------------------------------------
async def test_hashing_block_builds_the_embedded_embedder() -> None:
    embedder = HashingEmbedderBlock(dimensions=64).build()
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.dimensions == 64
    vectors = await embedder.embed(TEXTS)
    assert vectors.shape == (3, 64)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert HashingEmbedderBlock().build().dimensions == 384


def test_hashing_block_refuses_too_few_dimensions() -> None:
    with pytest.raises(ValidationError):
        HashingEmbedderBlock(dimensions=4)


def test_hashing_overrides_select_the_hashing_embedder(data_dir: Path) -> None:
    settings = Settings(**HashingEmbedderBlock(dimensions=128).settings_overrides())
    embedder = build_embedder(settings)
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.dimensions == 128
