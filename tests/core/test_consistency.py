"""A store that stops matching the registry is noticed by the next run, and repaired.

Against the embedded store and the real Redis cache; the server case runs over the Qdrant test
server in tests/flows and tests/cli.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from citadel.documents import chunk_text
from citadel.embedders.cache import cache_key
from citadel.hashing import point_id
from citadel.indexing import awaiting_repair, check_store, index_source, reconcile, sample_point_ids, verify
from citadel.registry import ChunkRow, DocumentRecord
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.testing.corpus import index_state, index_with_own_backends, write_corpus


async def _point_ids_of(resources: Resources, collection: str, document_ids: list[str]) -> list[str]:
    return await (await resources.registry()).point_ids(collection, document_ids)


@pytest.fixture
async def resources(data_dir: Path):
    held = Resources(Settings())
    yield held
    await held.aclose()


async def test_a_consistent_store_passes_the_cheap_check_without_being_opened(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=5)
    await index_with_own_backends(str(corpus), collection_name)
    summary = await index_with_own_backends(str(corpus), collection_name)
    assert summary["unchanged"] == 5
    assert summary["vector_store_opened"] is False, "the check reads the store's files, it does not open the store"
    store = summary["store"]
    assert store["checked_by"] == "file" and store["drift"] is False
    assert store["points"] == store["expected"] == store["registered"] > 0
    assert store["sampled"] == min(32, store["expected"])


async def test_points_the_store_lost_are_written_again_through_the_cache(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """Three documents lose their points; the next run repairs them, embedding only what the cache lacks."""
    monkeypatch.setenv("CITADEL_REDIS_URL", redis_url)
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=6, seed=31)
    resources = Resources(Settings())
    try:
        await index_source(resources, str(corpus), collection_name)
        lost = [str(p) for p in paths[:3]]
        await resources.store.delete(collection_name, await _point_ids_of(resources, collection_name, lost))
        # The cache forgets the chunks of one of them: only those reach the embedder again.
        settings = resources.settings
        forgotten = [c.text for c in chunk_text(paths[0].read_text(), settings.chunk_size, settings.chunk_overlap)]
        client = redis.Redis.from_url(redis_url)
        client.delete(*(cache_key(resources.embedder.model, text) for text in forgotten))
        client.close()

        summary = await index_source(resources, str(corpus), collection_name)
    finally:
        await resources.aclose()
    assert (summary["repaired"], summary["unchanged"], summary["added"], summary["updated"]) == (3, 3, 0, 0)
    assert summary["chunks_embedded"] == len(forgotten)
    assert summary["store"]["missing"] > 0 and summary["store"]["documents_to_repair"] == 3
    assert any("had lost" in warning for warning in summary["warnings"])
    vectors, chunks = await index_state(Settings(), collection_name)
    assert vectors == chunks > 0


async def test_a_store_without_the_collection_is_refilled(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    """A new Qdrant server, a lost volume: the collection is created again and every document written."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=4)
    resources = Resources(Settings())
    try:
        await index_source(resources, str(corpus), collection_name)
        await resources.store.delete_collection(collection_name)
        check = await check_store(resources, collection_name)
        assert check.points is None and check.drift and check.missing == check.expected > 0
        summary = await index_source(resources, str(corpus), collection_name)
        assert summary["repaired"] == 4 and summary["unchanged"] == 0
        assert not (await check_store(resources, collection_name)).drift
    finally:
        await resources.aclose()


async def test_pending_chunks_of_an_interrupted_run_are_not_drift(
    resources: Resources, tmp_path: Path, collection_name: str
) -> None:
    """A run killed after its write-ahead intent leaves pending chunks the store may or may not hold."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    await index_source(resources, str(corpus), collection_name)
    registry = await resources.registry()
    text = "a document whose run was killed"
    rows = [ChunkRow(point_id(collection_name, "killed", 0, "h"), 0, "h")]
    await registry.write_intent(collection_name, resources.embedder.model, [DocumentRecord("killed", "elsewhere", "x", rows)])
    assert not (await check_store(resources, collection_name)).drift, "intent written, points not yet stored"
    vector = np.asarray(await resources.embedder.embed([text]))[0]
    await resources.store.upsert(collection_name, [rows[0].point_id], [vector], [{"text": text}])
    check = await check_store(resources, collection_name)
    assert not check.drift and check.points == check.registered == check.expected + 1, "stored, not yet committed"


async def test_unknown_points_are_reported_and_only_verify_repair_removes_them(
    resources: Resources, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    await index_source(resources, str(corpus), collection_name)
    stray = str(uuid.uuid4())
    vector = np.asarray(await resources.embedder.embed(["not Citadel's"]))[0]
    await resources.store.upsert(collection_name, [stray], [vector], [{"text": "not Citadel's"}])

    check = await reconcile(resources, collection_name)
    assert (check.stray, check.missing) == (1, 0)
    assert stray in await resources.store.present(collection_name, [stray]), "a run never deletes what it does not know"

    (report,) = await verify(resources.settings, collection_name)
    assert (report.check.stray, report.check.drift, report.after, report.healthy) == (1, True, None, False)
    (repaired,) = await verify(resources.settings, collection_name, repair=True)
    assert repaired.after is not None and repaired.after.check.stray == 0 and repaired.healthy
    assert not await resources.store.present(collection_name, [stray])


async def test_verify_repair_indexes_again_every_source_that_lost_points(
    resources: Resources, tmp_path: Path, collection_name: str
) -> None:
    """A run repairs its own source's documents; the other source's wait, named, until verify --repair."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_corpus(first, files=2, seed=1)
    write_corpus(second, files=2, seed=2)
    await index_source(resources, str(first), collection_name)
    await index_source(resources, str(second), collection_name)
    every = [str(p) for folder in (first, second) for p in sorted(folder.iterdir())]
    await resources.store.delete(collection_name, await _point_ids_of(resources, collection_name, every))

    summary = await index_source(resources, str(first), collection_name)
    assert summary["repaired"] == 2
    assert any(str(second) in warning for warning in summary["warnings"]), "the user is told which source to index"
    registry = await resources.registry()
    assert await awaiting_repair(registry, collection_name) == {collection_name: {str(second): 2}}

    (report,) = await verify(resources.settings, collection_name, repair=True)
    assert [(step.source, step.repaired) for step in report.reindexed] == [(str(second), 2)]
    assert report.after is not None and not report.after.check.drift and report.after.awaiting_repair == {}
    vectors, chunks = await index_state(Settings(), collection_name)
    assert vectors == chunks


async def test_inline_documents_stay_marked_until_they_are_sent_again(
    resources: Resources, collection_name: str
) -> None:
    records = [{"id": f"r{i}", "text": f"record number {i} about vector caches"} for i in range(3)]
    await index_source(resources, records, collection_name, source_name="crm")
    await resources.store.delete(collection_name, await _point_ids_of(resources, collection_name, ["r0", "r1"]))
    (report,) = await verify(resources.settings, collection_name, repair=True)
    assert report.reindexed == [] and report.after is not None and report.after.awaiting_repair == {"crm": 2}
    summary = await index_source(resources, records, collection_name, source_name="crm")
    assert (summary["repaired"], summary["unchanged"]) == (2, 1)
    assert await awaiting_repair(await resources.registry(), collection_name) == {}


async def test_the_sample_comes_from_the_points_the_store_must_hold(
    resources: Resources, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=8)
    await index_source(resources, str(corpus), collection_name)
    registry = await resources.registry()
    every = set(await _point_ids_of(resources, collection_name, [str(p) for p in corpus.iterdir()]))
    for size in (1, 5, len(every), len(every) + 10):
        sample = await sample_point_ids(registry, collection_name, size)
        assert len(sample) == min(size, len(every)) and set(sample) <= every and len(set(sample)) == len(sample)
