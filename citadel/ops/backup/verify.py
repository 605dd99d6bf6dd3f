"""Checking a backup without restoring it: every file's checksum and size, the SQLite copies'
integrity, the Postgres dump's table of contents, and the counts the copies can tell cheaply."""

from __future__ import annotations

import sqlite3
import tarfile
from collections.abc import Mapping
from pathlib import Path

from citadel.ops.backup.embedded import storage_collection
from citadel.ops.backup.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    PG_REGISTRY,
    SQLITE_REGISTRY,
    VECTORS,
    BackupError,
    BackupSummary,
    CollectionCounts,
    Manifest,
    VerifyReport,
    count_problems,
    read_manifest,
    sha256_of,
)
from citadel.ops.backup.postgres import dump_problem
from citadel.ops.backup.sqliteregistry import sqlite_counts, sqlite_problem
from citadel.store import stored_points


def verify_backup(path: Path) -> VerifyReport:
    """Check a backup without restoring it: every file's checksum and size, the SQLite copies'
    integrity, the Postgres dump's table of contents, and the counts the copies can tell cheaply."""
    try:
        manifest = read_manifest(path)
    except BackupError as exc:
        return VerifyReport(path=str(path), ok=False, files_checked=0, problems=[str(exc)])
    problems: list[str] = []
    if manifest.format > FORMAT_VERSION:
        problems.append(f"{MANIFEST}: format {manifest.format} is newer than this Citadel reads ({FORMAT_VERSION}); upgrade Citadel")
    sound = _sound_files(path, manifest, problems)
    counts = {c.name: c for c in manifest.collections}
    for relative in sorted(sound):
        problems += _content_problems(path / relative, relative, manifest, counts)
    return VerifyReport(
        path=str(path), ok=not problems, files_checked=len(manifest.files), problems=problems,
        backup=BackupSummary.of(path, manifest),
    )


def _sound_files(path: Path, manifest: Manifest, problems: list[str]) -> set[str]:
    """The files of the manifest whose size and checksum match; a problem added for each other one."""
    sound: set[str] = set()
    for relative, entry in manifest.files.items():
        file = path / relative
        if not file.is_file():
            problems.append(f"{relative}: missing")
        elif file.stat().st_size != entry.bytes:
            problems.append(f"{relative}: {file.stat().st_size} bytes, the manifest says {entry.bytes}")
        elif sha256_of(file) != entry.sha256:
            problems.append(f"{relative}: checksum mismatch (the file changed since the backup, or is corrupt)")
        else:
            sound.add(relative)
    return sound


def _content_problems(file: Path, relative: str, manifest: Manifest, counts: Mapping[str, CollectionCounts]) -> list[str]:
    """What is wrong inside one sound file of the backup, by its kind."""
    if relative.endswith(".sqlite") and (problem := sqlite_problem(file)):
        return [f"{relative}: {problem}"]
    if relative == SQLITE_REGISTRY:
        version, found = sqlite_counts(file)
        problems = count_problems(relative, counts, found, ("documents", "chunks"))
        if version != manifest.schema_version:
            problems.append(f"{relative}: schema version {version}, the manifest says {manifest.schema_version}")
        return problems
    if relative == PG_REGISTRY:
        problem = dump_problem(file)
        return [f"{relative}: {problem}"] if problem else []
    if relative.startswith(f"{VECTORS}/") and relative.endswith(".snapshot") and not tarfile.is_tarfile(file):
        return [f"{relative}: not a tar archive, as every Qdrant snapshot is"]
    name = storage_collection(relative)
    if name is not None:
        expected = counts[name].points if name in counts else None
        try:
            points = stored_points(file)
        except sqlite3.Error as exc:
            return [f"{relative}: not a collection's storage ({exc})"]
        if points != expected:
            return [f"{relative}: {points} points, the manifest says {expected}"]
    return []
