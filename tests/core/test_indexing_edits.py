"""An edited document writes only its difference: chunks that did not change keep their points,
which are neither read nor written again; new chunks are embedded, moved ones reuse their stored
vector, vanished ones are deleted by id. Run against the real embedded store and SQLite registry."""

from __future__ import annotations

from pathlib import Path

from citadel import metrics
from citadel.chunking import chunk_text
from citadel.indexrun import index_source
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.testing.corpus import write_corpus


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
