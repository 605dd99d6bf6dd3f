"""The OpenAI-compatible embedder against a local ``/v1/embeddings`` server over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from citadel.embedders import OpenAIEmbedder
from citadel.errors import EmbedderError, InputTooLongError
from tests.support.embedding_server import EmbeddingServer

MODEL = "text-embedding-3-small"
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def _server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer() as running:
        yield running


@pytest.fixture
def server(_server: EmbeddingServer) -> EmbeddingServer:
    """A running server with default settings (no API key) and zeroed counters."""
    _server.reset()
    return _server


@pytest.fixture
async def make_embedder() -> AsyncIterator[Callable[..., OpenAIEmbedder]]:
    """Builds embedders with fast retry settings and closes their connections afterwards."""
    created: list[OpenAIEmbedder] = []

    def make(urls: list[str], model: str = MODEL, **kwargs: Any) -> OpenAIEmbedder:
        kwargs.setdefault("backoff_s", 0.01)
        kwargs.setdefault("timeout_s", 5.0)
        embedder = OpenAIEmbedder(model, urls, **kwargs)
        created.append(embedder)
        return embedder

    yield make
    for embedder in created:
        await embedder.aclose()


def texts(count: int) -> list[str]:
    return [f"passage {i}: vectors for retrieval" for i in range(count)]


async def test_server_answers_like_openai(server: EmbeddingServer) -> None:
    async with httpx.AsyncClient(base_url=server.openai_url) as client:
        response = await client.post("/embeddings", json={"model": MODEL, "input": ["a", "b"]})
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "list" and body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert {item["object"] for item in body["data"]} == {"embedding"}
    assert {"prompt_tokens", "total_tokens"} <= body["usage"].keys()
    assert np.array_equal(np.asarray([item["embedding"] for item in body["data"]], dtype=np.float32), server.vectors(["a", "b"], MODEL))


async def test_batches_and_vectors_in_order(server: EmbeddingServer, make_embedder) -> None:
    inputs = texts(7)
    embedder = make_embedder([server.openai_url], batch_size=3)

    vectors = await embedder.embed(inputs)

    assert vectors.shape == (7, 1536)
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, server.vectors(inputs, MODEL))
    assert server.requests["/v1/embeddings"] == 3
    assert server.batch_sizes == [3, 3, 1]


async def test_data_is_put_back_in_index_order(server: EmbeddingServer, make_embedder) -> None:
    server.reverse_openai_data = True
    inputs = texts(4)
    vectors = await make_embedder([server.openai_url]).embed(inputs)
    assert np.array_equal(vectors, server.vectors(inputs, MODEL))


async def test_hugging_face_model_name(server: EmbeddingServer, make_embedder) -> None:
    model = "BAAI/bge-small-en-v1.5"
    vectors = await make_embedder([server.openai_url], model=model).embed(["a"])
    assert vectors.shape == (1, 384)
    assert np.array_equal(vectors, server.vectors(["a"], model))


async def test_no_key_sends_no_authorization_header(server: EmbeddingServer, make_embedder) -> None:
    await make_embedder([server.openai_url]).embed(["a"])
    assert server.authorizations == [None]


@pytest.mark.parametrize("key", [KEY, SecretStr(KEY)], ids=["str", "SecretStr"])
async def test_api_key_is_sent_as_bearer(server: EmbeddingServer, make_embedder, key: str | SecretStr) -> None:
    server.api_key = KEY
    inputs = texts(2)
    vectors = await make_embedder([server.openai_url], api_key=key).embed(inputs)
    assert np.array_equal(vectors, server.vectors(inputs, MODEL))
    assert server.authorizations == [f"Bearer {KEY}"]


@pytest.mark.parametrize("key", [None, "sk-wrong"], ids=["missing", "wrong"])
async def test_bad_api_key_is_401_without_retry(server: EmbeddingServer, make_embedder, key: str | None) -> None:
    server.api_key = KEY
    embedder = make_embedder([server.openai_url], api_key=key, retries=3)
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    error = caught.value
    assert error.status == 401
    assert not error.transient
    assert "Invalid API key" in str(error)
    assert server.requests["/v1/embeddings"] == 1


async def test_api_key_stays_out_of_repr_and_errors(server: EmbeddingServer, make_embedder) -> None:
    server.api_key = "another-key"
    embedder = make_embedder([server.openai_url], api_key=SecretStr(KEY), retries=0)
    assert KEY not in repr(embedder)
    assert KEY not in str(embedder)
    assert MODEL in repr(embedder) and server.openai_url in repr(embedder)
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    assert KEY not in str(caught.value)


async def test_unknown_model_is_404(server: EmbeddingServer, make_embedder) -> None:
    embedder = make_embedder([server.openai_url], model="text-embedding-3-large", retries=3)
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    assert caught.value.status == 404
    assert "The model `text-embedding-3-large` does not exist" in str(caught.value)
    assert server.requests["/v1/embeddings"] == 1


async def test_rate_limit_then_success(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(2, 429, body={"error": {"message": "Rate limit reached", "type": "requests"}}, retry_after="0")
    inputs = texts(2)
    embedder = make_embedder([server.openai_url], retries=2)
    vectors = await embedder.embed(inputs)
    assert np.array_equal(vectors, server.vectors(inputs, MODEL))
    assert server.requests["/v1/embeddings"] == 3


async def test_rate_limit_gives_up_with_the_servers_message(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(5, 429, body={"error": {"message": "Rate limit reached", "type": "requests"}})
    embedder = make_embedder([server.openai_url], retries=1)
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    assert caught.value.status == 429 and caught.value.transient
    assert "Rate limit reached" in str(caught.value)
    assert server.requests["/v1/embeddings"] == 2


async def test_context_length_error_halves_and_truncates(server: EmbeddingServer, make_embedder) -> None:
    server.context_chars = 64
    long_text = "z" * 200
    inputs = ["first", "second", long_text]
    vectors = await make_embedder([server.openai_url], batch_size=3).embed(inputs)
    # [f s L] -> [f] ok, [s L] -> [s] ok, [L] -> L[:100] -> L[:50] ok
    assert server.batch_sizes == [3, 1, 2, 1, 1, 1, 1]
    assert np.array_equal(vectors, server.vectors(["first", "second", long_text[:50]], MODEL))


async def test_context_length_error_is_recognised(server: EmbeddingServer, make_embedder) -> None:
    server.context_chars = 4
    with pytest.raises(InputTooLongError, match="maximum context length"):
        await make_embedder([server.openai_url]).embed(["abcdefgh"])


async def test_check_passes(server: EmbeddingServer, make_embedder) -> None:
    await make_embedder([server.openai_url]).check()
    assert server.received == [["ping"]]


async def test_check_fails_on_wrong_size(server: EmbeddingServer, make_embedder) -> None:
    with pytest.raises(EmbedderError, match="1536-dimensional vectors, expected 256"):
        await make_embedder([server.openai_url], dimensions=256).check()


async def test_check_fails_on_bad_key(server: EmbeddingServer, make_embedder) -> None:
    server.api_key = KEY
    with pytest.raises(EmbedderError) as caught:
        await make_embedder([server.openai_url]).check()
    assert caught.value.status == 401


async def test_a_500_that_speaks_of_length_halves_instead_of_retrying(server: EmbeddingServer, make_embedder) -> None:
    """llama.cpp's over-long input answer is a 500; the same request would fail forever."""
    server.fail_next(1, 500, body={"error": {"message": "input is too large to process. increase the physical batch size"}})
    inputs = texts(2)
    vectors = await make_embedder([server.openai_url], batch_size=2, retries=3).embed(inputs)
    assert np.array_equal(vectors, server.vectors(inputs, MODEL))
    assert server.batch_sizes[-2:] == [1, 1], "the batch was halved"
    assert server.requests["/v1/embeddings"] == 3, "one failed request, no retries, then the two halves"
