"""A Qdrant server's collections in a backup: one snapshot per collection through the store's
snapshot client (checked against the checksum the server gives, deleted from the server once
downloaded), recovered from those snapshots on restore, and the aliases set again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from citadel.ops.backup.manifest import VECTORS, BackupError, Manifest, Step, say, sha256_of
from citadel.settings import Settings, masked_url, secret
from citadel.store import ServerError, ServerSnapshots

SNAPSHOT_ATTEMPTS = 3


def snapshot_file(name: str) -> str:
    """Where a backup keeps the snapshot of collection ``name``."""
    return f"{VECTORS}/{quote(name, safe='')}.snapshot"


@contextmanager
def server_of(settings: Settings) -> Iterator[ServerSnapshots]:
    """The configured server's snapshot client, its refusals told as :class:`BackupError`."""
    assert settings.qdrant_url
    try:
        with ServerSnapshots(settings.qdrant_url, secret(settings.qdrant_api_key)) as server:
            yield server
    except ServerError as exc:
        raise BackupError(str(exc)) from exc


def snapshot_collection(server: ServerSnapshots, name: str, target: Path) -> int | None:
    """Snapshot ``name`` into ``target``; the points it holds, or None when the collection went away.

    The snapshot is opaque, so its points are counted before and after it: a run writing to the
    collection meanwhile makes the counts differ, and the snapshot is taken again (the restore
    checks the restored count against this one).
    """
    for _ in range(SNAPSHOT_ATTEMPTS):
        try:
            before = server.count(name)
            checksum = server.download_snapshot(name, target)
            after = server.count(name)
        except ServerError as exc:
            if exc.status == 404 and name not in server.collections():
                target.unlink(missing_ok=True)
                return None  # deleted since it was listed (a pruned blue-green version)
            raise
        if checksum is not None and sha256_of(target) != checksum:
            raise BackupError(
                f"the snapshot of {name} downloaded from {masked_url(server.url)} does not match the checksum the server gave; "
                "run the backup again"
            )
        if before == after:
            return after
    raise BackupError(
        f"collection {name} kept changing while it was snapshotted ({SNAPSHOT_ATTEMPTS} attempts); "
        "run the backup again when the indexing runs writing to it are done"
    )


def server_backup(settings: Settings, target: Path, on_step: Step | None) -> tuple[dict[str, int], dict[str, str], str]:
    """Snapshot every collection of the server into ``target``: the points of each, the aliases and the server's version."""
    with server_of(settings) as server:
        version = server.version()
        points: dict[str, int] = {}
        target.mkdir(parents=True, exist_ok=True)
        for name in server.collections():
            say(on_step, f"snapshotting the vectors of {name}")
            count = snapshot_collection(server, name, target.parent / snapshot_file(name))
            if count is not None:
                points[name] = count
        aliases = {alias: name for alias, name in server.aliases().items() if name in points}
        return points, aliases, version


def server_points(settings: Settings, only: set[str] | None = None) -> dict[str, int]:
    """Points per collection of the server (of those in ``only``, when given)."""
    with server_of(settings) as server:
        return {name: server.count(name) for name in server.collections() if only is None or name in only}


def restore_server(settings: Settings, path: Path, manifest: Manifest) -> None:
    """Recover each collection from its snapshot, then set the aliases. Collections of the server
    that the backup does not hold are left as they are.

    A collection the server already has is deleted first: Qdrant recovers the points into an
    existing collection but keeps its own configuration (Citadel's model and dimensions among it)
    and refuses a snapshot of other vector sizes, so replacing it means recreating it.
    """
    with server_of(settings) as server:
        existing = set(server.collections())
        for collection in manifest.collections:
            if collection.points is None:
                continue
            if collection.name in existing:
                server.delete_collection(collection.name)
            relative = snapshot_file(collection.name)
            if relative not in manifest.files:
                raise BackupError(f"{path} lists collection {collection.name} but not its snapshot {relative}: the manifest is damaged")
            server.upload_snapshot(collection.name, path / relative, manifest.files[relative].sha256)
        server.set_aliases(manifest.aliases)
