"""Vector sizes of known models, and the factory that builds an embedder from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from citadel.embedders import (
    KNOWN_MODELS,
    Embedder,
    HashingEmbedder,
    OllamaEmbedder,
    OpenAIEmbedder,
    WordLlamaEmbedder,
    build_embedder,
    resolve_dimensions,
)
from citadel.embedders.http import HttpEmbedder
from citadel.embedders.models import base_model_name
from citadel.errors import ConfigurationError
from citadel.settings import Settings
from tests.support.embedding_server import DEFAULT_MODELS, EmbeddingServer


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[EmbeddingServer, EmbeddingServer]]:
    models = {**DEFAULT_MODELS, "custom-embed": 256}
    with EmbeddingServer(models, api_key="sk-settings") as first, EmbeddingServer(models) as second:
        yield first, second


@pytest.fixture
def servers(_servers: tuple[EmbeddingServer, EmbeddingServer]) -> tuple[EmbeddingServer, EmbeddingServer]:
    for each in _servers:
        each.reset()
    return _servers


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """Registers embedders whose connections are closed after the test."""
    created: list[Any] = []

    def keep(embedder: Any) -> Any:
        created.append(embedder)
        return embedder

    yield keep
    for embedder in created:
        await embedder.aclose()


def settings(**values: Any) -> Settings:
    """Settings from ``values`` only: no .env file, and every embedding knob given."""
    values.setdefault("embedding_model", None)
    values.setdefault("embedding_dimensions", None)
    values.setdefault("openai_api_key", None)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# resolve_dimensions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("nomic-embed-text", 768),
        ("nomic-embed-text:latest", 768),
        ("all-minilm:l6-v2", 384),
        ("mxbai-embed-large", 1024),
        ("text-embedding-3-large", 3072),
        ("BAAI/bge-small-en-v1.5", 384),
        ("sentence-transformers/all-MiniLM-L6-v2", 384),
    ],
)
def test_known_models(model: str, size: int) -> None:
    assert resolve_dimensions(model, None) == size


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("nomic-embed-text:latest", "nomic-embed-text"),
        ("nomic-embed-text", "nomic-embed-text"),
        ("BAAI/bge-m3", "BAAI/bge-m3"),
        ("hf.co/org/model:Q4_K_M", "hf.co/org/model"),
        ("registry:5000/library/model", "registry:5000/library/model"),
    ],
)
def test_base_model_name(model: str, base: str) -> None:
    assert base_model_name(model) == base


def test_explicit_dimensions_win() -> None:
    assert resolve_dimensions("nomic-embed-text", 512) == 512
    assert resolve_dimensions("my-own-model", 100) == 100


@pytest.mark.parametrize("dimensions", [0, -3])
def test_non_positive_dimensions_are_refused(dimensions: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        resolve_dimensions("nomic-embed-text", dimensions)


def test_unknown_model_names_the_supported_ones() -> None:
    with pytest.raises(ValueError) as caught:
        resolve_dimensions("my-own-model", None)
    message = str(caught.value)
    assert "my-own-model" in message
    assert "CITADEL_EMBEDDING_DIMENSIONS" in message
    for name in KNOWN_MODELS:
        assert name in message


def test_embedders_refuse_an_unknown_model_without_dimensions() -> None:
    with pytest.raises(ValueError, match="Supported models: .*nomic-embed-text"):
        OllamaEmbedder("custom-embed", ["http://127.0.0.1:9"])
    with pytest.raises(ValueError, match="Supported models"):
        OpenAIEmbedder("custom-embed", ["http://127.0.0.1:9/v1"])


async def test_base_urls_and_their_defaults(closing) -> None:
    with pytest.raises(ValueError, match="at least one base URL"):
        HttpEmbedder("nomic-embed-text", [])
    # An explicitly empty list is a mistake, not a request for the default server.
    with pytest.raises(ValueError, match="at least one base URL"):
        OllamaEmbedder("nomic-embed-text", [])
    assert closing(OllamaEmbedder("nomic-embed-text")).urls == ["http://localhost:11434"]
    assert closing(OpenAIEmbedder("text-embedding-3-small")).urls == ["http://localhost:8080/v1"]
    assert closing(OllamaEmbedder("nomic-embed-text", ["http://h:1/", "http://h:2"])).urls == ["http://h:1", "http://h:2"]


async def test_unknown_model_with_explicit_dimensions_works(servers, closing) -> None:
    server = servers[1]
    embedder = closing(OllamaEmbedder("custom-embed", [server.url], dimensions=256))
    vectors = await embedder.embed(["a", "b"])
    assert vectors.shape == (2, 256)
    assert np.array_equal(vectors, server.vectors(["a", "b"], "custom-embed"))
    await embedder.check()


# build_embedder ---------------------------------------------------------------------------------


def test_default_settings_build_the_wordllama_embedder() -> None:
    embedder = build_embedder(settings())
    assert isinstance(embedder, WordLlamaEmbedder) and isinstance(embedder, Embedder)
    assert embedder.dimensions == 256
    with pytest.raises(ConfigurationError, match="makes 256-dimensional vectors, not 128"):
        build_embedder(settings(embedding_dimensions=128))


def test_hashing_builds_at_its_size() -> None:
    embedder = build_embedder(settings(embedder="hashing"))
    assert isinstance(embedder, HashingEmbedder) and embedder.dimensions == 384
    assert build_embedder(settings(embedder="hashing", embedding_dimensions=128)).dimensions == 128


def test_hashing_with_too_few_dimensions_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="at least 8 dimensions"):
        build_embedder(settings(embedder="hashing", embedding_dimensions=4))


async def test_ollama_settings(servers, closing) -> None:
    first, second = servers
    embedder = closing(
        build_embedder(
            settings(
                embedder="ollama",
                ollama_urls=f"{first.url}, {second.url}/",
                embed_batch_size=2,
                embed_retries=0,
                embed_timeout_s=5,
                max_input_chars=20,
            )
        )
    )
    assert isinstance(embedder, OllamaEmbedder)
    assert embedder.model == "nomic-embed-text" and embedder.dimensions == 768
    assert embedder.urls == [first.url, second.url]
    first.delay(0.02)
    second.delay(0.02)
    inputs = [f"sentence {i} that is longer than twenty characters" for i in range(4)]

    vectors = await embedder.embed(inputs)

    assert np.array_equal(vectors, first.vectors([text[:20] for text in inputs]))
    assert first.batch_sizes == [2] and second.batch_sizes == [2]
    assert embedder.retries == 0


async def test_openai_settings(servers, closing) -> None:
    server = servers[0]
    embedder = closing(
        build_embedder(
            settings(
                embedder="openai",
                embedding_model="BAAI/bge-small-en-v1.5",
                openai_base_url=server.openai_url,
                openai_api_key=SecretStr("sk-settings"),
            )
        )
    )
    assert isinstance(embedder, OpenAIEmbedder)
    assert embedder.dimensions == 384
    assert "sk-settings" not in repr(embedder)
    vectors = await embedder.embed(["a"])
    assert np.array_equal(vectors, server.vectors(["a"], "BAAI/bge-small-en-v1.5"))
    assert server.authorizations == ["Bearer sk-settings"]


async def test_openai_default_model(closing) -> None:
    embedder = closing(build_embedder(settings(embedder="openai")))
    assert isinstance(embedder, OpenAIEmbedder)
    assert (embedder.model, embedder.dimensions) == ("text-embedding-3-small", 1536)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_unknown_model_is_a_configuration_error(kind: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_embedder(settings(embedder=kind, embedding_model="custom-embed"))
    assert isinstance(caught.value, ValueError)
    assert "Supported models" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_unknown_model_with_dimensions_is_built(kind: str, closing) -> None:
    embedder = closing(build_embedder(settings(embedder=kind, embedding_model="custom-embed", embedding_dimensions=256)))
    assert embedder.model == "custom-embed"
    assert embedder.dimensions == 256
