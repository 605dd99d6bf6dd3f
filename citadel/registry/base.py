"""The registry's database: one engine (Postgres via asyncpg, or a SQLite file), its schema created
or upgraded, and the dialect's INSERT with ON CONFLICT. The tables' rows are read and written by
:mod:`citadel.registry.documentrows` and :mod:`citadel.registry.runrecords`."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import citadel.registry.runtotals as runtotals
from citadel.errors import ConfigurationError
from citadel.registry.schema import SCHEMA_VERSION, guard_audit, metadata, schema_version, upgrade
from citadel.settings import masked_url

ANALYZE_FIRST = 20_000
"""Chunks a process writes before it first refreshes a Postgres registry's statistics; then each doubling."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RegistryBase:
    """Async access to one registry database: the engine and the schema."""

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
        self._written_since_analyze = 0
        self._analyze_after = ANALYZE_FIRST

    async def note_written(self, chunks: int) -> None:
        """Count chunks written and, on Postgres, refresh the planner's statistics of the documents
        and chunks each time they have about doubled. A first index of 30,000 documents wrote 630,000
        chunks before autovacuum analyzed anything: the planner, still expecting an empty
        collection, walked every document to sample 32 point ids (300 ms instead of 7) and looked up
        a batch's chunks in 185 ms instead of 28."""
        self._written_since_analyze += chunks
        if self.dialect != "postgresql" or self._written_since_analyze < self._analyze_after:
            return
        async with self.engine.begin() as conn:
            await conn.execute(sa.text("ANALYZE citadel_documents, citadel_chunks"))
        self._analyze_after = 2 * max(self._analyze_after, self._written_since_analyze)
        self._written_since_analyze = 0

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
            await conn.run_sync(guard_audit)
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
