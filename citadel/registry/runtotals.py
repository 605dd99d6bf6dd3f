"""Totals of finished runs per collection, source and end status, kept as each run ends.

They are the durable counters behind the indexing metrics: a run in a worker process that exits
still counts, a scrape reads a few rows, and a registry upgraded from an older version starts from
the totals of the runs it already holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from citadel.models import RunCounts, UTCDateTime
from citadel.registry.schema import RUN_COUNTS, index_runs, run_totals


class RunTotals(RunCounts):
    """The runs of one collection, source and end status, added up."""

    collection: str
    source: str
    status: str
    runs: int
    duration_s: float
    last_finished_at: UTCDateTime
    last_duration_s: float | None = None


async def add_run(
    conn: AsyncConnection, *, collection: str, source: str, status: str, finished_at: dt.datetime, counts: Mapping[str, Any]
) -> None:
    """Add one finished run to its totals, in the caller's transaction (the one that ends the run)."""
    duration = counts.get("duration_s")
    values = {
        "collection": collection, "source": source, "status": status, "runs": 1, "duration_s": float(duration or 0.0),
        **{name: int(counts.get(name) or 0) for name in RUN_COUNTS},
        "last_finished_at": finished_at, "last_duration_s": duration,
    }
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(run_totals).values(**values)
    added = {name: run_totals.c[name] + insert.excluded[name] for name in ("runs", "duration_s", *RUN_COUNTS)}
    await conn.execute(insert.on_conflict_do_update(
        index_elements=["collection", "source", "status"],
        set_={**added, "last_finished_at": insert.excluded.last_finished_at, "last_duration_s": insert.excluded.last_duration_s},
    ))


def backfill(conn: sa.Connection) -> None:
    """Totals of the runs a registry recorded before it kept totals (the upgrade to version 6)."""
    latest = sa.select(sa.func.max(index_runs.c.finished_at))
    query = (
        sa.select(
            index_runs.c.collection, index_runs.c.source, index_runs.c.status, sa.func.count(),
            sa.func.coalesce(sa.func.sum(index_runs.c.duration_s), 0.0),
            *(sa.func.coalesce(sa.func.sum(index_runs.c[name]), 0) for name in RUN_COUNTS),
            sa.func.coalesce(sa.func.max(index_runs.c.finished_at), latest.scalar_subquery(), sa.func.current_timestamp()),
        )
        .where(index_runs.c.status != "running")
        .group_by(index_runs.c.collection, index_runs.c.source, index_runs.c.status)
    )
    columns = ["collection", "source", "status", "runs", "duration_s", *RUN_COUNTS, "last_finished_at"]
    conn.execute(run_totals.insert().from_select(columns, query))


async def read(conn: AsyncConnection) -> list[RunTotals]:
    """Every row of totals: one per collection, source and end status."""
    return [RunTotals.model_validate(dict(row._mapping)) for row in await conn.execute(sa.select(run_totals))]
