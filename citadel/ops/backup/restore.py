"""Restoring a verified backup into the configured registry and vector store: refused into a
different kind of backend, a non-empty target (unless forced), a store another process holds, or
while a run writes to it; checked afterwards against the backup's counts, and written to the
audit trail of the restored registry (so the line outlives the restore it tells of)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from citadel.audit import AuditLog
from citadel.errors import ConfigurationError
from citadel.ops.backup.embedded import embedded_points, restore_embedded
from citadel.ops.backup.manifest import (
    PG_REGISTRY,
    SQLITE_REGISTRY,
    BackupError,
    CollectionCounts,
    Manifest,
    RestoreResult,
    Step,
    count_problems,
    read_manifest,
    registry_counts,
    say,
)
from citadel.ops.backup.postgres import restore_postgres
from citadel.ops.backup.server import restore_server, server_points
from citadel.ops.backup.sqliteregistry import restore_sqlite, sqlite_path
from citadel.ops.backup.verify import verify_backup
from citadel.registry import SCHEMA_VERSION, Registry, audit, documents
from citadel.settings import Settings
from citadel.store import embedded_store_holder, store_in_use


def _close_own_embedded_clients() -> None:
    """This process's embedded-store clients keep every point in memory: close them before the
    files under them are replaced (a later open reads the restored files)."""
    clients = sys.modules.get("citadel.store.localclients")  # loaded only if this process opened a store
    if clients is not None:
        close: Callable[[], None] = clients.close_local_clients
        close()


def _is_postgres(settings: Settings) -> bool:
    return sa.engine.make_url(settings.registry_url).get_backend_name() == "postgresql"


async def _target_state(settings: Settings, embedded: bool) -> tuple[int, int, list[str]]:
    """(documents in the target registry, points in the target store, live runs writing to it)."""
    from citadel.registry import mark_crashed_runs

    documents_count = 0
    running: list[str] = []
    if _is_postgres(settings) or sqlite_path(settings.registry_url).exists():
        registry = Registry(settings.registry_url)
        try:
            await registry.init()
            await mark_crashed_runs(registry)
            async with registry.engine.connect() as conn:
                documents_count = int((await conn.execute(sa.select(sa.func.count()).select_from(documents))).scalar_one())
            running = [run.id for run in await registry.recent_runs(limit=1000) if run.status == "running"]
        finally:
            await registry.aclose()
    points = sum((embedded_points(settings.qdrant_path) if embedded else server_points(settings)).values())
    return documents_count, points, running


def _restorable(settings: Settings, path: Path) -> Manifest:
    """The manifest of a backup that verifies and fits the configured backends; else why not."""
    report = verify_backup(path)
    if not report.ok:
        raise BackupError(f"{path} does not verify, nothing restored: {'; '.join(report.problems)}")
    manifest = read_manifest(path)
    if manifest.schema_version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the backup's registry schema is version {manifest.schema_version}, newer than this Citadel knows "
            f"({SCHEMA_VERSION}); restore it with Citadel {manifest.citadel_version} or later"
        )
    want_registry = "postgres" if _is_postgres(settings) else "sqlite"
    if manifest.registry.kind != want_registry:
        raise ConfigurationError(
            f"the backup holds a {manifest.registry.kind} registry but CITADEL_DATABASE_URL configures {want_registry}; "
            "restore into the same kind of registry (set or unset CITADEL_DATABASE_URL)"
        )
    want_vectors = "server" if settings.qdrant_url else "embedded"
    if manifest.vectors.kind != want_vectors:
        raise ConfigurationError(
            f"the backup holds vectors of an {manifest.vectors.kind} Qdrant but the settings name a {want_vectors} one; "
            "restore into the same kind of store (set or unset CITADEL_QDRANT_URL)"
        )
    return manifest


async def _replaces(settings: Settings, embedded: bool, force: bool) -> bool:
    """Whether the restore replaces what the target holds; refused while it is in use, or not empty without ``force``."""
    if embedded and (holder := embedded_store_holder(settings.qdrant_path)):
        raise ConfigurationError(store_in_use(settings.qdrant_path, holder) + "; stop it before restoring")
    _close_own_embedded_clients()
    documents_count, points, running = await _target_state(settings, embedded)
    if running:
        raise ConfigurationError(
            f"{len(running)} indexing run(s) are writing to the target ({', '.join(running[:3])}); wait for them or stop them, then restore"
        )
    replaced = bool(documents_count or points)
    if replaced and not force:
        raise ConfigurationError(
            f"the target is not empty ({documents_count} documents in the registry, {points} points in the vector store); "
            "restore into an empty one, or pass --force to replace what it holds"
        )
    return replaced


async def restore_backup(
    settings: Settings, path: Path, *, force: bool = False, on_step: Step | None = None, actor: str = "citadel"
) -> RestoreResult:
    """Restore a verified backup into the configured registry and vector store.

    The target must be empty (no documents, no points) unless ``force``; never while a run writes
    to it or another process holds the embedded store. An older registry schema is brought up to
    date by the usual upgrade; a newer one than this Citadel knows is refused. ``actor`` restored
    it, says the ``backup.restored`` line appended to the restored registry's audit trail: the
    trail holds every line written before the backup, then this one.
    """
    started = time.perf_counter()
    say(on_step, "verifying the backup")
    manifest = _restorable(settings, path)
    embedded = manifest.vectors.kind == "embedded"
    replaced = await _replaces(settings, embedded, force)
    trail = await _current_trail(settings)  # the restore must not erase what was audited since the backup
    say(on_step, "restoring the registry")
    if _is_postgres(settings):
        await asyncio.to_thread(restore_postgres, settings, path / PG_REGISTRY)
    else:
        await asyncio.to_thread(restore_sqlite, path / SQLITE_REGISTRY, sqlite_path(settings.registry_url))
    say(on_step, "restoring the vectors")
    if embedded:
        await asyncio.to_thread(restore_embedded, path, manifest, settings.qdrant_path)
    else:
        await asyncio.to_thread(restore_server, settings, path, manifest)
    say(on_step, "checking the restored counts")
    expected = {c.name: c for c in manifest.collections}
    restored = await _restored_counts(settings, embedded, set(expected))
    problems = count_problems("restored", expected, restored, ("documents", "chunks", "points"))
    await _audit_restore(settings, actor, manifest, path, replaced, problems, trail)
    if problems:
        raise BackupError("the restore finished but does not match the backup: " + "; ".join(problems))
    return RestoreResult(
        name=manifest.name, path=str(path), duration_s=round(time.perf_counter() - started, 3),
        registry=manifest.registry.kind, vectors=manifest.vectors.kind, replaced=replaced,
        collections=[restored[name] for name in sorted(restored)], aliases=manifest.aliases,
    )


async def _restored_counts(settings: Settings, embedded: bool, restored: set[str]) -> dict[str, CollectionCounts]:
    """The counts of the restored registry and store (on a server, of the restored collections only)."""
    registry = Registry(settings.registry_url)
    try:
        await registry.init()  # brings an older schema up to date
        async with registry.engine.connect() as conn:
            _, counts = await conn.run_sync(registry_counts)
    finally:
        await registry.aclose()
    points = embedded_points(settings.qdrant_path) if embedded else server_points(settings, restored)
    for name, count in points.items():
        counts.setdefault(name, CollectionCounts(name=name)).points = count
    return counts


async def _current_trail(settings: Settings) -> list[dict[str, Any]]:
    """The target registry's audit lines before it is replaced (none when it has no trail yet)."""
    registry = Registry(settings.registry_url)
    try:
        async with registry.engine.connect() as conn:
            rows = (await conn.execute(sa.select(audit).order_by(audit.c.id))).all()
    except sa.exc.SQLAlchemyError:
        return []  # no registry, or one from before the trail
    finally:
        await registry.aclose()
    return [{key: value for key, value in row._mapping.items() if key != "id"} for row in rows]


def _line_key(line: dict[str, Any]) -> tuple[Any, ...]:
    at = line["at"]
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    return (at, line["actor"], line["action"], line["target"], line["outcome"], line["detail"])


async def _audit_restore(
    settings: Settings, actor: str, manifest: Manifest, path: Path, replaced: bool, problems: list[str],
    trail: list[dict[str, Any]],
) -> None:
    """Append to the restored registry's trail (after its schema upgrade, which adds the trail to a
    backup older than it) the lines the target had that the backup lacks, so a restore erases no
    audited action, then ``backup.restored``: ok, or failed with what does not match."""
    detail = (f"from {path}; {manifest.registry.kind} registry, {manifest.vectors.kind} vectors; "
              f"{'replaced what the target held' if replaced else 'into an empty target'}")
    if problems:
        detail += "; does not match the backup: " + "; ".join(problems)
    registry = Registry(settings.registry_url)
    try:
        await registry.init()
        async with registry.engine.begin() as conn:
            restored = {_line_key(dict(row._mapping)) for row in (await conn.execute(sa.select(audit))).all()}
            later = [line for line in trail if _line_key(line) not in restored]
            if later:
                await conn.execute(audit.insert(), later)
        await AuditLog(registry).record(actor, "backup.restored", target=f"backup:{manifest.name}",
                                        outcome="failed" if problems else "ok", detail=detail)
    finally:
        await registry.aclose()
