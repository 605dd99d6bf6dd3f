"""The registry's dead letters, index runs and the status built from them: what failed, what ran
and how it ended, and the per-collection counts ``citadel status`` shows."""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

import citadel.registry.runtotals as runtotals
from citadel.models import CollectionStatus, DeadLetterRecord, IndexRunRecord, Result, as_utc
from citadel.registry.base import RegistryBase, utcnow
from citadel.registry.documentrows import DeadLetter, chunked
from citadel.registry.idlists import among
from citadel.registry.schema import RUN_COUNTS, chunks, collections, dead_letters, documents, index_runs


class RunRecords(RegistryBase):
    """The dead letters and runs of a registry, and its status per collection."""

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
                        dead_letters.c.collection == collection, among(dead_letters.c.document_id, part)
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

    async def known_collections(self) -> set[str]:
        """The collections created in the registry, and those with a run going: the indexing metrics
        give each of them zeros before its first run ends, so that increase() counts that run."""
        async with self.engine.connect() as conn:
            created = (await conn.execute(sa.select(collections.c.name))).scalars().all()
            running = (await conn.execute(
                sa.select(index_runs.c.collection).where(index_runs.c.status == "running").distinct()
            )).scalars().all()
        return {*created, *running}

    async def first_run_ends(self, names: Sequence[str]) -> dict[str, dt.datetime]:
        """When the first recorded run of each collection of ``names`` ended (collections without an
        ended run are left out)."""
        query = (
            sa.select(index_runs.c.collection, sa.func.min(index_runs.c.finished_at))
            .where(among(index_runs.c.collection, names), index_runs.c.finished_at.is_not(None))
            .group_by(index_runs.c.collection)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {name: as_utc(ended) for name, ended in rows if ended is not None}

    async def runs_of_flow_runs(self, flow_run_ids: Sequence[str]) -> list[IndexRunRecord]:
        """The index runs recorded by the given Prefect flow runs (e.g. the shards of one sharded run)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(index_runs).where(among(index_runs.c.flow_run_id, flow_run_ids)))
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

