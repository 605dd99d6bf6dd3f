"""index_corpus through the Ollama embedder and the Redis cache: the production code path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import redis

from citadel.settings import Settings
from citadel.store import VectorStore
from citadel.testing.corpus import dead_letters_of, index_state, write_corpus
from flows.index_corpus import index_corpus
from tests.support.embedding_server import EmbeddingServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


async def _forget_the_ollama_limit() -> None:
    """The session's Prefect server is shared by the tests of this worker, and a run creates the
    backend's limit only where none exists (sized by its own Ollama servers): each test here starts
    without one, so that it is the one sized by this test's single server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks import limits

    async with get_client() as client:
        try:
            await client.delete_global_concurrency_limit_by_name("citadel-embedder-ollama")
        except ObjectNotFound:
            pass
    limits._ensured.clear()


@pytest.fixture
def ollama(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    asyncio.run(_forget_the_ollama_limit())
    with EmbeddingServer() as server:
        monkeypatch.setenv("CITADEL_EMBEDDER", "ollama")
        monkeypatch.setenv("CITADEL_EMBEDDING_MODEL", "all-minilm")
        monkeypatch.setenv("CITADEL_OLLAMA_URLS", server.url)
        monkeypatch.setenv("CITADEL_EMBED_BATCH_SIZE", "16")
        yield server


async def test_document_the_embedder_rejects_is_dead_lettered(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, paragraphs=2)
    # The batch request fails, then so does the first document's own request: only it is at fault.
    ollama.fail_next(2, 400, body={"error": "invalid input: unsupported characters"}, path="/api/embed")
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert (summary["added"], summary["failed"]) == (2, 1)
    letters = await dead_letters_of(Settings(), collection_name)
    assert [(Path(letter["document_id"]).name, letter["stage"]) for letter in letters] == [("doc_00000.md", "embed")]
    assert "unsupported characters" in letters[0]["error"]
    assert _stored_vectors_match_their_texts(ollama, collection_name) > 0, "the rejected document's rows left the batch, not others'"

    retried = await index_corpus(str(corpus), collection=collection_name)
    assert (retried["added"], retried["unchanged"], retried["failed"]) == (1, 2, 0)
    vectors, chunks = await index_state(Settings(), collection_name)
    assert vectors == chunks > 0
    assert _stored_vectors_match_their_texts(ollama, collection_name) == vectors


def _stored_vectors_match_their_texts(server: EmbeddingServer, collection: str) -> int:
    """Check that every point holds the vector of its own text; returns the points checked."""
    settings = Settings()
    store = VectorStore.connect(url=settings.qdrant_url, api_key=None, path=settings.qdrant_path)
    points, _ = store.client.scroll(collection, limit=1000, with_vectors=True, with_payload=True)
    for point in points:
        stored = point.vector[""] if isinstance(point.vector, dict) else point.vector
        expected = server.vector(point.payload["text"], "all-minilm")
        assert np.allclose(stored, expected / np.linalg.norm(expected), atol=1e-5), point.payload["source"]
    return len(points)


async def test_a_document_rejected_again_keeps_its_dead_letter_while_the_prune_runs_alongside(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str
) -> None:
    """The prune of a deleted file runs while the last batch embeds; the dead letters are resolved
    only once that embedding is done, so a document it rejects again keeps its letter (a second
    attempt), instead of losing it to the resolution and starting over at one."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=3, paragraphs=2)
    ollama.fail_next(2, 400, body={"error": "invalid input: unsupported characters"}, path="/api/embed")
    await index_corpus(str(corpus), collection=collection_name)

    paths[2].unlink()
    ollama.fail_next(2, 400, body={"error": "invalid input: unsupported characters"}, path="/api/embed")
    ollama.delay(0.5)  # the rejections arrive long after the prune is done
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert (summary["deleted"], summary["failed"], summary["unchanged"]) == (1, 1, 1)
    letters = await dead_letters_of(Settings(), collection_name)
    assert [(Path(letter["document_id"]).name, letter["attempts"]) for letter in letters] == [("doc_00000.md", 2)]
    vectors, chunks = await index_state(Settings(), collection_name)
    assert vectors == chunks > 0


async def test_transient_outage_is_retried_by_the_task(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITADEL_EMBED_RETRIES", "0")  # the client gives up at once; the Prefect task retries
    monkeypatch.setattr("tasks.retry.RETRY_DELAYS", [0.0])
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, paragraphs=2)
    ollama.fail_next(1, 503, path="/api/embed")
    from tasks import indexing as indexing_tasks

    fast = indexing_tasks.embed_chunks.with_options(retry_delay_seconds=0)
    monkeypatch.setattr("tasks.index_steps.embed_chunks", fast)
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert (summary["added"], summary["failed"]) == (2, 0)
    assert ollama.requests["/api/embed"] >= 2


async def test_unknown_model_fails_the_run_without_dead_letters(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITADEL_EMBEDDING_MODEL", "not-pulled-model")
    monkeypatch.setenv("CITADEL_EMBEDDING_DIMENSIONS", "64")
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, paragraphs=1)
    from citadel.errors import EmbedderError

    with pytest.raises(EmbedderError, match="not found"):
        await index_corpus(str(corpus), collection=collection_name)
    assert await dead_letters_of(Settings(), collection_name) == []


async def test_redis_cache_makes_a_full_reindex_free(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("CITADEL_REDIS_URL", redis_url)
    monkeypatch.setenv("CITADEL_EMBEDDING_MODEL", "mxbai-embed-large")  # a model no other test caches
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("citadel:embedding:mxbai-embed-large:*"):
        client.delete(key)
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, paragraphs=3, seed=11)
    first = await index_corpus(str(corpus), collection=collection_name)
    assert first["chunks_embedded"] > 0 and first["cache_hits"] == 0
    requests = ollama.requests["/api/embed"]
    full = await index_corpus(str(corpus), collection=collection_name, full=True)
    assert full["updated"] == 3 and full["chunks_embedded"] == 0
    assert full["cache_hits"] == first["chunks_embedded"]
    assert ollama.requests["/api/embed"] == requests, "a cached text never reaches the embedding server"
    stored = client.get(next(iter(client.scan_iter("citadel:embedding:mxbai-embed-large:*"))))
    assert len(stored) == 1024 * 4 and client.ttl(next(iter(client.scan_iter("citadel:embedding:mxbai-embed-large:*")))) > 0
    client.close()


async def test_a_run_takes_and_returns_a_slot_of_the_embedder_limit(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str
) -> None:
    """A shared backend gets a global concurrency limit (one slot per Ollama server); a run gives its slot back."""
    from prefect.client.orchestration import get_client

    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, paragraphs=1)
    await index_corpus(str(corpus), collection=collection_name)
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name("citadel-embedder-ollama")
    assert limit.limit == 1
    assert limit.active_slots == 0


async def test_a_retried_embedding_task_counts_a_rejected_document_once(
    ollama: EmbeddingServer, collection_name: str
) -> None:
    """Prefect hands a retried task the same plan object; isolating a failure must not edit it."""
    from citadel import indexing
    from citadel.documents import Document
    from citadel.resources import Resources

    resources = Resources(Settings())
    try:
        await indexing.prepare_collection(resources, collection_name)
        docs = [Document(f"d{i}", f"document number {i} text", "inline", origin=f"d{i}") for i in range(3)]
        plan = await indexing.plan_batch(
            await resources.registry(), collection_name, resources.embedder.model, docs, chunk_size=1000, chunk_overlap=0
        )
        for _ in range(2):  # the first try and its retry
            ollama.fail_next(2, 400, body={"error": "invalid input"}, path="/api/embed")
            batch = await indexing.embed_plan(resources, collection_name, plan)
            assert [f.document_id for f in batch.plan.failures] == ["d0"]
            assert len(batch.plan.documents) == 2
        assert (len(plan.documents), plan.failures) == (3, []), "the task's input is untouched"
    finally:
        await resources.aclose()


async def test_vectors_of_the_wrong_size_fail_the_run_instead_of_every_document(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose answers do not fit the configuration is the backend's fault, not each document's."""
    from citadel.errors import EmbedderError

    monkeypatch.setenv("CITADEL_EMBEDDING_DIMENSIONS", "768")  # all-minilm really gives 384
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, paragraphs=1)
    with pytest.raises(EmbedderError, match="returned 384-dimensional vectors, expected 768"):
        await index_corpus(str(corpus), collection=collection_name)
    assert await dead_letters_of(Settings(), collection_name) == [], "no document is blamed for the backend's answer"


def test_a_run_after_a_killed_one_takes_its_embedding_slot_at_once(
    ollama: EmbeddingServer, tmp_path: Path, collection_name: str, prefect_api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL an index run while it holds the backend's only slot: its lease would keep the slot
    for minutes, and the limit is global, so every run that embeds would wait. The next run sees
    the holder's process is gone and takes the slot at once, saying whose it gave back."""
    import asyncio
    import logging
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.flows.test_index_corpus import expected_chunks

    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=40, paragraphs=4)
    ollama.serial(0.05, 0.01)  # slow enough to be killed while embedding
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "CITADEL_DOCUMENT_BATCH_SIZE": "4"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "index", str(corpus), "--collection", collection_name, "--json"],
        env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while ollama.requests["/api/embed"] < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the corpus larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    ollama.serial(0.0, 0.0)

    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="tasks.limits"):
        summary = asyncio.run(index_corpus(str(corpus), collection=collection_name))
    took = time.monotonic() - started
    assert took < 60, f"the run after a killed one took {took:.0f} s: it waited for the dead run's slot"
    assert f"its process {proc.pid}" in caplog.text, caplog.text
    assert summary["failed"] == 0
    total = expected_chunks(paths, Settings())
    assert asyncio.run(index_state(Settings(), collection_name)) == (total, total)
