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
from typing import Any

import sqlalchemy as sa

from citadel.logs import redact
from citadel.models import AuditEntry
from citadel.registry import Registry, audit, utcnow

log = logging.getLogger("citadel.audit")
MAX_PENDING = 1000
"""Lines written in the background at most at once; past it, a line waits for its write."""


def cli_actor() -> str:
    """Who runs a CLI command: the operating system's user (the CLI holds no key of its own)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _clip(text: str, size: int) -> str:
    return redact(text)[:size]


def audit_insert(
    actor: str, action: str, *, target: str = "", outcome: str = "ok", address: str = "", detail: str = ""
) -> sa.Insert:
    """The statement that appends one line, for a caller that writes it in its own transaction."""
    return audit.insert().values(
        at=utcnow(), actor=_clip(actor, 255), address=_clip(address, 64), action=_clip(action, 64),
        target=_clip(target, 1024), outcome=_clip(outcome, 32), detail=_clip(detail, 4000),
    )


class AuditLog:
    """Writes and reads the audit trail of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._pending: set[asyncio.Task[None]] = set()

    async def record(self, actor: str, action: str, **fields: str) -> None:
        """Append one line (masked, clipped to its columns); ``fields``: target, outcome, address, detail."""
        async with self.registry.engine.begin() as conn:
            await conn.execute(audit_insert(actor, action, **fields))

    def record_soon(self, actor: str, action: str, **fields: Any) -> None:
        """Append a line without making the caller wait (a refusal answers as fast as a miss would);
        :meth:`drain` waits for the lines under way. A line that cannot be written is logged."""
        if len(self._pending) >= MAX_PENDING:
            log.warning("audit trail behind by %d lines; %s of %s written late", len(self._pending), action, actor)
        task = asyncio.get_running_loop().create_task(self._write(actor, action, fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, actor: str, action: str, fields: dict[str, Any]) -> None:
        try:
            await self.record(actor, action, **fields)
        except Exception as exc:  # noqa: BLE001 - a lost line is logged, never a failed request
            log.error("audit line not written (%s by %s): %s", action, actor, redact(str(exc)))

    async def drain(self) -> None:
        """Wait for the lines written in the background."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def read(self, since: dt.datetime | None = None, limit: int = 1000, actor: str | None = None) -> list[AuditEntry]:
        """The lines from ``since`` on (all without it), oldest first, at most ``limit`` (the newest)."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(audit.c.at >= since)
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        async with self.registry.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AuditEntry(**row._mapping) for row in reversed(rows)]
