"""The incremental contract of index_corpus, end to end on the embedded defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citadel.documents import chunk_text
from citadel.errors import CollectionMismatchError
from citadel.registry import Registry, index_runs
from citadel.settings import Settings
from citadel.store import VectorStore
from citadel.testing.corpus import append_paragraph, dead_letters_of, index_state, write_corpus
from flows.index_corpus import index_corpus
from tests.support.held_run import held_index_script
from tests.support.qdrant_server import QdrantTestServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def expected_chunks(paths: list[Path], settings: Settings) -> int:
    return sum(len(chunk_text(p.read_text(), settings.chunk_size, settings.chunk_overlap)) for p in paths)


async def test_index_reindex_edit_delete(
    data_dir: Path, tmp_path: Path, collection_name: str, registry_backend: str
) -> None:
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=12)
    settings = Settings()
    total = expected_chunks(paths, settings)

    first = await index_corpus(str(corpus), collection=collection_name)
    assert (first["added"], first["updated"], first["unchanged"], first["failed"]) == (12, 0, 0, 0)
    assert first["chunks_embedded"] == first["chunks_written"] <= total
    assert await index_state(settings, collection_name) == (total, total)

    again = await index_corpus(str(corpus), collection=collection_name)
    assert (again["added"], again["updated"], again["unchanged"], again["chunks_embedded"]) == (0, 0, 12, 0)
    assert again["vector_store_opened"] is False, "an unchanged run must not open the vector store"

    # Edit the last paragraph of one file: only that file is re-processed, and only its changed
    # chunk needs the embedder; the others reuse their stored vectors.
    edited = paths[3]
    text = edited.read_text()
    edited.write_text(text[: text.rfind("\n\n")] + "\n\nZebras juggle xylophones near quartz fountains.\n")
    after_edit = await index_corpus(str(corpus), collection=collection_name)
    assert (after_edit["updated"], after_edit["unchanged"], after_edit["added"]) == (1, 11, 0)
    new_chunks = chunk_text(edited.read_text(), settings.chunk_size, settings.chunk_overlap)
    assert 1 <= after_edit["chunks_embedded"] <= 2 < len(new_chunks)
    assert after_edit["chunks_embedded"] + after_edit["chunks_reused"] + after_edit["cache_hits"] == len(new_chunks)
    total = expected_chunks(paths, settings)
    assert await index_state(settings, collection_name) == (total, total)

    store = VectorStore.connect(url=None, api_key=None, path=settings.qdrant_path)
    from citadel.embedders import WordLlamaEmbedder

    query = (await WordLlamaEmbedder().embed(["zebras juggle xylophones quartz fountains"]))[0]
    hits = await store.search(collection_name, query, limit=1)
    assert hits[0].payload["document_id"] == str(edited)

    gone = paths.pop(5)
    gone.unlink()
    after_delete = await index_corpus(str(corpus), collection=collection_name)
    assert (after_delete["deleted"], after_delete["unchanged"]) == (1, 11)
    total = expected_chunks(paths, settings)
    assert await index_state(settings, collection_name) == (total, total)
    assert await store.search(collection_name, query, limit=5, filters={"document_id": str(gone)}) == []


async def test_deletes_stay_within_their_source(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_corpus(a, files=3, seed=1)
    write_corpus(b, files=3, seed=2)
    await index_corpus(str(a), collection=collection_name)
    await index_corpus(str(b), collection=collection_name)
    (a / "doc_00000.md").unlink()
    summary = await index_corpus(str(a), collection=collection_name)
    assert summary["deleted"] == 1
    registry = Registry(Settings().registry_url)
    await registry.init()
    stats = {s["collection"]: s for s in await registry.collection_stats()}
    await registry.aclose()
    assert stats[collection_name]["documents"] == 5


async def test_bad_documents_are_dead_lettered_and_retried(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITADEL_MAX_FILE_BYTES", "20000")
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    (corpus / "empty.txt").write_text("   \n")
    (corpus / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (corpus / "huge.txt").write_text("word " * 10000)
    (corpus / "records.jsonl").write_text('{"id": "ok", "text": "a fine record"}\n{"id": "bad"}\nnot json\n')
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert summary["added"] == 4  # three markdown files and one good record
    assert summary["failed"] == 6

    registry = Registry(Settings().registry_url)
    await registry.init()
    letters = {Path(letter["document_id"]).name: letter for letter in await registry.dead_letters(collection_name)}
    assert "binary" in letters["binary.txt"]["error"]
    assert "UTF-8" in letters["latin1.txt"]["error"]
    assert "CITADEL_MAX_FILE_BYTES" in letters["huge.txt"]["error"]
    assert "empty" in letters["empty.txt"]["error"]
    assert all(letter["attempts"] == 1 for letter in letters.values())

    (corpus / "latin1.txt").write_text("café")
    retried = await index_corpus(str(corpus), collection=collection_name)
    assert (retried["added"], retried["failed"], retried["unchanged"]) == (1, 5, 4)
    letters = {Path(letter["document_id"]).name: letter for letter in await registry.dead_letters(collection_name)}
    await registry.aclose()
    assert "latin1.txt" not in letters
    assert letters["binary.txt"]["attempts"] == 2


async def test_model_mismatch_stops_before_writing(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2)
    await index_corpus(str(corpus), collection=collection_name)
    before = await index_state(Settings(), collection_name)
    write_corpus(corpus, files=4, seed=99)
    monkeypatch.setenv("CITADEL_EMBEDDER", "hashing")
    with pytest.raises(CollectionMismatchError, match="256"):
        await index_corpus(str(corpus), collection=collection_name)
    assert await index_state(Settings(), collection_name) == before


async def test_inline_documents_and_full_reindex(data_dir: Path, collection_name: str) -> None:
    docs = [{"id": f"d{i}", "text": f"inline document number {i} about vectors", "metadata": {"n": i}} for i in range(5)]
    docs.append({"id": "broken"})
    first = await index_corpus(docs, collection=collection_name, source_name="api")
    assert (first["added"], first["failed"]) == (5, 1)
    full = await index_corpus(docs[:5], collection=collection_name, source_name="api", full=True)
    assert (full["updated"], full["unchanged"]) == (5, 0)
    pruned = await index_corpus(docs[:2], collection=collection_name, source_name="api", prune=True)
    assert pruned["deleted"] == 3
    assert await index_state(Settings(), collection_name) == (2, 2)


async def test_crash_between_store_and_registry_is_repaired(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=6)
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "2")
    await index_corpus(str(corpus), collection=collection_name)
    for path in paths[:4]:
        path.write_text(path.read_text().replace("Document", "Changed document") + "\n\nExtra closing words.\n")

    calls = {"n": 0}
    original = Registry.commit_documents

    async def crash_on_second_commit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash after the store acknowledged the points")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Registry, "commit_documents", crash_on_second_commit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await index_corpus(str(corpus), collection=collection_name)
    monkeypatch.setattr(Registry, "commit_documents", original)

    vectors, registered = await index_state(Settings(), collection_name)
    assert vectors <= registered, "every stored point is known to the registry, even mid-crash"
    repaired = await index_corpus(str(corpus), collection=collection_name)
    assert repaired["failed"] == 0
    total = expected_chunks(paths, Settings())
    assert await index_state(Settings(), collection_name) == (total, total)


def test_killed_run_resumes_without_duplicates(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    """SIGKILL a real indexing process half way, run again: exactly the expected chunks, once each."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=60, paragraphs=8)
    env = {**os.environ, "CITADEL_DOCUMENT_BATCH_SIZE": "4", "PYTHONPATH": str(REPO)}
    # The run holds at a point it reports: the embedding of document 30 never returns, so the
    # batches before it are indexed and the run cannot finish before the kill, however busy the machine.
    script = held_index_script(str(corpus), collection_name)
    # Its own process group, so the kill takes the whole tree, as a crashed machine would: the local
    # Prefect server that the run started must not outlive it.
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, start_new_session=True)
    registry_db = data_dir / "registry.db"
    deadline = time.monotonic() + 120
    import sqlite3

    indexed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if registry_db.exists():
            try:
                with sqlite3.connect(registry_db, timeout=1) as conn:
                    indexed = conn.execute(
                        "select count(*) from citadel_documents where collection=? and status='indexed'", (collection_name,)
                    ).fetchone()[0]
            except sqlite3.Error:
                indexed = 0
            if indexed >= 8:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 8 <= indexed <= 30

    import asyncio

    summary = asyncio.run(index_corpus(str(corpus), collection=collection_name))
    assert summary["failed"] == 0
    assert summary["added"] + summary["updated"] + summary["unchanged"] == 60
    assert summary["unchanged"] >= 8
    total = expected_chunks(paths, Settings())
    assert asyncio.run(index_state(Settings(), collection_name)) == (total, total)
    statuses = [run["status"] for run in asyncio.run(_runs_of(collection_name))]
    assert statuses == ["completed", "crashed"], "the killed run does not stay 'running' forever"


async def _runs_of(collection: str) -> list[dict]:
    registry = Registry(Settings().registry_url)
    await registry.init()
    try:
        return [run for run in await registry.recent_runs(1000) if run["collection"] == collection]
    finally:
        await registry.aclose()


async def test_a_store_that_lost_everything_is_refilled_by_the_next_run(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Indexed on the embedded store, then pointed at an empty Qdrant server (a new server, a lost
    volume): the next run notices, says so, and writes every document again."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=5)
    first = await index_corpus(str(corpus), collection=collection_name)
    assert first["added"] == 5
    with QdrantTestServer(tmp_path / "empty-server") as server:
        monkeypatch.setenv("CITADEL_QDRANT_URL", server.url)
        summary = await index_corpus(str(corpus), collection=collection_name)
        assert (summary["repaired"], summary["unchanged"], summary["added"]) == (5, 0, 0)
        assert summary["store"]["checked_by"] == "rest+client" and summary["store"]["points"] is None
        assert any("had lost" in warning for warning in summary["warnings"])
        total = expected_chunks(paths, Settings())
        assert await index_state(Settings(), collection_name) == (total, total)
        again = await index_corpus(str(corpus), collection=collection_name)
        assert (again["unchanged"], again["repaired"], again["vector_store_opened"]) == (5, 0, False)
        assert again["store"]["checked_by"] == "rest" and again["store"]["drift"] is False


async def test_a_run_whose_process_is_gone_is_marked_crashed_in_prefect_too(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="killed-indexing")
    def killed() -> None:
        """Stands for an index-corpus run whose process was killed."""

    async with get_client() as client:
        flow_run = await client.create_flow_run(killed)
        await client.set_flow_run_state(flow_run.id, Running(), force=True)
    registry = Registry(Settings().registry_url)
    await registry.init()
    run_id = await registry.start_run(collection_name, "somewhere", str(flow_run.id))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    async with registry.engine.begin() as conn:
        await conn.execute(index_runs.update().where(index_runs.c.id == run_id).values(pid=proc.pid))
    await registry.aclose()

    write_corpus(tmp_path / "corpus", files=1)
    await index_corpus(str(tmp_path / "corpus"), collection=collection_name)
    async with get_client() as client:
        state = (await client.read_flow_run(flow_run.id)).state
    assert state is not None and state.is_crashed() and "gone" in (state.message or "")
    assert {run["id"]: run["status"] for run in await _runs_of(collection_name)}[run_id] == "crashed"


async def test_while_the_store_opens_the_run_embeds_ahead_then_writes_in_order(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded store takes seconds to load: an edited run embeds its later batches meanwhile
    (within a bound), then writes them one after another, and ends as a plain run would."""
    from citadel import indexing

    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, files=8)
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "2")
    await index_corpus(str(corpus), collection=collection_name)
    append_paragraph(paths)

    embedded: list[int] = []
    embed_plan = indexing.embed_plan

    async def counted(*args: object, **kwargs: object) -> indexing.EmbeddedBatch:
        batch = await embed_plan(*args, **kwargs)  # type: ignore[arg-type]
        embedded.append(len(batch.plan.documents))
        return batch

    seen_at_open: list[int] = []
    connect = VectorStore.connect

    def slow_connect(**kwargs: object) -> VectorStore:
        deadline = time.monotonic() + 30  # long enough for a loop that waits instead of embedding
        while len(embedded) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_at_open.append(len(embedded))
        return connect(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(indexing, "embed_plan", counted)
    monkeypatch.setattr(VectorStore, "connect", staticmethod(slow_connect))
    edited = await index_corpus(str(corpus), collection=collection_name)
    assert seen_at_open == [4], "all four batches were embedded while the store was opening"
    assert (edited["updated"], edited["failed"], edited["vector_store_opened"]) == (8, 0, True)
    total = expected_chunks(paths, Settings())
    assert await index_state(Settings(), collection_name) == (total, total)
    again = await index_corpus(str(corpus), collection=collection_name)
    assert (again["unchanged"], again["chunks_embedded"]) == (8, 0)


async def test_a_retried_plan_step_sees_its_documents_as_new_not_as_duplicates(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan step reads its files, then fails on a transient error and is retried: the retry
    reads them again, and must not take them for documents the run has already seen."""
    from citadel.indexing import planning
    from tasks import indexing as indexing_tasks

    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3)
    failures = iter([ConnectionError("the registry went away for a moment")])
    real = planning.plan_batch

    async def flaky(*args, **kwargs):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await real(*args, **kwargs)

    monkeypatch.setattr(planning, "plan_batch", flaky)
    monkeypatch.setattr("tasks.index_steps.plan_batch", indexing_tasks.plan_batch.with_options(retry_delay_seconds=0))
    summary = await index_corpus(str(corpus), collection=collection_name)
    assert (summary["added"], summary["failed"]) == (3, 0)
    assert next(failures, None) is None, "the step failed once and was retried"
    assert await dead_letters_of(Settings(), collection_name) == []
