"""The embedded store in a backup: ``meta.json`` and each collection's SQLite file, copied with
SQLite's online backup API while the store stays open in the process that holds it, and put back
as a whole folder swapped in."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from citadel.ops.backup.manifest import VECTORS, BackupError, Manifest, Step, say
from citadel.ops.backup.sqliteregistry import copy_sqlite
from citadel.store import (
    EMBEDDED_COLLECTIONS_DIR,
    EMBEDDED_META_FILE,
    EMBEDDED_STORAGE_FILE,
    EmbeddedMeta,
    embedded_storage_file,
    read_embedded_meta,
    stored_points,
)

STORAGE_PREFIX = f"{VECTORS}/{EMBEDDED_COLLECTIONS_DIR}/"
STORAGE_SUFFIX = f"/{EMBEDDED_STORAGE_FILE}"


def storage_collection(relative: str) -> str | None:
    """The collection whose storage file a backup's file ``relative`` is, or None."""
    if relative.startswith(STORAGE_PREFIX) and relative.endswith(STORAGE_SUFFIX):
        return relative.removeprefix(STORAGE_PREFIX).removesuffix(STORAGE_SUFFIX)
    return None


def _storage(root: Path, name: str) -> Path:
    """A collection's SQLite file under ``root``, refusing a name that would lead outside it (as qdrant-client does)."""
    path = embedded_storage_file(root, name)
    if path is None:
        raise BackupError(f"collection name {name!r} points outside the store folder; the store's meta.json is damaged")
    return path


def _read_meta(qdrant_path: Path) -> EmbeddedMeta:
    try:
        meta = read_embedded_meta(qdrant_path)
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"cannot read {qdrant_path / EMBEDDED_META_FILE} ({exc}): the embedded store's list of collections is damaged"
        ) from exc
    return meta if meta is not None else EmbeddedMeta({}, {}, {"collections": {}, "aliases": {}})


def copy_embedded(qdrant_path: Path, target: Path, on_step: Step | None) -> tuple[dict[str, int], dict[str, str]]:
    """Copy every embedded collection and ``meta.json``; the points per collection and the aliases.

    The store is never opened: qdrant-client locks its folder to one process. ``meta.json`` is
    replaced whole by qdrant-client (written beside it, then renamed), so one read is consistent.
    """
    meta = _read_meta(qdrant_path)
    points: dict[str, int] = {}
    for name in meta.collections:
        storage = _storage(qdrant_path, name)
        if not storage.is_file():  # deleted since meta.json was read
            continue
        say(on_step, f"copying the vectors of {name}")
        copy = _storage(target, name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy_sqlite(storage, copy)
        points[name] = stored_points(copy)
    saved = meta.keeping(set(points))
    target.mkdir(parents=True, exist_ok=True)
    (target / EMBEDDED_META_FILE).write_text(json.dumps(saved), encoding="utf-8")
    return points, dict(saved["aliases"])


def embedded_points(qdrant_path: Path) -> dict[str, int]:
    """Points per collection of an embedded store, read from its files."""
    meta = _read_meta(qdrant_path)
    found: dict[str, int] = {}
    for name in meta.collections:
        storage = _storage(qdrant_path, name)
        found[name] = stored_points(storage) if storage.is_file() else 0
    return found


def restore_embedded(path: Path, manifest: Manifest, qdrant_path: Path) -> None:
    """Build the store folder beside the target, then swap it in (the old one deleted after)."""
    tag = uuid.uuid4().hex[:8]
    staging = qdrant_path.with_name(f".{qdrant_path.name}.restoring-{tag}")
    source = path / VECTORS
    staging.mkdir(parents=True)
    try:
        if (source / EMBEDDED_META_FILE).is_file():
            shutil.copyfile(source / EMBEDDED_META_FILE, staging / EMBEDDED_META_FILE)
        for collection in manifest.collections:
            if collection.points is None:
                continue
            copy = _storage(staging, collection.name)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_storage(source, collection.name), copy)
        old = qdrant_path.with_name(f".{qdrant_path.name}.replaced-{tag}")
        if qdrant_path.exists():
            qdrant_path.rename(old)
        staging.rename(qdrant_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
