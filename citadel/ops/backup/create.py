"""Making a backup: the registry first, then the vectors, then the configuration and the checksums,
written in a hidden private folder that is renamed complete only once everything is on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from citadel import __version__
from citadel.errors import ConfigurationError
from citadel.ops.backup.embedded import copy_embedded
from citadel.ops.backup.manifest import (
    CONFIG,
    FORMAT_VERSION,
    MANIFEST,
    PG_REGISTRY,
    PREFIX,
    SQLITE_REGISTRY,
    STAMP,
    VECTORS,
    Backend,
    BackupSummary,
    CollectionCounts,
    FileEntry,
    Manifest,
    Step,
    config_of,
    say,
    sha256_of,
    utcnow,
)
from citadel.ops.backup.postgres import dump_postgres
from citadel.ops.backup.server import server_backup
from citadel.ops.backup.sqliteregistry import copy_sqlite_registry
from citadel.registry import Registry
from citadel.settings import Settings, masked_url

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
"""A backup holds the registry and every text indexed: readable by its owner only, whatever the umask."""


def _backup_name(directory: Path) -> tuple[str, dt.datetime]:
    """A name no backup in ``directory`` has yet (names are per second: wait for the next one)."""
    while True:
        now = utcnow().replace(microsecond=0)
        name = PREFIX + now.strftime(STAMP)
        if not (directory / name).exists():
            return name, now
        time.sleep(1.05 - utcnow().microsecond / 1e6)


async def create_backup(settings: Settings, to: Path | None = None, *, on_step: Step | None = None) -> BackupSummary:
    """Back up the registry, then the vectors, into a new complete backup folder under ``to``."""
    directory = to if to is not None else settings.backup_dir
    try:
        make_private_dirs(directory)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the backup folder {directory}: {exc.strerror}; choose another with --to") from exc
    started = time.perf_counter()
    name, created_at = _backup_name(directory)
    work = directory / f".{name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=PRIVATE_DIR)
    os.chmod(work, PRIVATE_DIR)  # whatever the umask: nothing written inside is ever reachable by others
    try:
        manifest = await _write_backup(settings, work, name, created_at, on_step)
        manifest.duration_s = round(time.perf_counter() - started, 3)
        (work / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        make_tree_private(work)
        _fsync_tree(work)
        work.rename(directory / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupSummary.of(directory / name, manifest)


def make_private_dirs(directory: Path) -> None:
    """``mkdir -p`` whose every folder it creates is private (mode 0700); folders already there are left as they are."""
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to change
        os.chmod(path, PRIVATE_DIR)


def make_tree_private(root: Path) -> None:
    """Folders 0700 and files 0600 under ``root`` and ``root`` itself, whoever wrote them (pg_dump, SQLite, a download)."""
    for path in [*root.rglob("*"), root]:
        if path.is_symlink():
            continue
        os.chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)


def _fsync_tree(root: Path) -> None:
    """Flush every file of a finished backup to disk before it is renamed complete."""
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def _copy_registry(settings: Settings, work: Path, on_step: Step | None) -> tuple[int, dict[str, CollectionCounts], Backend]:
    """Copy the registry (brought up to this Citadel's schema first) into ``work``: its schema version, counts and backend."""
    registry = Registry(settings.registry_url)
    try:
        await registry.init()  # the copy then has this Citadel's schema
        say(on_step, "copying the registry")
        await registry.engine.dispose()  # a SQLite copy is made while this process holds no connection
        if registry.dialect == "postgresql":
            return await dump_postgres(settings, registry, work / PG_REGISTRY)
        return await asyncio.to_thread(copy_sqlite_registry, settings.registry_url, work / SQLITE_REGISTRY)
    finally:
        await registry.aclose()


async def _copy_vectors(settings: Settings, work: Path, on_step: Step | None) -> tuple[dict[str, int], dict[str, str], Backend]:
    """Copy the vectors into ``work``: the points per collection, the aliases and the backend."""
    if settings.qdrant_url:
        points, aliases, server_version = await asyncio.to_thread(server_backup, settings, work / VECTORS, on_step)
        return points, aliases, Backend(kind="server", location=masked_url(settings.qdrant_url), version=server_version)
    points, aliases = await asyncio.to_thread(copy_embedded, settings.qdrant_path, work / VECTORS, on_step)
    version = "qdrant-client " + importlib.metadata.version("qdrant-client")
    return points, aliases, Backend(kind="embedded", location=str(settings.qdrant_path.resolve()), version=version)


async def _write_backup(settings: Settings, work: Path, name: str, created_at: dt.datetime, on_step: Step | None) -> Manifest:
    version, counts, registry_backend = await _copy_registry(settings, work, on_step)
    points, aliases, vectors = await _copy_vectors(settings, work, on_step)
    for collection, count in points.items():
        counts.setdefault(collection, CollectionCounts(name=collection)).points = count
    (work / CONFIG).write_text(json.dumps(config_of(settings), indent=2) + "\n", encoding="utf-8")
    say(on_step, "computing checksums")
    files = {
        path.relative_to(work).as_posix(): FileEntry(sha256=sha256_of(path), bytes=path.stat().st_size)
        for path in sorted(work.rglob("*"))
        if path.is_file()
    }
    return Manifest(
        format=FORMAT_VERSION, name=name, created_at=created_at, duration_s=0.0, citadel_version=__version__,
        schema_version=version, registry=registry_backend, vectors=vectors,
        collections=[counts[key] for key in sorted(counts)], aliases=dict(sorted(aliases.items())), files=files,
        not_included={"redis": "the embedding cache: a cold cache only costs time (vectors are embedded again when needed)"},
    )
