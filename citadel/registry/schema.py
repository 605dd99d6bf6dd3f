"""The registry's tables, and the upgrades that bring an older registry database to this version.

One schema serves Postgres and SQLite (SQLAlchemy Core). A new database gets the current tables
from ``create_all``; an older one gains the columns of each version it lacks, at start.
"""

from __future__ import annotations

import sqlalchemy as sa

from citadel.models import RunCounts

SCHEMA_VERSION = 10

metadata = sa.MetaData()

schema_version = sa.Table(
    "citadel_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

collections = sa.Table(
    "citadel_collections",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("dimensions", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

documents = sa.Table(
    "citadel_documents",
    metadata,
    sa.Column("collection", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(1024), primary_key=True),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("origin", sa.String(1024), nullable=False, default=""),  # the file it came from: its shard key
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("chunking", sa.String(64), nullable=False, default=""),  # the chunk settings it was split with
    sa.Column("fingerprint", sa.String(160), nullable=False, default=""),  # its object's "ETag:size" when read
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | indexed | repair
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_citadel_documents_source", "collection", "source"),
)

chunks = sa.Table(
    "citadel_chunks",
    metadata,
    sa.Column("collection", sa.String(255), primary_key=True),
    sa.Column("point_id", sa.String(36), primary_key=True),
    sa.Column("document_id", sa.String(1024), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("chunk_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | indexed
    sa.Index("ix_citadel_chunks_document", "collection", "document_id"),
)

# A run's row keeps every counter of citadel.models.RunCounts, declared there once.
RUN_COUNTS = RunCounts.names()

index_runs = sa.Table(
    "citadel_index_runs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("collection", sa.String(255), nullable=False),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # running | completed | failed | cancelled | crashed
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("duration_s", sa.Float),
    *(sa.Column(name, sa.Integer, nullable=False, default=0) for name in RUN_COUNTS),
    # Who runs it, and when it last said it was alive: a run whose process is gone is crashed.
    sa.Column("lock_key", sa.String(64)),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)

# What finished runs did, added up per collection, source and end status when each run ends: the
# metrics read these few rows on every scrape instead of scanning every run ever recorded.
run_totals = sa.Table(
    "citadel_run_totals",
    metadata,
    sa.Column("collection", sa.String(255), primary_key=True),
    sa.Column("source", sa.String(1024), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),  # completed | failed | cancelled | crashed
    sa.Column("runs", sa.Integer, nullable=False, default=0),
    sa.Column("duration_s", sa.Float, nullable=False, default=0.0),
    *(sa.Column(name, sa.Integer, nullable=False, default=0) for name in RUN_COUNTS),
    sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_duration_s", sa.Float),
)

dead_letters = sa.Table(
    "citadel_dead_letters",
    metadata,
    sa.Column("collection", sa.String(255), primary_key=True),
    sa.Column("document_id", sa.String(1024), primary_key=True),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
)

# The run lock of SQLite registries (Postgres uses an advisory lock instead): one row per
# collection, source and shard being indexed, held by a run while its heartbeat is fresh.
locks = sa.Table(
    "citadel_locks",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
)

# API keys of the HTTP service: only a SHA-256 of each key is kept (keys are 256 random bits, so a
# fast hash is enough); the key id is the key's public prefix, shown in lists and logs.
api_keys = sa.Table(
    "citadel_api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("scopes", sa.String(255), nullable=False),  # comma-separated
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    # What the key reaches: collection patterns and source grants, comma-separated (none: nothing).
    sa.Column("collections", sa.Text, nullable=False, server_default=""),
    sa.Column("sources", sa.Text, nullable=False, server_default=""),
    sa.Column("rate_limits", sa.String(255), nullable=False, server_default=""),  # its own tier, within the service's
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("replaced_by", sa.String(32)),  # the key a rotation issued in its place
    sa.Column("principal", sa.String(32)),  # the first key of its rotations: whose runs and records it owns
)

# Append-only: the code inserts and reads, the database refuses the rest (see registry.base).
audit = sa.Table(
    "citadel_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False),  # key:<id>, jwt:<sub>, cli:<user>, anonymous
    sa.Column("address", sa.String(64), nullable=False, server_default=""),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(1024), nullable=False, server_default=""),
    sa.Column("outcome", sa.String(32), nullable=False),  # ok | refused
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
)

# Columns each version added to tables that already existed: (table, column, SQL type and default).
# An upgrade adds the ones a database lacks; new tables come from create_all.
MIGRATIONS: dict[int, list[tuple[str, str, str]]] = {
    2: [("citadel_documents", "origin", "VARCHAR(1024) NOT NULL DEFAULT ''")],
    3: [
        ("citadel_documents", "chunking", "VARCHAR(64) NOT NULL DEFAULT ''"),
        ("citadel_index_runs", "repaired", "INTEGER NOT NULL DEFAULT 0"),
        ("citadel_index_runs", "lock_key", "VARCHAR(64)"),
        ("citadel_index_runs", "host", "VARCHAR(255)"),
        ("citadel_index_runs", "pid", "INTEGER"),
        ("citadel_index_runs", "heartbeat_at", "TIMESTAMP WITH TIME ZONE"),
    ],
    4: [
        ("citadel_index_runs", "chunks_written", "INTEGER NOT NULL DEFAULT 0"),
        ("citadel_index_runs", "chunks_reused", "INTEGER NOT NULL DEFAULT 0"),
    ],
    7: [("citadel_documents", "fingerprint", "VARCHAR(160) NOT NULL DEFAULT ''")],
    8: [
        ("citadel_index_runs", "points_deleted", "INTEGER NOT NULL DEFAULT 0"),
        ("citadel_run_totals", "points_deleted", "INTEGER NOT NULL DEFAULT 0"),
    ],
    # Keys made before grants existed keep reaching every collection and every source the service
    # allows, so an upgrade locks no one out (BACKFILLS); every key made since names what it reaches.
    9: [
        ("citadel_api_keys", "collections", "TEXT NOT NULL DEFAULT ''"),
        ("citadel_api_keys", "sources", "TEXT NOT NULL DEFAULT ''"),
        ("citadel_api_keys", "rate_limits", "VARCHAR(255) NOT NULL DEFAULT ''"),
        ("citadel_api_keys", "expires_at", "TIMESTAMP WITH TIME ZONE"),
        ("citadel_api_keys", "replaced_by", "VARCHAR(32)"),
    ],
    10: [("citadel_api_keys", "principal", "VARCHAR(32)")],
}


# What the rows already there get when a version adds its columns (a new row is written whole by
# the code, so the columns' own defaults stay the safe ones: a key inserted without grants reaches nothing).
BACKFILLS: dict[int, list[str]] = {
    9: ["UPDATE citadel_api_keys SET collections = '*', sources = '*'"],
    10: ["UPDATE citadel_api_keys SET principal = key_id WHERE principal IS NULL"],
}


def upgrade(conn: sa.Connection, found: int) -> list[int]:
    """Add the columns of every version after ``found`` that the tables lack, and fill them in
    the rows already there; the versions applied."""
    inspector = sa.inspect(conn)
    applied: list[int] = []
    for version in range(found + 1, SCHEMA_VERSION + 1):
        added = False
        for table, column, ddl in MIGRATIONS.get(version, []):
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
                inspector.clear_cache()
                added = True
        if added:
            for statement in BACKFILLS.get(version, []):
                conn.execute(sa.text(statement))
        applied.append(version)
    return applied


def guard_audit(conn: sa.Connection) -> None:
    """Make the audit table append-only in the database itself: SQLite refuses an update or a
    delete; Postgres turns them into nothing through rules (dumped with the table, so a restore
    keeps them, with no function the dump would lack)."""
    if conn.dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            conn.execute(sa.text(
                f"CREATE TRIGGER IF NOT EXISTS citadel_audit_no_{event.lower()} BEFORE {event} ON citadel_audit "
                "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
            ))
    elif conn.dialect.name == "postgresql":
        for event in ("UPDATE", "DELETE"):
            conn.execute(sa.text(
                f"CREATE OR REPLACE RULE citadel_audit_no_{event.lower()} AS ON {event} TO citadel_audit DO INSTEAD NOTHING"
            ))
