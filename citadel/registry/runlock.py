"""Runs that know of each other: one run at a time per collection and source, and crashed runs found.

Two runs indexing the same source into the same collection would both do the whole work and
race on the same documents. A run first takes the lock of its (collection, source, shard):

- on Postgres, a session advisory lock on a connection the run holds: it goes with the
  connection, so a killed run's lock is gone at once;
- on SQLite, a row in ``citadel_locks`` that the run's heartbeat keeps fresh; a row whose
  process is gone (same host) or whose heartbeat is stale is taken over.

A run that finds the lock held waits for it and says which run holds it. Every running run
writes a heartbeat into its ``citadel_index_runs`` row; a run whose process is gone, or whose
heartbeat stopped, is marked ``crashed`` by the next run or ``citadel status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

import citadel.registry.runtotals as runtotals
from citadel.models import IndexRunRecord, as_utc
from citadel.registry.base import utcnow
from citadel.registry.database import Registry
from citadel.registry.schema import index_runs, locks

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
"""How often a running run says it is alive."""

STALE_AFTER_S = 120.0
"""A run silent for this long is crashed, whatever host it ran on (a blocked event loop included)."""

WAIT_POLL_S = 1.0


def lock_key(collection: str, source: str, shard: tuple[int, int] | None = None) -> str:
    """The fixed-size key of what one run indexes: its collection, source and shard."""
    text = f"{collection}\x00{source}\x00{shard[0]}/{shard[1]}" if shard else f"{collection}\x00{source}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _advisory_key(key: str) -> int:
    """A signed 64-bit Postgres advisory lock id from a lock key."""
    return int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def is_gone(host: str | None, pid: int | None, heartbeat_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether the process behind a run or a lock is gone: dead on this host, or silent too long."""
    if host == socket.gethostname() and pid is not None and not process_alive(pid):
        return True
    return heartbeat_at is None or (now - as_utc(heartbeat_at)).total_seconds() > STALE_AFTER_S


@dataclass(frozen=True)
class Holder:
    """The run that holds a lock, as a user would want it named."""

    run_id: str
    host: str
    pid: int | None
    started_at: dt.datetime | None
    flow_run_id: str | None = None

    def describe(self) -> str:
        started = f" since {as_utc(self.started_at):%Y-%m-%d %H:%M:%S} UTC" if self.started_at else ""
        flow = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"run {self.run_id} (pid {self.pid} on {self.host}{started}{flow})"


async def holder(registry: Registry, key: str) -> Holder | None:
    """The newest running run of ``key``, if any."""
    async with registry.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(index_runs)
                .where(index_runs.c.lock_key == key, index_runs.c.status == "running")
                .order_by(index_runs.c.started_at.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        return None
    return Holder(row.id, row.host or "?", row.pid, row.started_at, row.flow_run_id)


async def find_crashed_runs(registry: Registry) -> list[IndexRunRecord]:
    """Runs recorded as running whose process is gone (read only)."""
    now = utcnow()
    async with registry.engine.connect() as conn:
        running = (await conn.execute(sa.select(index_runs).where(index_runs.c.status == "running"))).all()
    return [
        IndexRunRecord.model_validate(dict(row._mapping))
        for row in running
        if is_gone(row.host, row.pid, row.heartbeat_at or row.started_at, now)
    ]


async def mark_crashed_runs(registry: Registry) -> list[IndexRunRecord]:
    """Mark ``crashed`` every running run whose process is gone; returns those runs."""
    now = utcnow()
    crashed = await find_crashed_runs(registry)
    if crashed:
        async with registry.engine.begin() as conn:
            for run in crashed:
                marked = await conn.execute(
                    index_runs.update()
                    .where(index_runs.c.id == run.id, index_runs.c.status == "running")
                    .values(status="crashed", finished_at=now)
                )
                if marked.rowcount:
                    await runtotals.add_run(conn, collection=run.collection, source=run.source, status="crashed", finished_at=now,
                                            counts=run.counts().model_dump())
        for run in crashed:
            run.status, run.finished_at = "crashed", now
            log.warning("run %s indexing %s into %s stopped without finishing (process %s on %s gone); marked crashed",
                        run.id, run.source, run.collection, run.pid, run.host)
    return crashed


class RunLock:
    """The lock of one (collection, source, shard) for one run, with that run's heartbeat."""

    def __init__(self, registry: Registry, key: str, run_id: str) -> None:
        self.registry = registry
        self.key = key
        self.run_id = run_id
        self._conn: AsyncConnection | None = None  # Postgres: the connection holding the advisory lock
        self._beat: asyncio.Task[None] | None = None

    @property
    def _postgres(self) -> bool:
        return self.registry.dialect == "postgresql"

    async def try_acquire(self) -> bool:
        """Take the lock if it is free (or its holder is gone); never waits."""
        if self._postgres:
            if self._conn is None:
                self._conn = await (await self.registry.engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
            got = (await self._conn.execute(sa.select(sa.func.pg_try_advisory_lock(_advisory_key(self.key))))).scalar()
            return bool(got)
        return await self._take_lock_row()

    async def _take_lock_row(self) -> bool:
        now = utcnow()
        me = dict(key=self.key, run_id=self.run_id, host=socket.gethostname()[:255], pid=os.getpid(), heartbeat_at=now)
        async with self.registry.engine.begin() as conn:
            row = (await conn.execute(sa.select(locks).where(locks.c.key == self.key))).first()
            if row is not None and row.run_id != self.run_id:
                if not is_gone(row.host, row.pid, row.heartbeat_at, now):
                    return False
                # The holder is gone: take over only the row as read, in case another run just did.
                await conn.execute(locks.delete().where(locks.c.key == self.key, locks.c.run_id == row.run_id))
            stmt = self.registry.insert_statement(locks).values(**me)
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
            owner = (await conn.execute(sa.select(locks.c.run_id).where(locks.c.key == self.key))).scalar()
        return owner == self.run_id

    async def acquire(self, on_wait: Callable[[Holder | None], None] | None = None) -> None:
        """Take the lock, waiting while another live run holds it (``on_wait`` hears who, once)."""
        told = False
        try:
            while not await self.try_acquire():
                if not told:
                    told = True
                    held_by = await holder(self.registry, self.key)
                    if on_wait is not None:
                        on_wait(held_by)
                await asyncio.sleep(WAIT_POLL_S)
        except BaseException:
            if self._conn is not None:  # it never held the lock: hand the connection back
                conn, self._conn = self._conn, None
                await conn.close()
            raise

    def start_heartbeat(self) -> None:
        """Keep the run's row (and on SQLite its lock row) fresh until :meth:`release`."""
        self._beat = asyncio.create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - a missed beat must not fail the run
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)

    async def beat(self) -> None:
        """Say the run is alive now."""
        now = utcnow()
        async with self.registry.engine.begin() as conn:
            await conn.execute(index_runs.update().where(index_runs.c.id == self.run_id).values(heartbeat_at=now))
            if not self._postgres:
                await conn.execute(
                    locks.update().where(locks.c.key == self.key, locks.c.run_id == self.run_id).values(heartbeat_at=now)
                )

    async def release(self) -> None:
        """Stop the heartbeat and let the next run in."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.execute(sa.select(sa.func.pg_advisory_unlock(_advisory_key(self.key))))
            except Exception as exc:  # noqa: BLE001 - the lock goes with the connection, closed below
                # Never raised: a lost registry is the run's real error, already on its way up, and
                # Postgres drops a session's advisory locks when its connection ends.
                log.info("could not release the lock of run %s (%s); it is dropped with its connection", self.run_id,
                            type(exc).__name__)
                with contextlib.suppress(Exception):
                    await conn.invalidate()  # never hand a connection that may hold the lock back to the pool
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
        elif not self._postgres:
            async with self.registry.engine.begin() as conn:
                await conn.execute(locks.delete().where(locks.c.key == self.key, locks.c.run_id == self.run_id))
