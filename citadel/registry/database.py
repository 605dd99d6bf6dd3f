"""The document registry: what is indexed where, in SQL (Postgres via asyncpg, or a SQLite file).

One code path (SQLAlchemy Core, async) serves both databases. The registry follows the vector
store, never leads it: before points are written it records their ids as *pending* (a write-ahead
intent, so a crash can never leave a point the registry does not know), and only after the store
acknowledged the write does it mark the document indexed with its new content hash.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.models import CollectionStatus, DeadLetterRecord, IndexRunRecord, Result
from citadel.registry import runtotals
from citadel.registry.schema import (
    RUN_COUNTS,
    SCHEMA_VERSION,
    chunks,
    collections,
    dead_letters,
    documents,
    index_runs,
    metadata,
    schema_version,
    upgrade,
)
from citadel.settings import masked_url

__all__ = [
    "SCHEMA_VERSION", "ChunkRow", "DeadLetter", "DocumentRecord", "Registry", "StoredChunk", "StoredDocument",
    "chunks", "collections", "dead_letters", "documents", "index_runs", "schema_version",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class StoredDocument:
    id: str
    content_hash: str
    status: str
    chunk_count: int
    source: str = ""
    chunking: str = ""  # the chunk settings it was split with; "" for rows older than schema v3


@dataclass(frozen=True)
class StoredChunk:
    point_id: str
    position: int
    chunk_hash: str
    state: str


@dataclass(frozen=True)
class ChunkRow:
    point_id: str
    position: int
    chunk_hash: str


@dataclass
class DocumentRecord:
    """What the registry keeps of one document once its vectors are stored."""

    id: str
    source: str
    content_hash: str
    chunks: list[ChunkRow] = field(default_factory=list)
    origin: str = ""
    chunking: str = ""


@dataclass
class DeadLetter:
    document_id: str
    source: str
    stage: str
    error: str


MAX_BOUND_IDS = 10_000  # ids bound in one statement; asyncpg's limit is 32,767 parameters


def chunked(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_collection_model(name: str, known: tuple[str, int], model: str, dimensions: int) -> None:
    """Refuse to mix models: ``known`` is the (model, dimensions) a collection was indexed with."""
    if known != (model, dimensions):
        raise CollectionMismatchError(
            f"collection {name!r} is indexed with {known[0]} ({known[1]} dimensions), not {model} "
            f"({dimensions} dimensions); choose another collection or the same embedder"
        )


class Registry:
    """Async access to the registry tables of one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        try:
            self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        except Exception as exc:
            raise ConfigurationError(f"bad CITADEL_DATABASE_URL {masked_url(url)!r}: {exc}") from exc
        if url.startswith("sqlite"):
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._ready = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def insert_statement(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT of this database's dialect, which has ON CONFLICT."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def init(self) -> None:
        """Create or upgrade the schema (idempotent, safe for concurrent workers on Postgres).

        A database that cannot be reached is a :class:`ConfigurationError` naming it (password
        masked), raised before any work starts.
        """
        if self._ready:
            return
        try:
            if self.url.startswith("sqlite"):
                path = self.url.split(":///", 1)[-1]
                if path and path != ":memory:":
                    import pathlib

                    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(5):
                try:
                    await self._create_or_upgrade()
                    break
                except (sa.exc.OperationalError, sa.exc.IntegrityError) as exc:
                    # Two processes creating a new SQLite registry at once: the second finds the
                    # first's tables or version row, or both read the schema and then both want to
                    # write it, which SQLite refuses to one of them at once (no busy wait can help);
                    # the next attempt sees the tables whole.
                    if self.dialect != "sqlite" or attempt == 4 or not _lost_creation_race(exc):
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
        except (OSError, sa.exc.DBAPIError) as exc:
            raise ConfigurationError(
                f"cannot open the registry database {masked_url(self.url)}: {_reason(exc)}; "
                "start it, or fix CITADEL_DATABASE_URL (unset, the registry is a SQLite file under CITADEL_DATA_DIR)"
            ) from exc
        self._ready = True

    async def _create_or_upgrade(self) -> None:
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(724113)"))
            await conn.run_sync(metadata.create_all)
            current = (await conn.execute(sa.select(sa.func.max(schema_version.c.version)))).scalar()
            if current is None:
                await conn.execute(schema_version.insert().values(version=SCHEMA_VERSION, applied_at=utcnow()))
                current = SCHEMA_VERSION
            if current > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the registry schema is version {current}, newer than this Citadel ({SCHEMA_VERSION}); upgrade Citadel"
                )
            for version in await conn.run_sync(upgrade, current):
                if version == 6:
                    await conn.run_sync(runtotals.backfill)
                await conn.execute(schema_version.insert().values(version=version, applied_at=utcnow()))

    async def aclose(self) -> None:
        await self.engine.dispose()

    # collections -------------------------------------------------------------------------
    async def collection(self, name: str) -> tuple[str, int] | None:
        """The (model, dimensions) of collection ``name``, or None when unknown."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(collections.c.model, collections.c.dimensions).where(collections.c.name == name))).first()
        return (row.model, row.dimensions) if row else None

    async def ensure_collection(self, name: str, model: str, dimensions: int) -> None:
        """Remember which model fills ``name``; another model or size is refused before any write."""
        known = await self.collection(name)
        if known is None:
            async with self.engine.begin() as conn:
                stmt = self.insert_statement(collections).values(name=name, model=model, dimensions=dimensions, created_at=utcnow())
                await conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
            known = await self.collection(name)
        assert known is not None
        check_collection_model(name, known, model, dimensions)

    async def forget_collection(self, name: str) -> None:
        """Drop every registry row of a collection (used by ``--full``)."""
        async with self.engine.begin() as conn:
            for table in (chunks, documents, dead_letters):
                await conn.execute(table.delete().where(table.c.collection == name))
            await conn.execute(collections.delete().where(collections.c.name == name))

    # documents ---------------------------------------------------------------------------
    async def get_documents(self, collection: str, ids: Sequence[str]) -> dict[str, StoredDocument]:
        found: dict[str, StoredDocument] = {}
        async with self.engine.connect() as conn:
            for part in chunked(list(ids)):
                query = sa.select(
                    documents.c.id, documents.c.content_hash, documents.c.status, documents.c.chunk_count,
                    documents.c.source, documents.c.chunking,
                ).where(documents.c.collection == collection, documents.c.id.in_(part))
                for row in await conn.execute(query):
                    found[row.id] = StoredDocument(row.id, row.content_hash, row.status, row.chunk_count, row.source, row.chunking)
        return found

    async def get_chunks(self, collection: str, document_ids: Sequence[str]) -> dict[str, list[StoredChunk]]:
        found: dict[str, list[StoredChunk]] = {doc_id: [] for doc_id in document_ids}
        async with self.engine.connect() as conn:
            for part in chunked(list(document_ids)):
                query = sa.select(chunks).where(chunks.c.collection == collection, chunks.c.document_id.in_(part))
                for row in await conn.execute(query):
                    found[row.document_id].append(StoredChunk(row.point_id, row.position, row.chunk_hash, row.state))
        return found

    async def write_intent(self, collection: str, model: str, records: Sequence[DocumentRecord]) -> None:
        """Before writing points: mark the documents pending and remember every point id about to exist."""
        if not records:
            return
        now = utcnow()
        async with self.engine.begin() as conn:
            doc_rows = [
                dict(collection=collection, id=r.id, source=r.source, origin=r.origin or r.id, content_hash="",
                     chunk_count=0, model=model, status="pending", created_at=now, updated_at=now)
                for r in records
            ]
            stmt = self.insert_statement(documents)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["collection", "id"], set_={"status": "pending", "updated_at": stmt.excluded.updated_at}
                ),
                doc_rows,
            )
            chunk_rows = [
                dict(collection=collection, point_id=c.point_id, document_id=r.id, position=c.position,
                     chunk_hash=c.chunk_hash, state="pending")
                for r in records
                for c in r.chunks
            ]
            if chunk_rows:
                await conn.execute(
                    self.insert_statement(chunks).on_conflict_do_nothing(index_elements=["collection", "point_id"]), chunk_rows
                )

    async def commit_documents(self, collection: str, model: str, records: Sequence[DocumentRecord]) -> None:
        """After the store acknowledged the points: keep exactly these chunks and mark the documents indexed."""
        if not records:
            return
        now = utcnow()
        document_ids = [r.id for r in records]
        async with self.engine.begin() as conn:
            keep_all = [c.point_id for r in records for c in r.chunks]
            if len(keep_all) + len(document_ids) <= MAX_BOUND_IDS:
                # One statement for the batch (a point id belongs to one document): an edited corpus
                # commits hundreds of documents, each keeping most of its chunks.
                mine = (chunks.c.collection == collection, chunks.c.document_id.in_(document_ids))
                await conn.execute(chunks.delete().where(*mine, chunks.c.point_id.not_in(keep_all) if keep_all else sa.true()))
            else:
                for record in records:
                    await self._keep_only(conn, collection, record)
            await conn.execute(
                chunks.update()
                .where(chunks.c.collection == collection, chunks.c.document_id.in_(document_ids), chunks.c.state != "indexed")
                .values(state="indexed")
            )
            stmt = self.insert_statement(documents)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["collection", "id"],
                    set_={
                        "source": stmt.excluded.source,
                        "origin": stmt.excluded.origin,
                        "content_hash": stmt.excluded.content_hash,
                        "chunking": stmt.excluded.chunking,
                        "chunk_count": stmt.excluded.chunk_count,
                        "model": stmt.excluded.model,
                        "status": "indexed",
                        "updated_at": stmt.excluded.updated_at,
                    },
                ),
                [
                    dict(collection=collection, id=r.id, source=r.source, origin=r.origin or r.id,
                         content_hash=r.content_hash, chunking=r.chunking, chunk_count=len(r.chunks), model=model, status="indexed",
                         created_at=now, updated_at=now)
                    for r in records
                ],
            )
            await conn.execute(
                dead_letters.delete().where(dead_letters.c.collection == collection, dead_letters.c.document_id.in_(document_ids))
            )

    @staticmethod
    async def _keep_only(conn: AsyncConnection, collection: str, record: DocumentRecord) -> None:
        """Delete the chunk rows of one document that it no longer has."""
        keep = [c.point_id for c in record.chunks]
        mine = (chunks.c.collection == collection, chunks.c.document_id == record.id)
        if len(keep) <= MAX_BOUND_IDS:
            await conn.execute(chunks.delete().where(*mine, chunks.c.point_id.not_in(keep) if keep else sa.true()))
            return
        # More ids than one statement may bind (asyncpg allows 32,767): list, then delete in parts.
        wanted = set(keep)
        existing = (await conn.execute(sa.select(chunks.c.point_id).where(*mine))).scalars().all()
        for part in chunked([pid for pid in existing if pid not in wanted]):
            await conn.execute(chunks.delete().where(*mine, chunks.c.point_id.in_(part)))

    async def record_chunking(self, collection: str, document_ids: Sequence[str], chunking: str) -> None:
        """Note the chunk settings of unchanged documents indexed before the registry kept them."""
        async with self.engine.begin() as conn:
            for part in chunked(list(document_ids)):
                await conn.execute(
                    documents.update()
                    .where(documents.c.collection == collection, documents.c.id.in_(part), documents.c.chunking == "")
                    .values(chunking=chunking)
                )

    async def iter_documents(
        self, collection: str, source: str, page: int = 5000
    ) -> AsyncIterator[list[tuple[str, str]]]:
        """(id, origin) of the documents registered from ``source``, a page at a time."""
        last = ""
        while True:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(documents.c.id, documents.c.origin)
                        .where(documents.c.collection == collection, documents.c.source == source, documents.c.id > last)
                        .order_by(documents.c.id)
                        .limit(page)
                    )
                ).all()
            if not rows:
                return
            yield [(row.id, row.origin) for row in rows]
            last = rows[-1].id

    async def point_ids(self, collection: str, document_ids: Sequence[str]) -> list[str]:
        stored = await self.get_chunks(collection, document_ids)
        return [c.point_id for doc in stored.values() for c in doc]

    async def delete_documents(self, collection: str, document_ids: Sequence[str]) -> None:
        """Forget documents whose points are already deleted from the store."""
        async with self.engine.begin() as conn:
            for part in chunked(list(document_ids)):
                for table in (chunks, documents, dead_letters):
                    column = table.c.document_id if "document_id" in table.c else table.c.id
                    await conn.execute(table.delete().where(table.c.collection == collection, column.in_(part)))

    # dead letters ------------------------------------------------------------------------
    async def record_dead_letters(self, collection: str, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        now = utcnow()
        stmt = self.insert_statement(dead_letters)
        async with self.engine.begin() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["collection", "document_id"],
                    set_={
                        "stage": stmt.excluded.stage,
                        "error": stmt.excluded.error,
                        "source": stmt.excluded.source,
                        "attempts": dead_letters.c.attempts + 1,
                        "last_failed_at": stmt.excluded.last_failed_at,
                    },
                ),
                [
                    dict(collection=collection, document_id=letter.document_id, source=letter.source, stage=letter.stage,
                         error=letter.error[:4000], attempts=1, first_failed_at=now, last_failed_at=now)
                    for letter in letters
                ],
            )

    async def resolve_dead_letters(self, collection: str, source: str, still_failing: set[str]) -> int:
        """Remove the dead letters of ``source`` that a complete run did not reproduce: fixed,
        deleted, or unchanged since they last went through. Returns how many went."""
        async with self.engine.begin() as conn:
            query = sa.select(dead_letters.c.document_id).where(
                dead_letters.c.collection == collection, dead_letters.c.source == source
            )
            resolved = [doc_id for doc_id in (await conn.execute(query)).scalars() if doc_id not in still_failing]
            for part in chunked(resolved):
                await conn.execute(
                    dead_letters.delete().where(
                        dead_letters.c.collection == collection, dead_letters.c.document_id.in_(part)
                    )
                )
        return len(resolved)

    async def dead_letters(self, collection: str | None = None, limit: int = 100) -> list[DeadLetterRecord]:
        query = sa.select(dead_letters).order_by(dead_letters.c.last_failed_at.desc()).limit(limit)
        if collection:
            query = query.where(dead_letters.c.collection == collection)
        async with self.engine.connect() as conn:
            return [DeadLetterRecord.model_validate(dict(row._mapping)) for row in await conn.execute(query)]

    # runs --------------------------------------------------------------------------------
    async def start_run(
        self, collection: str, source: str, flow_run_id: str | None, *, run_id: str | None = None, lock_key: str | None = None
    ) -> str:
        """Record a run as running, with the process that runs it and a first heartbeat."""
        run_id = run_id or str(uuid.uuid4())
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                index_runs.insert().values(
                    id=run_id, collection=collection, source=source[:1024], flow_run_id=flow_run_id,
                    status="running", started_at=now, lock_key=lock_key, host=socket.gethostname()[:255],
                    pid=os.getpid(), heartbeat_at=now,
                )
            )
        return run_id

    async def finish_run(self, run_id: str, status: str, counts: Mapping[str, Any] | Result) -> None:
        """Record how a run ended with its counters (a summary, or a mapping whose keys that are
        not run columns are ignored)."""
        counts = counts.to_json() if isinstance(counts, Result) else counts
        values = {k: v for k, v in counts.items() if k in {*RUN_COUNTS, "duration_s"}}
        now = utcnow()
        async with self.engine.begin() as conn:
            ended = await conn.execute(
                index_runs.update()
                .where(index_runs.c.id == run_id, index_runs.c.status == "running")
                .values(status=status, finished_at=now, **values)
                .returning(index_runs.c.collection, index_runs.c.source)
            )
            run = ended.first()
            if run is not None:  # the run's first end is the one its totals count
                await runtotals.add_run(conn, collection=run.collection, source=run.source, status=status, finished_at=now, counts=values)
                return
            await conn.execute(index_runs.update().where(index_runs.c.id == run_id).values(status=status, finished_at=now, **values))

    async def discard_run(self, run_id: str) -> None:
        """Remove the record of a running run that handed its work over (it did nothing)."""
        async with self.engine.begin() as conn:
            await conn.execute(index_runs.delete().where(index_runs.c.id == run_id, index_runs.c.status == "running"))

    async def has_dead_letters(self, collection: str, source: str) -> bool:
        """Whether documents of ``source`` wait in the dead letters of ``collection``."""
        async with self.engine.connect() as conn:
            query = sa.select(dead_letters.c.document_id).where(
                dead_letters.c.collection == collection, dead_letters.c.source == source
            ).limit(1)
            return (await conn.execute(query)).first() is not None

    async def run_totals(self) -> list[runtotals.RunTotals]:
        """What finished runs did, per collection, source and end status: the indexing metrics."""
        async with self.engine.connect() as conn:
            return await runtotals.read(conn)

    async def dead_letter_counts(self) -> dict[str, int]:
        """Documents waiting in the dead letters, per collection."""
        async with self.engine.connect() as conn:
            return await _count_by_collection(conn, dead_letters)

    async def runs_of_flow_runs(self, flow_run_ids: Sequence[str]) -> list[IndexRunRecord]:
        """The index runs recorded by the given Prefect flow runs (e.g. the shards of one sharded run)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(index_runs).where(index_runs.c.flow_run_id.in_(list(flow_run_ids))))
            return [IndexRunRecord.model_validate(dict(row._mapping)) for row in rows]

    async def recent_runs(self, limit: int = 10) -> list[IndexRunRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(index_runs).order_by(index_runs.c.started_at.desc()).limit(limit))
            return [IndexRunRecord.model_validate(dict(row._mapping)) for row in rows]

    async def runs_since(self, since: dt.datetime) -> list[IndexRunRecord]:
        """Runs started at or after ``since``, oldest first: what the metrics routes chart."""
        async with self.engine.connect() as conn:
            query = sa.select(index_runs).where(index_runs.c.started_at >= since).order_by(index_runs.c.started_at)
            return [IndexRunRecord.model_validate(dict(row._mapping)) for row in await conn.execute(query)]

    # status ------------------------------------------------------------------------------
    async def collection_stats(self) -> list[CollectionStatus]:
        """Per collection: model, size, documents, chunks and dead letters."""
        async with self.engine.connect() as conn:
            cols = (await conn.execute(sa.select(collections).order_by(collections.c.name))).all()
            doc_counts = await _count_by_collection(conn, documents, documents.c.status == "indexed")
            repair_counts = await _count_by_collection(conn, documents, documents.c.status == "repair")
            chunk_counts = await _count_by_collection(conn, chunks)
            dead_counts = await _count_by_collection(conn, dead_letters)
        return [
            CollectionStatus(
                collection=c.name,
                model=c.model,
                dimensions=c.dimensions,
                documents=doc_counts.get(c.name, 0),
                chunks=chunk_counts.get(c.name, 0),
                dead_letters=dead_counts.get(c.name, 0),
                awaiting_repair=repair_counts.get(c.name, 0),
            )
            for c in cols
        ]

    async def count_chunks(self, collection: str) -> int:
        async with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(chunks).where(chunks.c.collection == collection)
            return (await conn.execute(query)).scalar_one()


async def _count_by_collection(conn: AsyncConnection, table: sa.Table, *where: Any) -> dict[str, int]:
    """Rows of ``table`` per collection (those matching ``where``)."""
    query = sa.select(table.c.collection, sa.func.count()).where(*where).group_by(table.c.collection)
    return {name: int(count) for name, count in (await conn.execute(query)).all()}


def _lost_creation_race(exc: Exception) -> bool:
    text = str(exc)
    return "already exists" in text or "UNIQUE constraint failed: citadel_schema_version" in text or "database is locked" in text


def _reason(exc: BaseException) -> str:
    """The root cause of a connection failure in one line, without SQLAlchemy's help text."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
        if exc.__cause__ is not None:  # SQLAlchemy's asyncpg adapter wraps the driver's own error
            exc = exc.__cause__
    text = str(exc).split("\n", 1)[0].strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
