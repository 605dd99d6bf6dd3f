"""The engine's live metrics count what a process really did: per server and model, per cache tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from citadel import metrics
from citadel.embedders import OllamaEmbedder
from citadel.embedders.cache import CachedEmbedder, LRUCache
from citadel.errors import EmbedderError
from tests.support.embedding_server import EmbeddingServer, free_port

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer() as started:
        yield started


async def test_requests_texts_errors_and_latency_per_server_and_model(server: EmbeddingServer) -> None:
    embedder = OllamaEmbedder("nomic-embed-text", [server.url], batch_size=4, backoff_s=0.01)
    labels = {"server": f"127.0.0.1:{server.port}", "model": "nomic-embed-text"}
    before = {name: value(name, **labels) for name in (
        "citadel_embedding_requests_total", "citadel_embedding_texts_total", "citadel_embedding_request_duration_seconds_count")}
    server.fail_next(1, 503)  # retried, then answered
    try:
        await embedder.embed([f"text {i}" for i in range(10)])  # three batches
        server.fail_next(1, 200, body={"embeddings": [[0.1, 0.2]]})  # the wrong size: not retried
        with pytest.raises(EmbedderError):
            await embedder.embed(["one more"])
    finally:
        await embedder.aclose()
    added = {name: value(name, **labels) - count for name, count in before.items()}
    assert added == {"citadel_embedding_requests_total": 5, "citadel_embedding_texts_total": 10,
                     "citadel_embedding_request_duration_seconds_count": 5}  # three batches, a retry, a bad answer
    assert value("citadel_embedding_errors_total", **labels, reason="http_5xx") >= 1
    assert value("citadel_embedding_errors_total", **labels, reason="invalid_response") >= 1
    assert value("citadel_embedding_slots_in_use", **labels) == 0  # every slot given back


async def test_a_refused_server_is_counted_as_refused() -> None:
    port = free_port()
    embedder = OllamaEmbedder("nomic-embed-text", [f"http://127.0.0.1:{port}"], retries=0)
    try:
        with pytest.raises(EmbedderError):
            await embedder.embed(["x"])
    finally:
        await embedder.aclose()
    assert value("citadel_embedding_errors_total", server=f"127.0.0.1:{port}", model="nomic-embed-text", reason="refused") == 1


async def test_cache_hits_and_misses_per_tier(server: EmbeddingServer) -> None:
    cache = LRUCache(max_items=100, name="test-tier")
    embedder = OllamaEmbedder("nomic-embed-text", [server.url])
    try:
        cached = CachedEmbedder(embedder, cache)
        await cached.embed(["a", "b"])
        await cached.embed(["a", "c"])
    finally:
        await embedder.aclose()
    assert value("citadel_embedding_cache_hits_total", cache="test-tier") == 1
    assert value("citadel_embedding_cache_misses_total", cache="test-tier") == 3
    assert value("citadel_embedding_cache_errors_total", cache="test-tier") == 0


def test_a_server_label_is_its_host_and_port_never_credentials() -> None:
    assert metrics.server_label("http://user:secret@embed.internal:11434/v1?key=x") == "embed.internal:11434"
    assert metrics.server_label("https://api.example.com/v1") == "api.example.com"
