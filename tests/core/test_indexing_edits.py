"""An edited document writes only its difference: chunks that did not change keep their points,
which are neither read nor written again; new chunks are embedded, moved ones reuse their stored
vector, vanished ones are deleted by id. Run against the real embedded store and SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel import metrics
from citadel.documents import chunk_text
from citadel.indexing import BatchPlan, PlannedDocument, WriteBatcher, index_source
from citadel.registry import DeadLetter, DocumentRecord
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.testing.corpus import append_paragraph, write_corpus


def _upserted(collection: str) -> float:
    return metrics.POINTS_UPSERTED.labels(collection)._value.get()


async def _payloads(resources: Resources, collection: str, document_id: str) -> dict[int, dict[str, object]]:
    points, _ = resources.store.client.scroll(collection, limit=1000, with_payload=True, with_vectors=False)
    return {int(p.payload["chunk_index"]): dict(p.payload) for p in points if p.payload and p.payload["document_id"] == document_id}


async def test_an_appended_paragraph_writes_only_the_chunks_it_changed(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=6, paragraphs=8)
    settings = Settings()
    resources = Resources(settings)
    try:
        first = await index_source(resources, str(corpus), collection_name)
        edited = paths[0]
        points, _ = resources.store.client.scroll(collection_name, limit=1000, with_payload=True, with_vectors=False)
        doc_id = next(str(p.payload["document_id"]) for p in points if p.payload and str(p.payload["document_id"]).endswith(edited.name))
        before = await _payloads(resources, collection_name, doc_id)
        old_text = edited.read_text()
        edited.write_text(old_text + "\n\nA new closing paragraph about lighthouses and their keepers.\n")

        old_chunks = chunk_text(old_text, settings.chunk_size, settings.chunk_overlap)
        new_chunks = chunk_text(edited.read_text(), settings.chunk_size, settings.chunk_overlap)
        same = [c for c in new_chunks if c.index < len(old_chunks) and old_chunks[c.index].hash == c.hash]
        assert 0 < len(same) < len(new_chunks), "the edit must leave some chunks as they were and change others"

        upserted = _upserted(collection_name)
        second = await index_source(resources, str(corpus), collection_name)
        assert (second.updated, second.unchanged) == (1, 5)
        assert second.chunks_written == len(new_chunks) - len(same)
        assert _upserted(collection_name) - upserted == second.chunks_written, "only the changed chunks reach the store"
        assert second.chunks_embedded + second.cache_hits + second.chunks_reused == len(new_chunks)

        after = await _payloads(resources, collection_name, doc_id)
        assert sorted(after) == [c.index for c in new_chunks]
        for chunk in same:  # the very same points: not rewritten (their write time is the first run's)
            assert after[chunk.index]["indexed_at"] == before[chunk.index]["indexed_at"]
        changed = [c.index for c in new_chunks if c not in same]
        assert all(after[i]["indexed_at"] != before.get(i, {}).get("indexed_at") for i in changed)
        assert await resources.store.count(collection_name) == await (await resources.registry()).count_chunks(collection_name)
        assert first.chunks_written == sum(
            len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths
        ) - len(new_chunks) + len(old_chunks)
    finally:
        await resources.aclose()


async def test_new_metadata_rewrites_every_chunk_of_the_document(data_dir: Path, collection_name: str) -> None:
    """Metadata is in every payload: a chunk whose text is the same but whose metadata changed is written again."""
    text = "\n\n".join(f"Paragraph {i} about harbours, tides and the ships that wait for them." * 8 for i in range(6))
    resources = Resources(Settings())
    try:
        await index_source(resources, [{"id": "note", "text": text, "metadata": {"team": "a"}}], collection_name)
        again = await index_source(resources, [{"id": "note", "text": text, "metadata": {"team": "b"}}], collection_name)
        chunks = len(chunk_text(text, 1000, 100))
        assert (again.updated, again.chunks_written, again.chunks_embedded) == (1, chunks, 0)
        payloads = await _payloads(resources, collection_name, "note")
        assert {p["metadata"]["team"] for p in payloads.values()} == {"b"}  # type: ignore[index]
        assert await resources.store.count(collection_name) == chunks
    finally:
        await resources.aclose()


async def test_edits_spread_over_batches_are_written_together(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few changed documents in each batch make one write, not one per batch; the result is the same."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=12, paragraphs=4)
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "4")  # three batches of four documents
    settings = Settings()
    resources = Resources(settings)
    try:
        await index_source(resources, str(corpus), collection_name)
        append_paragraph([paths[0], paths[5], paths[9]])  # one edit in each batch
        paths[10].unlink()
        upserts: list[int] = []
        upsert = resources.store.upsert

        async def counted(collection: str, ids: list[str], *args: object, **kwargs: object) -> None:
            upserts.append(len(ids))
            await upsert(collection, ids, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(resources.store, "upsert", counted)
        edited = await index_source(resources, str(corpus), collection_name)
        assert (edited.updated, edited.unchanged, edited.deleted, edited.failed) == (3, 8, 1, 0)
        assert len(upserts) == 1, f"three batches' edits make one write, not {len(upserts)}"
        assert upserts == [edited.chunks_written]
        total = sum(len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths if p.exists())
        registry = await resources.registry()
        assert (await resources.store.count(collection_name), await registry.count_chunks(collection_name)) == (total, total)
    finally:
        await resources.aclose()


def test_a_write_batcher_gathers_until_a_batch_worth_of_documents_or_text() -> None:
    def planned(texts: int, size: int = 10) -> PlannedDocument:
        record = DocumentRecord("d", "s", "h", [])
        return PlannedDocument(record, "updated", ["x" * size] * texts, [{}] * texts)

    batcher = WriteBatcher(max_documents=3, max_bytes=1000)
    assert batcher.add(BatchPlan(unchanged=5), 1) is None  # nothing to write: not gathered
    assert batcher.take() is None
    assert batcher.add(BatchPlan([planned(2)]), 2) is None
    failed = DeadLetter("bad", "s", "load", "unreadable")
    assert batcher.add(BatchPlan([planned(1)], failures=[failed]), 3) is None
    full = batcher.add(BatchPlan([planned(1)]), 5)
    assert full is not None
    plan, label = full
    assert (len(plan.documents), plan.chunk_count, plan.failures, label) == (3, 4, [failed], "batches 2-5")
    assert batcher.take() is None  # emptied
    by_text = batcher.add(BatchPlan([planned(1, size=500)]), 6)  # half of max_bytes in text
    assert by_text is not None and by_text[1] == "batch 6"
    assert batcher.add(BatchPlan(failures=[failed]), 7) is None
    rest = batcher.take()
    assert rest is not None and rest[0].failures == [failed] and rest[1] == "batch 7"


async def test_a_run_counts_the_points_it_deletes(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    """What a run deletes is in its durable counts (``points_deleted``): the chunks a shortened
    document lost and every point of a deleted one, exactly what left the store."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=4, paragraphs=10)
    settings = Settings()
    resources = Resources(settings)
    try:
        first = await index_source(resources, str(corpus), collection_name)
        assert first.points_deleted == 0
        before = await resources.store.count(collection_name)
        chunks = {p: len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths}
        shortened, deleted = paths[0], paths[1]
        shortened.write_text(shortened.read_text()[:300])
        deleted.unlink()
        kept = len(chunk_text(shortened.read_text(), settings.chunk_size, settings.chunk_overlap))
        second = await index_source(resources, str(corpus), collection_name)
        assert (second.updated, second.deleted) == (1, 1)
        # The shortened document's one chunk changed too: all its old points go, one new one comes.
        assert (kept, second.chunks_written) == (1, 1)
        assert second.points_deleted == chunks[shortened] + chunks[deleted]
        assert await resources.store.count(collection_name) == before - second.points_deleted + second.chunks_written
        runs = await (await resources.registry()).recent_runs(limit=1)
        assert runs[0].points_deleted == second.points_deleted  # kept in the registry, for the metrics of every worker's runs
    finally:
        await resources.aclose()
