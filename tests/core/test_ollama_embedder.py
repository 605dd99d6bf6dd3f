"""The Ollama embedder against a local server that speaks Ollama's protocol over TCP."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from citadel.embedders import OllamaEmbedder
from citadel.errors import ConfigurationError, EmbedderError, EmbedderUnreachable, InputTooLongError, is_transient
from tests.support.embedding_server import LENGTH_ERROR, NOT_FOUND_BODY, EmbeddingServer, free_port

MODEL = "nomic-embed-text"


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[EmbeddingServer, EmbeddingServer]]:
    with EmbeddingServer() as first, EmbeddingServer() as second:
        yield first, second


@pytest.fixture
def server(_servers: tuple[EmbeddingServer, EmbeddingServer]) -> EmbeddingServer:
    """A running server with default settings and zeroed counters."""
    for each in _servers:
        each.reset()
    return _servers[0]


@pytest.fixture
def second_server(_servers: tuple[EmbeddingServer, EmbeddingServer], server: EmbeddingServer) -> EmbeddingServer:
    return _servers[1]


@pytest.fixture
async def make_embedder() -> AsyncIterator[Callable[..., OllamaEmbedder]]:
    """Builds embedders with fast retry settings and closes their connections afterwards."""
    created: list[OllamaEmbedder] = []

    def make(urls: list[str], model: str = MODEL, **kwargs: Any) -> OllamaEmbedder:
        kwargs.setdefault("backoff_s", 0.01)
        kwargs.setdefault("timeout_s", 5.0)
        embedder = OllamaEmbedder(model, urls, **kwargs)
        created.append(embedder)
        return embedder

    yield make
    for embedder in created:
        await embedder.aclose()


def texts(count: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} number {i}: the quick brown fox" for i in range(count)]


# the server itself speaks the protocol ---------------------------------------------------------


async def test_server_answers_like_ollama(server: EmbeddingServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        embed = await client.post("/api/embed", json={"model": MODEL, "input": "hello"})
        legacy = await client.post("/api/embeddings", json={"model": MODEL, "prompt": "hello"})
        tags = await client.get("/api/tags")
        missing = await client.post("/api/embed", json={"model": "nope", "input": ["a"]})
        too_long = await client.post("/api/embed", json={"model": MODEL, "input": ["x" * 5000], "truncate": True})
    body = embed.json()
    assert embed.status_code == 200
    assert {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"} <= body.keys()
    assert np.array_equal(np.asarray(body["embeddings"], dtype=np.float32), server.vectors(["hello"]))
    assert np.linalg.norm(body["embeddings"][0]) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(np.asarray(legacy.json()["embedding"], dtype=np.float32), server.vector("hello", normalised=False))
    names = [entry["name"] for entry in tags.json()["models"]]
    assert "nomic-embed-text:latest" in names
    assert {"model", "size", "digest", "details"} <= tags.json()["models"][0].keys()
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "nope" not found, try pulling it first'}
    assert too_long.status_code == 400
    assert too_long.json() == {"error": LENGTH_ERROR}


async def test_legacy_server_has_no_api_embed(server: EmbeddingServer) -> None:
    server.legacy = True
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/api/embed", json={"model": MODEL, "input": ["a"]})
    assert response.status_code == 404
    assert response.text == NOT_FOUND_BODY
    assert response.headers["content-type"].startswith("text/plain")


# batching and spreading ------------------------------------------------------------------------


async def test_one_request_per_batch_and_vectors_in_order(server: EmbeddingServer, make_embedder) -> None:
    inputs = texts(10)
    embedder = make_embedder([server.url], batch_size=4)

    vectors = await embedder.embed(inputs)

    assert vectors.shape == (10, 768)
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, server.vectors(inputs))
    assert server.requests["/api/embed"] == 3
    assert server.batch_sizes == [4, 4, 2]
    assert [text for batch in server.received for text in batch] == inputs
    assert embedder.requests == 3


async def test_empty_input_sends_nothing(server: EmbeddingServer, make_embedder) -> None:
    vectors = await make_embedder([server.url]).embed([])
    assert vectors.shape == (0, 768)
    assert sum(server.requests.values()) == 0


async def test_one_batch_at_a_time_per_server(server: EmbeddingServer, make_embedder) -> None:
    server.delay(0.02)
    inputs = texts(6)
    vectors = await make_embedder([server.url], batch_size=2).embed(inputs)
    assert np.array_equal(vectors, server.vectors(inputs))
    assert server.requests["/api/embed"] == 3
    assert server.max_in_flight == 1


async def test_two_requests_wait_at_a_serial_server_so_it_never_idles_between_them(
    server: EmbeddingServer, make_embedder
) -> None:
    """The next request is queued at the server while one is embedded (CITADEL_EMBED_REQUESTS_PER_SERVER=2)."""
    server.serial(0.02, 0.0)
    inputs = texts(12)
    vectors = await make_embedder([server.url], batch_size=2, requests_per_server=2).embed(inputs)
    assert np.array_equal(vectors, server.vectors(inputs))
    assert server.max_in_flight == 2 and server.stats()["requests"] == 6  # one embedded, the next waiting


async def test_an_older_call_is_embedded_before_a_newer_one_that_shares_the_server(
    server: EmbeddingServer, make_embedder
) -> None:
    """Two batches embedding at once: the first one's requests go first, so it ends (and is
    written) while the second embeds, instead of both ending together."""
    import asyncio

    server.serial(0.01, 0.0)
    embedder = make_embedder([server.url], batch_size=2, requests_per_server=2)
    older, newer = texts(10), [f"newer {text}" for text in texts(10)]
    first = asyncio.create_task(embedder.embed(older))
    await asyncio.sleep(0.005)  # the older call has its requests at the server
    await asyncio.gather(first, embedder.embed(newer))
    order = [text for batch in server.received for text in batch]
    assert max(order.index(text) for text in older) < min(order.index(text) for text in newer), order


async def test_batches_spread_over_two_servers(
    server: EmbeddingServer, second_server: EmbeddingServer, make_embedder
) -> None:
    for each in (server, second_server):
        each.delay(0.02)
    inputs = texts(8)
    embedder = make_embedder([server.url, second_server.url], batch_size=2)

    vectors = await embedder.embed(inputs)

    assert np.array_equal(vectors, server.vectors(inputs))
    assert server.requests["/api/embed"] >= 1
    assert second_server.requests["/api/embed"] >= 1
    assert server.requests["/api/embed"] + second_server.requests["/api/embed"] == 4
    assert server.max_in_flight == 1 and second_server.max_in_flight == 1
    received = sorted(text for each in (server, second_server) for batch in each.received for text in batch)
    assert received == sorted(inputs)


# legacy servers --------------------------------------------------------------------------------


async def test_legacy_server_falls_back_to_api_embeddings(server: EmbeddingServer, make_embedder) -> None:
    server.legacy = True
    inputs = texts(5)
    embedder = make_embedder([server.url], batch_size=2)

    first = await embedder.embed(inputs)
    again = await embedder.embed(inputs[:2])

    # The legacy endpoint returns unnormalised vectors; the embedder passes them through.
    assert np.array_equal(first, server.vectors(inputs, normalised=False))
    assert np.array_equal(again, server.vectors(inputs[:2], normalised=False))
    assert server.requests["/api/embed"] == 1  # tried once, then remembered
    assert server.requests["/api/embeddings"] == 7
    assert [batch[0] for batch in server.received] == inputs + inputs[:2]


async def test_legacy_server_unknown_model_is_404(server: EmbeddingServer, make_embedder) -> None:
    server.legacy = True
    embedder = make_embedder([server.url], model="bge-m3")
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    assert caught.value.status == 404
    assert 'model "bge-m3" not found' in str(caught.value)
    assert server.requests["/api/embeddings"] == 1


# errors and retries ----------------------------------------------------------------------------


async def test_unknown_model_is_404_without_retry(server: EmbeddingServer, make_embedder) -> None:
    embedder = make_embedder([server.url], model="bge-m3", retries=3)  # known size, not pulled
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a", "b"])
    error = caught.value
    assert error.status == 404
    assert 'model "bge-m3" not found, try pulling it first' in str(error)
    assert not error.transient and not is_transient(error)
    assert server.requests["/api/embed"] == 1
    assert server.requests["/api/embeddings"] == 0  # a missing model is not an old server


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_errors_are_retried(server: EmbeddingServer, make_embedder, status: int) -> None:
    server.fail_next(2, status)
    inputs = texts(3)
    embedder = make_embedder([server.url], retries=3)

    vectors = await embedder.embed(inputs)

    assert np.array_equal(vectors, server.vectors(inputs))
    assert server.requests["/api/embed"] == 3
    assert embedder.requests == 3


async def test_retry_after_is_honoured(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(1, 429, retry_after="1")
    embedder = make_embedder([server.url], retries=2)
    started = time.monotonic()
    vectors = await embedder.embed(["a"])
    assert time.monotonic() - started >= 0.9
    assert np.array_equal(vectors, server.vectors(["a"]))
    assert server.requests["/api/embed"] == 2


async def test_gives_up_after_retries(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(10, 503)
    embedder = make_embedder([server.url], retries=2)
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    error = caught.value
    assert error.transient and is_transient(error)
    assert error.status == 503
    assert "server busy" in str(error)
    assert server.requests["/api/embed"] == 3


async def test_bad_request_is_not_retried(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(1, 400, body={"error": "invalid input type"})
    embedder = make_embedder([server.url], retries=3)
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    error = caught.value
    assert not isinstance(error, InputTooLongError)
    assert error.status == 400
    assert not error.transient
    assert "invalid input type" in str(error)
    assert server.requests["/api/embed"] == 1


async def test_timeouts_are_retried_then_transient(server: EmbeddingServer, make_embedder) -> None:
    server.delay(0.5)
    embedder = make_embedder([server.url], timeout_s=0.1, retries=1)
    started = time.monotonic()
    with pytest.raises(EmbedderError) as caught:
        await embedder.embed(["a"])
    assert time.monotonic() - started < 0.5  # it did not wait for the slow answers
    assert caught.value.transient
    assert caught.value.status is None
    assert server.requests["/api/embed"] == 2


async def test_a_slow_answer_then_a_fast_one(server: EmbeddingServer, make_embedder) -> None:
    server.delay(0.5, count=1)
    embedder = make_embedder([server.url], timeout_s=0.1, retries=2)
    vectors = await embedder.embed(["a", "b"])
    assert np.array_equal(vectors, server.vectors(["a", "b"]))
    assert server.requests["/api/embed"] == 2


async def test_a_refused_connection_is_a_configuration_error_reported_at_once(make_embedder) -> None:
    """Nothing listening at any URL is a wrong setting, not an outage: after two quick tries (a
    server restarting) it fails with every URL tried and the variable to fix, and is not retried."""
    urls = [f"http://127.0.0.1:{free_port()}", "http://no-such-host.invalid:11434"]
    embedder = make_embedder(urls, retries=4)
    with pytest.raises(EmbedderUnreachable) as caught:
        await embedder.embed(texts(10))
    error = caught.value
    assert isinstance(error, ConfigurationError) and not error.transient and not is_transient(error)
    assert all(url in str(error) for url in urls)
    assert "Connection refused" in str(error) and "CITADEL_OLLAMA_URLS" in str(error)
    assert embedder.requests == 2 * 3, "each server: the first try and two quick ones, not the 4 retries of an outage"


async def test_a_refused_server_leaves_its_batches_to_the_others(
    server: EmbeddingServer, make_embedder
) -> None:
    """One server of two down: every batch goes to the other, and the next call skips the down one."""
    down = f"http://127.0.0.1:{free_port()}"
    embedder = make_embedder([down, server.url], batch_size=2, retries=4)
    inputs = texts(8)
    assert np.array_equal(await embedder.embed(inputs), server.vectors(inputs))
    assert server.requests["/api/embed"] == 4
    tried = embedder.requests
    assert np.array_equal(await embedder.embed(inputs[:2]), server.vectors(inputs[:2]))
    assert embedder.requests == tried + 1, "the server that refused a moment ago is left out"


async def test_wrong_vector_size_is_reported(server: EmbeddingServer, make_embedder) -> None:
    embedder = make_embedder([server.url], dimensions=512)
    with pytest.raises(EmbedderError, match="768-dimensional vectors, expected 512"):
        await embedder.embed(["a"])


# input length ----------------------------------------------------------------------------------


async def test_length_error_halves_the_batch_then_truncates(
    server: EmbeddingServer, make_embedder, caplog: pytest.LogCaptureFixture
) -> None:
    server.context_chars = 100
    long_text = "".join(f"{i:03d} " for i in range(63))  # 252 characters
    inputs = ["short a", long_text, "short b", "short c"]
    embedder = make_embedder([server.url], batch_size=4)

    with caplog.at_level(logging.WARNING, logger="citadel.embedders.http"):
        vectors = await embedder.embed(inputs)

    # [a L b c] -> [a L] -> [a] ok, [L] -> L[:126] -> L[:63] ok; then [b c] ok.
    assert server.batch_sizes == [4, 2, 1, 1, 1, 1, 2]
    assert server.received[-2] == [long_text[:63]]
    expected = server.vectors(["short a", long_text[:63], "short b", "short c"])
    assert np.array_equal(vectors, expected)
    assert "truncating" in caplog.text


async def test_length_error_on_a_tiny_input_is_raised(server: EmbeddingServer, make_embedder) -> None:
    server.context_chars = 10
    embedder = make_embedder([server.url])
    with pytest.raises(InputTooLongError) as caught:
        await embedder.embed(["x" * 16])
    assert caught.value.status == 400
    assert not caught.value.transient
    assert LENGTH_ERROR in str(caught.value)


async def test_length_errors_halve_on_a_legacy_server_too(server: EmbeddingServer, make_embedder) -> None:
    server.legacy = True
    server.context_chars = 40
    inputs = ["fine", "y" * 100]
    vectors = await make_embedder([server.url]).embed(inputs)
    assert np.array_equal(vectors, server.vectors(["fine", "y" * 25], normalised=False))


async def test_server_side_truncation_is_left_on(server: EmbeddingServer, make_embedder) -> None:
    # A server that honours "truncate" cuts the input itself: one request, no halving.
    server.honour_truncate = True
    server.context_chars = 30
    text = "0123456789" * 6
    vectors = await make_embedder([server.url]).embed([text])
    assert server.batch_sizes == [1]
    assert np.array_equal(vectors, server.vectors([text[:30]]))


async def test_long_input_is_truncated_before_sending(server: EmbeddingServer, make_embedder) -> None:
    text = "abcdefghij" * 20
    embedder = make_embedder([server.url], max_input_chars=50)
    vectors = await embedder.embed([text, "short"])
    assert server.received == [[text[:50], "short"]]
    assert server.requests["/api/embed"] == 1
    assert np.array_equal(vectors, server.vectors([text[:50], "short"]))


# check() ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["nomic-embed-text", "nomic-embed-text:latest", "all-minilm"])
async def test_check_passes_when_the_model_is_pulled(server: EmbeddingServer, make_embedder, model: str) -> None:
    await make_embedder([server.url], model=model).check()
    assert server.requests["/api/tags"] == 1


async def test_check_fails_when_the_model_is_not_pulled(server: EmbeddingServer, make_embedder) -> None:
    embedder = make_embedder([server.url], model="bge-m3")
    with pytest.raises(EmbedderError) as caught:
        await embedder.check()
    message = str(caught.value)
    assert caught.value.status == 404
    assert "ollama pull bge-m3" in message
    assert "nomic-embed-text:latest" in message  # lists what the server has
    assert server.url in message


async def test_check_covers_every_server(
    server: EmbeddingServer, second_server: EmbeddingServer, make_embedder
) -> None:
    second_server.models = {"all-minilm:latest": 384}
    embedder = make_embedder([server.url, second_server.url])
    with pytest.raises(EmbedderError) as caught:
        await embedder.check()
    assert second_server.url in str(caught.value)
    assert server.requests["/api/tags"] == 1
    assert second_server.requests["/api/tags"] == 1


async def test_check_of_an_unreachable_server_fails(make_embedder) -> None:
    embedder = make_embedder([f"http://127.0.0.1:{free_port()}"], retries=0)
    with pytest.raises(EmbedderError, match="cannot reach"):
        await embedder.check()


# malformed answers -----------------------------------------------------------------------------
# Indexing catches EmbedderError to dead-letter only the offending documents; any other exception
# fails the whole batch, so a malformed answer must surface as EmbedderError.


async def test_answer_without_embeddings_is_an_embedder_error(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(1, 200, body={"model": MODEL})
    with pytest.raises(EmbedderError, match="no 'embeddings' list"):
        await make_embedder([server.url]).embed(["a"])


async def test_too_few_vectors_is_an_embedder_error(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(1, 200, body={"model": MODEL, "embeddings": [server.vector("a").tolist()]})
    with pytest.raises(EmbedderError, match="returned 1 vectors for 2 inputs"):
        await make_embedder([server.url]).embed(["a", "b"])


async def test_ragged_vectors_are_an_embedder_error(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(1, 200, body={"model": MODEL, "embeddings": [server.vector("a").tolist(), [0.5] * 10]})
    with pytest.raises(EmbedderError, match="768"):
        await make_embedder([server.url]).embed(["a", "b"])


async def test_non_json_answer_is_an_embedder_error(server: EmbeddingServer, make_embedder) -> None:
    server.fail_next(1, 200, body="<html>a proxy's page</html>")
    with pytest.raises(EmbedderError):
        await make_embedder([server.url]).embed(["a"])


async def test_an_https_server_with_an_untrusted_certificate_is_refused(tmp_path) -> None:
    """Certificates are verified for https servers (only plain http ones skip loading them)."""
    import socket
    import ssl
    import threading

    import trustme

    ca = trustme.CA()  # a certificate authority nobody trusts
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                try:
                    context.wrap_socket(connection, server_side=True).close()
                except (ssl.SSLError, OSError):
                    pass  # the client broke the handshake off

    threading.Thread(target=serve, daemon=True).start()
    embedder = OllamaEmbedder(MODEL, [f"https://127.0.0.1:{listener.getsockname()[1]}"], retries=0)
    try:
        with pytest.raises(EmbedderError, match="TLS certificate not trusted: unable to get local issuer certificate"):
            await embedder.embed(["a text"])
    finally:
        await embedder.aclose()
        listener.close()
