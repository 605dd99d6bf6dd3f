"""The registry on SQLite and on the real Postgres: schema, collections, intents, commits, runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.hashing import point_id, sha256_text
from citadel.registry import (
    SCHEMA_VERSION,
    ChunkRow,
    DeadLetter,
    DocumentRecord,
    Registry,
    schema_version,
)

MODEL = "test-model"


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests run against a SQLite file and the real Postgres."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'registry' / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def registry(registry_url: str, collection_name: str) -> AsyncIterator[Registry]:
    reg = Registry(registry_url)
    await reg.init()
    yield reg
    await reg.forget_collection(collection_name)
    await reg.aclose()


def record(collection: str, doc_id: str, texts: list[str], *, source: str = "src", content: str | None = None) -> DocumentRecord:
    """A DocumentRecord whose chunks carry the ids the indexer would give them."""
    rows = [ChunkRow(point_id(collection, doc_id, i, sha256_text(t)), i, sha256_text(t)) for i, t in enumerate(texts)]
    return DocumentRecord(doc_id, source, content or sha256_text("|".join(texts)), rows)


async def test_init_is_idempotent_and_records_schema_version(registry_url: str) -> None:
    """Initialising twice (on fresh instances) works and leaves exactly one row for the version."""
    for _ in range(2):
        reg = Registry(registry_url)
        try:
            await reg.init()
            await reg.init()
        finally:
            await reg.aclose()
    reg = Registry(registry_url)
    try:
        await reg.init()
        async with reg.engine.connect() as conn:
            versions = (await conn.execute(sa.select(schema_version.c.version))).scalars().all()
    finally:
        await reg.aclose()
    assert versions.count(SCHEMA_VERSION) == 1
    assert max(versions) == SCHEMA_VERSION


async def test_dialect_matches_url(registry: Registry, registry_url: str) -> None:
    """SQLite URLs use SQLite, Postgres URLs use asyncpg on Postgres."""
    assert registry.dialect == ("sqlite" if registry_url.startswith("sqlite") else "postgresql")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A registry written by a newer Citadel is refused with an upgrade hint."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}"
    reg = Registry(url)
    await reg.init()
    async with reg.engine.begin() as conn:
        await conn.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_at=sa.func.now()))
    await reg.aclose()
    newer = Registry(url)
    try:
        with pytest.raises(ConfigurationError, match="upgrade Citadel"):
            await newer.init()
    finally:
        await newer.aclose()


def test_bad_url_is_configuration_error() -> None:
    """A malformed database URL is a configuration error naming the URL."""
    with pytest.raises(ConfigurationError, match="bad CITADEL_DATABASE_URL"):
        Registry("not-a-database-url")


async def test_ensure_collection_then_mismatch(registry: Registry, collection_name: str) -> None:
    """The first embedder claims the collection; another model or size is refused."""
    assert await registry.collection(collection_name) is None
    await registry.ensure_collection(collection_name, MODEL, 16)
    await registry.ensure_collection(collection_name, MODEL, 16)
    assert await registry.collection(collection_name) == (MODEL, 16)
    with pytest.raises(CollectionMismatchError, match="not other-model"):
        await registry.ensure_collection(collection_name, "other-model", 16)
    with pytest.raises(CollectionMismatchError, match="32 dimensions"):
        await registry.ensure_collection(collection_name, MODEL, 32)
    assert await registry.collection(collection_name) == (MODEL, 16)


async def test_write_intent_then_commit(registry: Registry, collection_name: str) -> None:
    """Intents are pending until commit, which marks chunks and the document indexed with its hash."""
    rec = record(collection_name, "doc-1", ["a", "b", "c"], content="hash-1")
    await registry.write_intent(collection_name, MODEL, [rec])
    pending = await registry.get_documents(collection_name, ["doc-1"])
    assert pending["doc-1"].status == "pending"
    chunks = (await registry.get_chunks(collection_name, ["doc-1"]))["doc-1"]
    assert {c.state for c in chunks} == {"pending"}
    assert len(chunks) == 3

    await registry.commit_documents(collection_name, MODEL, [rec])
    doc = (await registry.get_documents(collection_name, ["doc-1"]))["doc-1"]
    assert (doc.status, doc.content_hash, doc.chunk_count) == ("indexed", "hash-1", 3)
    chunks = (await registry.get_chunks(collection_name, ["doc-1"]))["doc-1"]
    assert sorted((c.point_id, c.position, c.chunk_hash, c.state) for c in chunks) == sorted(
        (c.point_id, c.position, c.chunk_hash, "indexed") for c in rec.chunks
    )
    assert sorted(await registry.point_ids(collection_name, ["doc-1"])) == sorted(c.point_id for c in rec.chunks)
    assert await registry.count_chunks(collection_name) == 3


async def test_commit_removes_stale_intents(registry: Registry, collection_name: str) -> None:
    """Chunks of an earlier version (or an abandoned intent) disappear once the new version commits."""
    old = record(collection_name, "doc-1", ["old one", "old two", "shared"], content="v1")
    await registry.write_intent(collection_name, MODEL, [old])
    await registry.commit_documents(collection_name, MODEL, [old])
    abandoned = record(collection_name, "doc-1", ["never stored"], content="v-abandoned")
    await registry.write_intent(collection_name, MODEL, [abandoned])
    new = record(collection_name, "doc-1", ["new", "shared"], content="v2")
    await registry.write_intent(collection_name, MODEL, [new])
    assert len((await registry.get_chunks(collection_name, ["doc-1"]))["doc-1"]) == 6

    await registry.commit_documents(collection_name, MODEL, [new])
    chunks = (await registry.get_chunks(collection_name, ["doc-1"]))["doc-1"]
    assert {c.point_id for c in chunks} == {c.point_id for c in new.chunks}
    assert {c.state for c in chunks} == {"indexed"}
    doc = (await registry.get_documents(collection_name, ["doc-1"]))["doc-1"]
    assert (doc.content_hash, doc.chunk_count, doc.status) == ("v2", 2, "indexed")


async def test_commit_without_chunks_removes_all(registry: Registry, collection_name: str) -> None:
    """Committing a document with no chunks leaves none of its old chunks behind."""
    rec = record(collection_name, "doc-1", ["x", "y"])
    await registry.write_intent(collection_name, MODEL, [rec])
    await registry.commit_documents(collection_name, MODEL, [rec])
    empty = DocumentRecord("doc-1", "src", "empty-hash", [])
    await registry.commit_documents(collection_name, MODEL, [empty])
    assert (await registry.get_chunks(collection_name, ["doc-1"]))["doc-1"] == []
    assert (await registry.get_documents(collection_name, ["doc-1"]))["doc-1"].chunk_count == 0


async def test_commit_only_touches_its_own_documents(registry: Registry, collection_name: str) -> None:
    """Committing one document leaves another document's pending intents alone."""
    one = record(collection_name, "doc-1", ["a"])
    two = record(collection_name, "doc-2", ["b", "c"])
    await registry.write_intent(collection_name, MODEL, [one, two])
    await registry.commit_documents(collection_name, MODEL, [one])
    stored = await registry.get_documents(collection_name, ["doc-1", "doc-2"])
    assert stored["doc-1"].status == "indexed"
    assert stored["doc-2"].status == "pending"
    chunks = await registry.get_chunks(collection_name, ["doc-1", "doc-2"])
    assert {c.state for c in chunks["doc-2"]} == {"pending"}
    assert len(chunks["doc-2"]) == 2


async def test_a_batch_of_edited_documents_keeps_exactly_each_ones_chunks(registry: Registry, collection_name: str) -> None:
    """Each document of a committed batch keeps exactly its own chunks; rows of chunks it kept are
    left as they were, and another document's pending intents stay."""
    before = [record(collection_name, f"doc-{n}", [f"{n} a", f"{n} b", f"{n} c"]) for n in range(3)]
    await registry.write_intent(collection_name, MODEL, before)
    await registry.commit_documents(collection_name, MODEL, before)
    after = [record(collection_name, f"doc-{n}", [f"{n} a", f"{n} b", f"{n} new"]) for n in range(3)]
    bystander = record(collection_name, "doc-x", ["x"])
    await registry.write_intent(collection_name, MODEL, [*after, bystander])
    await registry.commit_documents(collection_name, MODEL, after)
    stored = await registry.get_chunks(collection_name, [*(f"doc-{n}" for n in range(3)), "doc-x"])
    for rec in after:
        assert sorted((c.point_id, c.state) for c in stored[rec.id]) == sorted((c.point_id, "indexed") for c in rec.chunks)
    assert [(c.point_id, c.state) for c in stored["doc-x"]] == [(bystander.chunks[0].point_id, "pending")]


async def test_a_document_of_more_chunks_than_a_statement_may_bind_commits(registry: Registry, collection_name: str) -> None:
    """40,000 chunks (asyncpg binds 32,767 parameters at most) are kept in one commit, and an edit
    that drops half of them leaves exactly the other half."""
    texts = [f"part {n}" for n in range(40_000)]
    big = record(collection_name, "big", texts)
    await registry.write_intent(collection_name, MODEL, [big])
    await registry.commit_documents(collection_name, MODEL, [big])
    smaller = record(collection_name, "big", texts[::2])
    await registry.write_intent(collection_name, MODEL, [smaller])
    await registry.commit_documents(collection_name, MODEL, [smaller])
    stored = (await registry.get_chunks(collection_name, ["big"]))["big"]
    assert sorted(c.point_id for c in stored) == sorted(c.point_id for c in smaller.chunks)
    assert {c.state for c in stored} == {"indexed"}


async def test_batches_of_every_size_share_their_statements(registry: Registry, collection_name: str) -> None:
    """A long run commits batches of many sizes; each query keeps one statement text whatever the
    number of ids, so the drivers' caches of prepared statements do not grow with the batches."""
    texts: dict[int, set[str]] = {}
    for size in (1, 2, 5):
        seen: set[str] = set()
        def note(conn: object, cursor: object, statement: str, *args: object, seen: set[str] = seen) -> None:
            seen.add(statement)
        sa.event.listen(registry.engine.sync_engine, "before_cursor_execute", note)
        batch = [record(collection_name, f"doc-{size}-{n}", [f"{size} {n} {k}" for k in range(size + n)]) for n in range(size)]
        await registry.get_documents(collection_name, [r.id for r in batch])
        await registry.get_chunks(collection_name, [r.id for r in batch])
        await registry.write_intent(collection_name, MODEL, batch)
        await registry.commit_documents(collection_name, MODEL, batch)
        sa.event.remove(registry.engine.sync_engine, "before_cursor_execute", note)
        texts[size] = seen
    assert texts[1] == texts[2] == texts[5]
    assert all(statement.count("?") + statement.count("$") < 20 for statement in texts[5])


async def test_reindexing_marks_document_pending_again(registry: Registry, collection_name: str) -> None:
    """A new intent on an indexed document makes it pending, so a crash before commit is visible."""
    rec = record(collection_name, "doc-1", ["a"], content="v1")
    await registry.write_intent(collection_name, MODEL, [rec])
    await registry.commit_documents(collection_name, MODEL, [rec])
    await registry.write_intent(collection_name, MODEL, [record(collection_name, "doc-1", ["b"], content="v2")])
    doc = (await registry.get_documents(collection_name, ["doc-1"]))["doc-1"]
    assert doc.status == "pending"


async def test_empty_calls_are_no_ops(registry: Registry, collection_name: str) -> None:
    """Empty batches write nothing."""
    await registry.write_intent(collection_name, MODEL, [])
    await registry.commit_documents(collection_name, MODEL, [])
    await registry.record_dead_letters(collection_name, [])
    assert await registry.get_documents(collection_name, []) == {}
    assert await registry.count_chunks(collection_name) == 0


async def test_dead_letters_count_attempts_and_clear_on_commit(registry: Registry, collection_name: str) -> None:
    """A failing document's attempts grow with each failure; indexing it clears its dead letter."""
    letter = DeadLetter("doc-bad", "src", "load", "first reason")
    await registry.record_dead_letters(collection_name, [letter, DeadLetter("doc-other", "src", "embed", "x")])
    await registry.record_dead_letters(collection_name, [DeadLetter("doc-bad", "src", "embed", "second reason")])
    letters = {row["document_id"]: row for row in await registry.dead_letters(collection_name)}
    assert set(letters) == {"doc-bad", "doc-other"}
    assert letters["doc-bad"]["attempts"] == 2
    assert (letters["doc-bad"]["stage"], letters["doc-bad"]["error"]) == ("embed", "second reason")
    assert letters["doc-other"]["attempts"] == 1

    rec = record(collection_name, "doc-bad", ["fixed now"])
    await registry.write_intent(collection_name, MODEL, [rec])
    await registry.commit_documents(collection_name, MODEL, [rec])
    remaining = [row["document_id"] for row in await registry.dead_letters(collection_name)]
    assert remaining == ["doc-other"]


async def test_dead_letters_a_complete_run_did_not_reproduce_are_resolved(registry: Registry, collection_name: str) -> None:
    """Only the named source's letters go, and only those that did not fail again."""
    await registry.record_dead_letters(collection_name, [
        DeadLetter("a", "src", "load", "still bad"), DeadLetter("b", "src", "load", "fixed since"),
        DeadLetter("c", "other", "load", "another source"),
    ])
    assert await registry.resolve_dead_letters(collection_name, "src", {"a"}) == 1
    remaining = sorted(row["document_id"] for row in await registry.dead_letters(collection_name))
    assert remaining == ["a", "c"]


async def test_a_document_with_more_chunks_than_one_statement_can_bind(registry: Registry, collection_name: str) -> None:
    """Past asyncpg's 32,767 parameters a document still commits, and keeps exactly its chunks."""
    first = record(collection_name, "huge", [f"chunk {i}" for i in range(33_000)])
    await registry.write_intent(collection_name, MODEL, [first])
    await registry.commit_documents(collection_name, MODEL, [first])
    edited = record(collection_name, "huge", [f"chunk {i}" for i in range(32_990)] + ["new one", "new two"])
    await registry.write_intent(collection_name, MODEL, [edited])
    await registry.commit_documents(collection_name, MODEL, [edited])
    assert await registry.count_chunks(collection_name) == 32_992


async def test_dead_letter_error_is_truncated(registry: Registry, collection_name: str) -> None:
    """Huge error messages are stored cut to 4000 characters."""
    await registry.record_dead_letters(collection_name, [DeadLetter("doc", "src", "load", "e" * 10_000)])
    (row,) = await registry.dead_letters(collection_name)
    assert len(row["error"]) == 4000


async def test_iter_document_ids_pages_by_source(registry: Registry, collection_name: str) -> None:
    """Ids come back per source, sorted, in pages of the requested size, with none repeated."""
    a_ids = [f"a-{i:02d}" for i in range(7)]
    recs = [record(collection_name, d, [d], source="source-a") for d in a_ids]
    recs += [record(collection_name, f"b-{i}", ["b"], source="source-b") for i in range(3)]
    await registry.write_intent(collection_name, MODEL, recs)
    await registry.commit_documents(collection_name, MODEL, recs)
    pages = [[i for i, _ in page] async for page in registry.iter_documents(collection_name, "source-a", page=3)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [d for p in pages for d in p] == sorted(a_ids)
    b_pages = [[i for i, _ in page] async for page in registry.iter_documents(collection_name, "source-b", page=100)]
    assert b_pages == [["b-0", "b-1", "b-2"]]
    assert [page async for page in registry.iter_documents(collection_name, "nowhere")] == []
    assert [page async for page in registry.iter_documents("other-" + collection_name, "source-a")] == []


async def test_delete_documents_removes_chunks_documents_and_dead_letters(registry: Registry, collection_name: str) -> None:
    """Deleting a document forgets its chunks, its row and its dead letter; others stay."""
    keep = record(collection_name, "keep", ["k1", "k2"])
    gone = record(collection_name, "gone", ["g1", "g2", "g3"])
    await registry.write_intent(collection_name, MODEL, [keep, gone])
    await registry.commit_documents(collection_name, MODEL, [keep, gone])
    await registry.record_dead_letters(collection_name, [DeadLetter("gone", "src", "embed", "x"), DeadLetter("other", "src", "load", "y")])

    await registry.delete_documents(collection_name, ["gone"])
    assert set(await registry.get_documents(collection_name, ["keep", "gone"])) == {"keep"}
    assert await registry.point_ids(collection_name, ["gone"]) == []
    assert await registry.count_chunks(collection_name) == 2
    assert [row["document_id"] for row in await registry.dead_letters(collection_name)] == ["other"]
    await registry.delete_documents(collection_name, ["gone"])  # repeating is harmless
    await registry.delete_documents(collection_name, [])


async def test_runs_start_finish_and_list(registry: Registry, collection_name: str) -> None:
    """A run is recorded as running, then finished with its counts; unknown count keys are ignored."""
    run_id = await registry.start_run(collection_name, "x" * 2000, "flow-123")
    runs = {r["id"]: r for r in await registry.recent_runs(limit=1000)}
    assert runs[run_id]["status"] == "running"
    assert runs[run_id]["finished_at"] is None
    assert len(runs[run_id]["source"]) == 1024
    assert runs[run_id]["flow_run_id"] == "flow-123"

    counts = {"added": 3, "updated": 1, "unchanged": 5, "deleted": 2, "failed": 1, "chunks_embedded": 9,
              "cache_hits": 4, "duration_s": 1.5, "not_a_column": 99}
    await registry.finish_run(run_id, "completed", counts)
    run = {r["id"]: r for r in await registry.recent_runs(limit=1000)}[run_id]
    assert run["status"] == "completed"
    assert run["finished_at"] is not None
    assert run["collection"] == collection_name
    assert {k: run[k] for k in counts if k != "not_a_column"} == {k: v for k, v in counts.items() if k != "not_a_column"}


async def test_recent_runs_newest_first_and_limited(registry: Registry, collection_name: str) -> None:
    """recent_runs lists newest first and honours the limit."""
    first = await registry.start_run(collection_name, "s", None)
    second = await registry.start_run(collection_name, "s", None)
    ours = [r["id"] for r in await registry.recent_runs(limit=1000) if r["id"] in (first, second)]
    assert ours == [second, first]
    assert len(await registry.recent_runs(limit=1)) == 1


async def test_collection_stats_counts(registry: Registry, collection_name: str) -> None:
    """Stats count indexed documents, all chunks and dead letters of each collection."""
    await registry.ensure_collection(collection_name, MODEL, 8)
    done = record(collection_name, "done", ["a", "b"])
    pending = record(collection_name, "pending", ["c"])
    await registry.write_intent(collection_name, MODEL, [done, pending])
    await registry.commit_documents(collection_name, MODEL, [done])
    await registry.record_dead_letters(collection_name, [DeadLetter("bad", "src", "load", "x")])
    stats = {row["collection"]: row for row in await registry.collection_stats()}
    registry_fields = {"collection", "model", "dimensions", "documents", "chunks", "dead_letters", "awaiting_repair"}
    assert stats[collection_name].model_dump(include=registry_fields) == {
        "collection": collection_name, "model": MODEL, "dimensions": 8,
        "documents": 1, "chunks": 3, "dead_letters": 1, "awaiting_repair": 0,
    }


async def test_forget_collection(registry: Registry, collection_name: str) -> None:
    """Forgetting a collection removes its rows from every table."""
    await registry.ensure_collection(collection_name, MODEL, 8)
    rec = record(collection_name, "d", ["a"])
    await registry.write_intent(collection_name, MODEL, [rec])
    await registry.commit_documents(collection_name, MODEL, [rec])
    await registry.record_dead_letters(collection_name, [DeadLetter("bad", "src", "load", "x")])
    await registry.forget_collection(collection_name)
    assert await registry.collection(collection_name) is None
    assert await registry.get_documents(collection_name, ["d"]) == {}
    assert await registry.count_chunks(collection_name) == 0
    assert await registry.dead_letters(collection_name) == []
    assert collection_name not in {row["collection"] for row in await registry.collection_stats()}


async def test_large_batches_span_parameter_chunks(registry: Registry, collection_name: str) -> None:
    """Lookups of more ids than one IN-list chunk (500) still find every document."""
    recs = [record(collection_name, f"doc-{i:04d}", [str(i)]) for i in range(620)]
    await registry.write_intent(collection_name, MODEL, recs)
    await registry.commit_documents(collection_name, MODEL, recs)
    ids = [r.id for r in recs]
    assert len(await registry.get_documents(collection_name, ids)) == 620
    assert len(await registry.point_ids(collection_name, ids)) == 620
    await registry.delete_documents(collection_name, ids)
    assert await registry.count_chunks(collection_name) == 0


async def test_an_older_schema_is_upgraded_at_start(tmp_path) -> None:
    """A version-1 registry (no origin column) gains it, and the new version is recorded."""
    import sqlalchemy as sa

    from citadel.registry import SCHEMA_VERSION

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    first = Registry(url)
    await first.init()
    async with first.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE citadel_documents DROP COLUMN origin"))
        await conn.execute(sa.text("DELETE FROM citadel_schema_version"))
        await conn.execute(sa.text("INSERT INTO citadel_schema_version (version, applied_at) VALUES (1, CURRENT_TIMESTAMP)"))
    await first.aclose()

    upgraded = Registry(url)
    await upgraded.init()
    async with upgraded.engine.connect() as conn:
        columns = [row[1] for row in await conn.execute(sa.text("PRAGMA table_info(citadel_documents)"))]
        versions = [row[0] for row in await conn.execute(sa.text("SELECT version FROM citadel_schema_version ORDER BY version"))]
    await upgraded.aclose()
    assert "origin" in columns
    assert versions == list(range(1, SCHEMA_VERSION + 1))  # 1 as found, then each upgrade applied


async def test_a_version_2_registry_gains_the_columns_of_version_3(tmp_path: Path) -> None:
    """Chunk settings per document, and who runs each run: added to a registry made before them."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'v2.db'}"
    first = Registry(url)
    await first.init()
    async with first.engine.begin() as conn:
        for table, column in [("citadel_documents", "chunking"), ("citadel_index_runs", "repaired"), ("citadel_index_runs", "lock_key"),
                              ("citadel_index_runs", "host"), ("citadel_index_runs", "pid"), ("citadel_index_runs", "heartbeat_at")]:
            await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        await conn.execute(sa.text("DROP TABLE citadel_locks"))
        await conn.execute(sa.text("DELETE FROM citadel_schema_version"))
        await conn.execute(sa.text("INSERT INTO citadel_schema_version (version, applied_at) VALUES (2, CURRENT_TIMESTAMP)"))
    await first.aclose()

    upgraded = Registry(url)
    await upgraded.init()
    run_id = await upgraded.start_run("c", "s", None, lock_key="k")
    await upgraded.finish_run(run_id, "completed", {"repaired": 2})
    (run,) = [r for r in await upgraded.recent_runs(5) if r["id"] == run_id]
    await upgraded.aclose()
    assert (run["repaired"], run["lock_key"], run["pid"]) == (2, "k", os.getpid()) and run["heartbeat_at"] is not None


async def test_two_processes_creating_a_new_sqlite_registry_at_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    registries = [Registry(url) for _ in range(4)]
    await asyncio.gather(*(registry.init() for registry in registries))
    async with registries[0].engine.connect() as conn:
        versions = (await conn.execute(sa.select(schema_version.c.version))).scalars().all()
    for registry in registries:
        await registry.aclose()
    assert versions == [SCHEMA_VERSION]


async def test_a_registry_that_cannot_be_reached_is_a_configuration_error_without_its_password() -> None:
    from tests.support.embedding_server import free_port

    registry = Registry(f"postgresql+asyncpg://citadel:s3cret@127.0.0.1:{free_port()}/db")
    with pytest.raises(ConfigurationError) as caught:
        await registry.init()
    await registry.aclose()
    assert "cannot open the registry database" in str(caught.value) and "Connect call failed" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


async def test_keys_made_before_grants_keep_what_they_reached_and_the_audit_trail_is_append_only(tmp_path: Path) -> None:
    """Schema 9: an older registry's keys reach every collection and source (an upgrade locks no
    one out); the audit table refuses updates and deletes."""
    from citadel.apikeys import ApiKeys
    from citadel.audit import AuditLog

    url = f"sqlite+aiosqlite:///{tmp_path / 'v8.db'}"
    first = Registry(url)
    await first.init()
    created = await ApiKeys(first).create("old", ["search"])
    async with first.engine.begin() as conn:
        for column in ("collections", "sources", "rate_limits", "expires_at", "replaced_by", "principal"):
            await conn.execute(sa.text(f"ALTER TABLE citadel_api_keys DROP COLUMN {column}"))
        await conn.execute(sa.text("DELETE FROM citadel_schema_version"))
        await conn.execute(sa.text("INSERT INTO citadel_schema_version (version, applied_at) VALUES (8, CURRENT_TIMESTAMP)"))
    await first.aclose()

    upgraded = Registry(url)
    await upgraded.init()
    try:
        identity = await ApiKeys(upgraded).authenticate(created.key)
        assert identity.grants.every_collection and identity.grants.sources == ("*",)
        assert identity.owner == f"key:{created.key_id}"  # its principal: itself
        trail = AuditLog(upgraded)
        await trail.record("cli:ops", "key.created", target="key:x", detail="token=abc.def ctd_abcdef123456_SECRETPART")
        (line,) = [entry for entry in await trail.read() if entry.target == "key:x"]
        assert "SECRETPART" not in line.detail and "abc.def" not in line.detail
        for statement in ("UPDATE citadel_audit SET outcome = 'ok'", "DELETE FROM citadel_audit"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                async with upgraded.engine.begin() as conn:
                    await conn.execute(sa.text(statement))
        assert len(await trail.read()) >= 2  # the key's creation and the line above, still there
    finally:
        await upgraded.aclose()


async def test_a_growing_postgres_registry_refreshes_its_planner_statistics(postgres_url: str) -> None:
    """Each time the written chunks about double, the documents' and chunks' statistics are refreshed."""
    from citadel.registry.base import ANALYZE_FIRST

    registry = Registry(postgres_url)
    await registry.init()

    async def analyzed(expected: int | None = None) -> int:
        """Postgres's count of ANALYZE runs on the chunks (its statistics reach other sessions within a second or so)."""
        for _ in range(100):
            async with registry.engine.connect() as conn:
                count = int((await conn.execute(sa.text(
                    "SELECT coalesce(sum(analyze_count), 0) FROM pg_stat_user_tables WHERE relname = 'citadel_chunks'"))).scalar_one())
            if expected is None or count >= expected:
                return count
            await asyncio.sleep(0.1)
        return count

    try:
        before = await analyzed()
        await registry.note_written(ANALYZE_FIRST - 1)
        assert registry._written_since_analyze == ANALYZE_FIRST - 1, "not yet"
        await registry.note_written(1)
        assert registry._written_since_analyze == 0 and await analyzed(before + 1) == before + 1
        await registry.note_written(ANALYZE_FIRST)  # not yet doubled again
        assert registry._written_since_analyze == ANALYZE_FIRST
        await registry.note_written(ANALYZE_FIRST * 2)
        assert await analyzed(before + 2) == before + 2
    finally:
        await registry.aclose()
