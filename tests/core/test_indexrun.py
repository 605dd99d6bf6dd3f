"""One indexing run: what it reads, what makes a document unchanged, and runs that meet."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from citadel.registry import Registry, documents
from citadel.settings import Settings
from citadel.testing.corpus import dead_letters_of, index_state, index_with_own_backends, runs_of, write_corpus
from citadel.workflows.builtin import INDEX_OUTPUTS


async def test_the_summary_has_the_keys_the_index_step_declares(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    write_corpus(tmp_path / "corpus", files=1)
    summary = await index_with_own_backends(str(tmp_path / "corpus"), collection_name)
    assert tuple(summary.to_json()) == INDEX_OUTPUTS, "workflow validation checks ${steps.<index step>.output.<key>} against them"


async def test_new_chunk_settings_re_chunk_and_reuse_the_vectors_of_unchanged_texts(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, paragraphs=8)  # several chunks each at either size
    (corpus / "short.txt").write_text("A short note that fits in one chunk at either size.\n")
    first = await index_with_own_backends(str(corpus), collection_name)
    assert first["added"] == 4

    same = await index_with_own_backends(str(corpus), collection_name)
    assert same["unchanged"] == 4

    smaller = await index_with_own_backends(str(corpus), collection_name, chunk_size=400, chunk_overlap=40)
    assert (smaller["updated"], smaller["unchanged"]) == (4, 0), "the chunk settings are part of what is unchanged"
    assert smaller["chunks_reused"] >= 1, "the short note's one chunk keeps its vector"
    assert smaller["chunks_written"] > first["chunks_written"]
    vectors, chunks = await index_state(Settings(), collection_name)
    assert vectors == chunks == smaller["chunks_written"] + 1, "the short note's one chunk stays in place, unwritten"
    assert (await index_with_own_backends(str(corpus), collection_name, chunk_size=400, chunk_overlap=40))["unchanged"] == 4


async def test_documents_indexed_before_chunk_settings_were_kept_are_not_re_chunked(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    """An upgraded registry does not re-chunk everything; it notes the settings, so a later change counts."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2)
    await index_with_own_backends(str(corpus), collection_name)
    registry = Registry(Settings().registry_url)
    await registry.init()
    async with registry.engine.begin() as conn:
        await conn.execute(sa.update(documents).where(documents.c.collection == collection_name).values(chunking=""))
    assert (await index_with_own_backends(str(corpus), collection_name))["unchanged"] == 2
    async with registry.engine.connect() as conn:
        kept = (await conn.execute(sa.select(documents.c.chunking).where(documents.c.collection == collection_name))).scalars().all()
    await registry.aclose()
    assert kept and all(value.endswith(":1000/100") for value in kept)
    assert (await index_with_own_backends(str(corpus), collection_name, chunk_size=500, chunk_overlap=50))["updated"] == 2


async def test_the_data_folder_inside_the_indexed_folder_is_never_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collection_name: str, data_dir: Path
) -> None:
    project = tmp_path / "project"
    write_corpus(project, files=2)
    monkeypatch.chdir(project)
    monkeypatch.setenv("CITADEL_DATA_DIR", "./data")
    first = await index_with_own_backends(".", collection_name)
    again = await index_with_own_backends(".", collection_name)
    assert (project / "data" / "qdrant" / "meta.json").exists()
    assert (first["added"], first["failed"], again["unchanged"], again["failed"]) == (2, 0, 2, 0)
    assert await dead_letters_of(Settings(), collection_name) == []


async def test_a_source_without_documents_says_so(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "picture.png").write_bytes(b"\x89PNG")
    (empty / ".hidden.md").write_text("hidden notes")
    summary = await index_with_own_backends(str(empty), collection_name)
    assert summary["documents_seen"] == 0
    (warning,) = summary["warnings"]
    assert "found no documents" in warning and ".md" in warning and "hidden" in warning


async def test_a_second_run_of_the_same_source_waits_for_the_first(
    registry_backend: str, tmp_path: Path, collection_name: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs of one collection and source against shared backends: the second waits, says for
    which run, then finds everything done instead of doing the whole work again."""
    from citadel.indexing import pipeline

    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=6)
    embed_plan = pipeline.embed_plan

    async def slow_embed_plan(*args, **kwargs):
        await asyncio.sleep(3)
        return await embed_plan(*args, **kwargs)

    monkeypatch.setattr(pipeline, "embed_plan", slow_embed_plan)  # the plain loop's embedding step

    async def second() -> dict:
        await asyncio.sleep(0.5)
        return await index_with_own_backends(str(corpus), collection_name)

    with caplog.at_level(logging.WARNING, logger="citadel"):
        first, then = await asyncio.gather(index_with_own_backends(str(corpus), collection_name), second())
    assert (first["added"], then["unchanged"], then["added"], then["chunks_embedded"]) == (6, 6, 0, 0)
    (waited,) = [m for m in caplog.messages if "waiting for run" in m]
    assert f"waiting for run {first['run_id']}" in waited and f"into {collection_name}" in waited


async def test_a_source_with_nothing_to_do_is_answered_and_recorded_without_a_flow_run(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    from citadel.indexing import answer_unchanged

    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=5)
    await index_with_own_backends(str(corpus), collection_name)
    summary = await answer_unchanged(Settings(), str(corpus), collection_name)
    assert summary is not None
    assert (summary.unchanged, summary.documents_seen, summary.added, summary.chunks_embedded) == (5, 5, 0, 0)
    assert summary.flow_run_id is None and not summary.vector_store_opened and summary.store is not None
    latest = (await runs_of(Settings(), collection_name))[0]
    assert (latest.id, latest.status, latest.flow_run_id, latest.unchanged) == (summary.run_id, "completed", None, 5)


@pytest.mark.parametrize("change", ["edited", "added", "removed", "unreadable", "failure gone", "points lost", "new collection"])
async def test_any_work_is_handed_over_and_leaves_no_record(
    data_dir: Path, tmp_path: Path, collection_name: str, change: str
) -> None:
    """Whatever a run would write, delete, repair or report as failed goes to the full run."""
    from citadel.indexing import answer_unchanged
    from citadel.store import VectorStore
    from citadel.testing.corpus import append_paragraph

    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=5)
    if change == "failure gone":
        (corpus / "empty.md").write_text("")  # a dead letter, which a complete run resolves once it is gone
    await index_with_own_backends(str(corpus), collection_name)
    before = await runs_of(Settings(), collection_name)
    collection = collection_name
    if change == "edited":
        append_paragraph(paths[3:4])
    elif change == "added":
        write_corpus(corpus / "more", files=1)
    elif change == "removed":
        paths[0].unlink()
    elif change == "unreadable":
        (corpus / "empty.md").write_text("")
    elif change == "failure gone":
        (corpus / "empty.md").unlink()
    elif change == "points lost":
        settings = Settings()
        store = VectorStore.connect(url=None, api_key=None, path=settings.qdrant_path)
        registry = Registry(settings.registry_url)
        await registry.init()
        async with registry.engine.connect() as conn:
            one = (await conn.execute(sa.select(documents.c.id).where(documents.c.collection == collection_name).limit(1))).scalar_one()
        lost = await registry.point_ids(collection_name, [one])
        await registry.aclose()
        await store.delete(collection_name, lost)
    else:
        collection = f"{collection_name}_new"
    assert await answer_unchanged(Settings(), str(corpus), collection) is None
    assert await runs_of(Settings(), collection_name) == before, "a run that handed over leaves no record"
