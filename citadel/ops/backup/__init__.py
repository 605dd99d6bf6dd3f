"""Backups of what Citadel cannot rebuild cheaply: the registry and the vectors, with a manifest.

A backup is one folder, ``citadel-backup-<UTC yyyymmddThhmmssZ>/``:

- ``registry.sqlite`` (a SQLite registry, copied with SQLite's online backup API) or
  ``registry.pgdump`` (Postgres: ``pg_dump --format=custom`` of the ``citadel_*`` tables);
- ``vectors/``: in embedded mode the store's ``meta.json`` (collections and aliases) and each
  collection's ``collection/<name>/storage.sqlite``, copied with the same online backup API (the
  store stays open in the process that holds it); on a Qdrant server one ``<name>.snapshot`` per
  collection from Qdrant's snapshot API (checked against the checksum the server gives, and
  deleted from the server once downloaded), and the aliases in the manifest;
- ``config.json``: the settings without secrets (passwords in URLs masked, keys left out);
- ``manifest.json``: format and versions, backends (URLs masked), every file's SHA-256 and size,
  and per collection the documents, chunks and points it holds. It is written last, inside a
  hidden folder beside the target that is renamed into place at the end: a killed backup never
  looks complete, list and verify ignore it, and prune deletes it once it is a day old.

Redis is not backed up: it is a cache of embeddings keyed by model and text. A cold cache only
costs time (the next runs embed again what they need); it never loses or changes a result.

Consistency while a flow runs: the engine writes a document's points before the registry marks it
indexed (pending ids, then points, then the registry). The registry is copied first, in one
snapshot, then the vectors, so the vectors hold at least what the registry says is indexed;
points written in between are unknown to the registry copy and a document deleted in between
lacks its points, and the check every run makes of the store against the registry repairs both
(stray points deleted, missing ones written again through the cache). Holding the run locks
instead would stall running flows for the length of the backup, and on Postgres a lock belongs to
the session of the run that holds it, so the backup could not wait for them cleanly.

One module per concern: ``manifest`` (names, manifest, counts), ``sqliteregistry`` and ``postgres``
(the registry), ``embedded`` and ``server`` (the vectors), ``retention`` (list, prune, resolve),
``create``, ``verify`` and ``restore``.
"""

from __future__ import annotations

from citadel.ops.backup.create import create_backup
from citadel.ops.backup.manifest import (
    BackupError,
    BackupSummary,
    CollectionCounts,
    FileEntry,
    Manifest,
    PruneResult,
    RestoreResult,
    VerifyReport,
    public_settings,
    read_manifest,
    sha256_of,
)
from citadel.ops.backup.restore import restore_backup
from citadel.ops.backup.retention import list_backups, prune_backups, resolve_backup, retained
from citadel.ops.backup.verify import verify_backup

__all__ = [
    "BackupError",
    "BackupSummary",
    "CollectionCounts",
    "FileEntry",
    "Manifest",
    "PruneResult",
    "RestoreResult",
    "VerifyReport",
    "create_backup",
    "list_backups",
    "prune_backups",
    "public_settings",
    "read_manifest",
    "resolve_backup",
    "restore_backup",
    "retained",
    "sha256_of",
    "verify_backup",
]
