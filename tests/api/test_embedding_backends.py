"""The API in front of Ollama-protocol servers that embed one request at a time: concurrent
requests are embedded together, spread over the servers, and identical texts computed once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from tests.api.conftest import Api, base_env, create_keys
from tests.support.embedding_server import EmbeddingServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


@pytest.fixture(scope="module")
def ollama_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, list[EmbeddingServer]]]:
    servers = [EmbeddingServer().start(), EmbeddingServer().start()]
    root = tmp_path_factory.mktemp("api-ollama")
    env = base_env(root / "data", CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=",".join(s.url for s in servers),
                   CITADEL_API_MODELS="all-minilm")
    settings = Settings(data_dir=root / "data")
    keys = asyncio.run(create_keys(settings))
    process = ApiProcess(env, root).start()
    yield Api("ollama", process, settings, keys, env), servers
    process.stop()
    for server in servers:
        server.stop()


async def _generate_all(api: Api, texts: list[str]) -> list[dict]:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers("embed"), timeout=60,
                                 limits=httpx.Limits(max_connections=200)) as client:
        responses = await asyncio.gather(*(client.post("/api/v1/embeddings/generate", json={"text": t}) for t in texts))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:3]
    return [r.json() for r in responses]


def test_concurrent_requests_are_embedded_together_over_both_servers(ollama_api: tuple[Api, list[EmbeddingServer]]) -> None:
    api, servers = ollama_api
    for server in servers:
        server.reset()
        server.serial(0.05, 0.0005)
    texts = [f"concurrent text {i} {uuid.uuid4()}" for i in range(120)]
    results = asyncio.run(_generate_all(api, texts))
    for text, result in zip(texts, results, strict=True):
        assert result["model"] == "nomic-embed-text" and result["cached"] is False
        assert np.allclose(result["embedding"], servers[0].vector(text), atol=1e-6)
    requests = [server.requests["/api/embed"] for server in servers]
    assert all(count > 0 for count in requests), requests  # both servers took batches
    assert sum(requests) <= 120 / 4, requests  # micro-batched: not one request per text
    assert max(max(s.batch_sizes) for s in servers) <= 64


def test_identical_texts_in_flight_are_embedded_once(ollama_api: tuple[Api, list[EmbeddingServer]]) -> None:
    api, servers = ollama_api
    for server in servers:
        server.reset()
        server.serial(0.05, 0.0)
    text = f"the same question {uuid.uuid4()}"
    results = asyncio.run(_generate_all(api, [text] * 40))
    sent = [t for server in servers for batch in server.received for t in batch]
    assert sent.count(text) == 1
    assert all(r["embedding"] == results[0]["embedding"] for r in results)


def test_a_second_model_and_a_down_backend(ollama_api: tuple[Api, list[EmbeddingServer]]) -> None:
    api, servers = ollama_api
    for server in servers:
        server.reset()
    with api.client(headers=api.headers("embed")) as client:
        other = client.post("/api/v1/embeddings/generate", json={"text": "hello", "model": "all-minilm"}).json()
        assert other["model"] == "all-minilm" and other["dimensions"] == 384
        for server in servers:
            server.fail_next(20, 500)
        failed = client.post("/api/v1/embeddings/generate", json={"text": f"fails {uuid.uuid4()}", "model": "all-minilm"})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "backend_error"
    assert "500" not in failed.json()["error"]["message"] and "127.0.0.1" not in failed.json()["error"]["message"]
    for server in servers:
        server.reset()


def test_readiness_follows_the_embedder(ollama_api: tuple[Api, list[EmbeddingServer]], tmp_path: Path) -> None:
    api, _ = ollama_api
    with api.client() as client:
        ready = client.get("/readyz").json()
    assert ready["status"] == "healthy" and ready["dependencies"]["embedder"]["status"] == "up"
    env = base_env(tmp_path / "data", CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS="http://127.0.0.1:9",
                   CITADEL_EMBED_RETRIES="0", CITADEL_REDIS_URL="redis://127.0.0.1:9/0", CITADEL_API_HEALTH_TIMEOUT_S="3")
    with ApiProcess(env, tmp_path) as down:
        response = httpx.get(f"{down.url}/readyz", timeout=30)
        live = httpx.get(f"{down.url}/livez")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "unhealthy"
    assert body["dependencies"]["embedder"]["status"] == "down" and body["dependencies"]["embedder"]["error"]
    assert body["dependencies"]["redis"]["status"] == "down"
    assert live.status_code == 200


def test_only_the_cache_down_is_degraded_not_unhealthy(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", CITADEL_REDIS_URL="redis://127.0.0.1:9/0")
    keys = asyncio.run(create_keys(Settings(data_dir=tmp_path / "data")))
    with ApiProcess(env, tmp_path) as api:
        ready = httpx.get(f"{api.url}/readyz", timeout=30)
        embedded = httpx.post(f"{api.url}/api/v1/embeddings/generate", json={"text": "still works"},
                              headers={"X-API-Key": keys["embed"]}, timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["dependencies"]["redis"]["status"] == "down"
    assert embedded.status_code == 200  # a cache outage is a slower answer, never a failed one


def test_sigterm_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    server = EmbeddingServer().start()
    try:
        server.delay(2.0)
        env = base_env(tmp_path / "data", CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=server.url)
        keys = asyncio.run(create_keys(Settings(data_dir=tmp_path / "data")))
        api = ApiProcess(env, tmp_path).start()
        assert api.proc is not None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{api.url}/api/v1/embeddings/generate", json={"text": "in flight"},
                                  headers={"X-API-Key": keys["embed"]}, timeout=60)
            deadline = time.monotonic() + 20
            while server.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            api.proc.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200 and response.json()["model"] == "nomic-embed-text"
        assert api.proc.wait(60) == 0  # drained, then an ordinary exit
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{api.url}/livez", timeout=2)
    finally:
        server.stop()
