"""A SQLite registry in a backup: copied with SQLite's online backup API while others write to it,
checked, counted, and put back in place."""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import sqlalchemy as sa

from citadel.errors import ConfigurationError
from citadel.ops.backup.manifest import Backend, BackupError, CollectionCounts, registry_counts


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database ``source`` while other processes may write to it.

    SQLite's online backup API copies every page in one step, inside one read transaction: in
    WAL mode writers go on meanwhile, and the copy is the database as of that transaction. The
    copy is switched to a rollback journal, so it is one self-contained file.
    """
    if not source.is_file():
        raise BackupError(f"{source} is missing: nothing to copy")
    src = sqlite3.connect(str(source), timeout=60)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file ``path`` is not sound (``integrity_check``), or None."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"not a readable SQLite database ({exc})"
    return None if rows == ["ok"] else "integrity check failed: " + "; ".join(rows[:3])


def sqlite_counts(path: Path) -> tuple[int, dict[str, CollectionCounts]]:
    """The schema version and per-collection counts of the SQLite registry file ``path``, read-only."""
    engine = sa.create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            return registry_counts(conn)
    finally:
        engine.dispose()


def sqlite_path(registry_url: str) -> Path:
    """The file of a SQLite registry URL."""
    database = sa.engine.make_url(registry_url).database
    if not database or database == ":memory:":
        raise ConfigurationError("the registry is an in-memory SQLite database: there is nothing to back up or restore")
    return Path(database)


def copy_sqlite_registry(registry_url: str, target: Path) -> tuple[int, dict[str, CollectionCounts], Backend]:
    """Copy the registry into ``target``; the copy's schema version and counts, and the backend it came from."""
    copy_sqlite(sqlite_path(registry_url), target)
    version, counts = sqlite_counts(target)
    backend = Backend(kind="sqlite", location=str(sqlite_path(registry_url).resolve()), version=f"SQLite {sqlite3.sqlite_version}")
    return version, counts, backend


def restore_sqlite(copy: Path, target: Path) -> None:
    """Put the registry copy in place of ``target``: written beside it, then renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.restoring-{uuid.uuid4().hex[:8]}")
    shutil.copyfile(copy, staging)
    # A write-ahead log left by the old database would be replayed into the new one.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(staging, target)
