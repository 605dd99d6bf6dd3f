"""The audit trail: who created, rotated or revoked a key, called an admin route, started or
cancelled a workflow, switched or rolled back a collection, restored a backup, and every refusal.

One append-only table in the registry (so in Postgres in production, and in every backup). Each
line is masked like a log line before it is written, so no key, token or password reaches it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import logging
from collections import deque
from typing import Any

import sqlalchemy as sa

from citadel.logs import redact
from citadel.models import AuditEntry
from citadel.registry import Registry, audit, utcnow

log = logging.getLogger("citadel.audit")
MAX_PENDING = 10_000
"""Lines queued for the background writer at most; past it, lines are dropped and counted."""


def cli_actor() -> str:
    """Who runs a CLI command: the operating system's user (the CLI holds no key of its own)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _clip(text: str, size: int) -> str:
    return redact(text)[:size]


def audit_values(
    actor: str, action: str, *, target: str = "", outcome: str = "ok", address: str = "", detail: str = "",
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    """One line's columns, masked and clipped; ``at`` defaults to now."""
    return {
        "at": at or utcnow(), "actor": _clip(actor, 255), "address": _clip(address, 64), "action": _clip(action, 64),
        "target": _clip(target, 1024), "outcome": _clip(outcome, 32), "detail": _clip(detail, 4000),
    }


def audit_insert(actor: str, action: str, **fields: Any) -> sa.Insert:
    """The statement that appends one line, for a caller that writes it in its own transaction."""
    return audit.insert().values(**audit_values(actor, action, **fields))


class AuditLog:
    """Writes and reads the audit trail of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._queue: deque[dict[str, Any]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0  # lines not kept because the writer was too far behind

    async def record(self, actor: str, action: str, **fields: str) -> None:
        """Append one line (masked, clipped to its columns); ``fields``: target, outcome, address, detail."""
        async with self.registry.engine.begin() as conn:
            await conn.execute(audit_insert(actor, action, **fields))

    def record_soon(self, actor: str, action: str, **fields: Any) -> None:
        """Queue a line, stamped now, for one background writer that appends the queue in batches:
        the caller never waits (a refusal answers as fast as a miss would), and a flood of refused
        requests costs one insert per batch. Past :data:`MAX_PENDING` queued lines a line is dropped
        and counted (the log says so); :meth:`drain` waits for the queue."""
        if len(self._queue) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped % MAX_PENDING == 1:
                log.warning("audit trail writer behind by %d lines: %d lines dropped so far", len(self._queue), self.dropped)
            return
        self._queue.append(audit_values(actor, action, **fields))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
            try:
                async with self.registry.engine.begin() as conn:
                    await conn.execute(audit.insert(), batch)
            except Exception as exc:  # noqa: BLE001 - lost lines are logged, never a failed request
                log.error("%d audit lines not written: %s", len(batch), redact(str(exc)))

    async def drain(self) -> None:
        """Wait for the queued lines to be written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)

    async def read(self, since: dt.datetime | None = None, limit: int = 1000, actor: str | None = None) -> list[AuditEntry]:
        """The lines from ``since`` on (all without it), oldest first, at most ``limit`` (the newest)."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if since is not None:  # as UTC: SQLite keeps the times as UTC text without their zone
            query = query.where(audit.c.at >= (since.astimezone(dt.UTC) if since.tzinfo else since.replace(tzinfo=dt.UTC)))
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        async with self.registry.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AuditEntry(**row._mapping) for row in reversed(rows)]
