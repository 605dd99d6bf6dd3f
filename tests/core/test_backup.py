"""Backups without Prefect: checksums that catch a flipped byte, refusals, aliases, retention, and
the audit trail a restore brings back and appends to."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from citadel.audit import AuditLog
from citadel.errors import ConfigurationError
from citadel.models import AuditEntry
from citadel.ops import BackupError, Manifest, backup, create_backup, list_backups, prune_backups, restore_backup, retained, verify_backup
from citadel.registry import SCHEMA_VERSION, Registry
from citadel.settings import Settings
from citadel.store import close_local_clients, local_client
from citadel.testing.corpus import index_with_own_backends, write_corpus


async def _indexed_backup(tmp_path: Path, collection: str) -> tuple[Settings, Path]:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=3, paragraphs=3)
    summary = await index_with_own_backends(str(corpus), collection)
    assert summary["chunks_written"] > 0
    settings = Settings()
    made = await create_backup(settings, tmp_path / "backups")
    return settings, Path(made.path)


async def test_verify_names_a_corrupted_file_and_restore_refuses_it(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    settings, path = await _indexed_backup(tmp_path, collection_name)
    assert verify_backup(path).ok
    storage = path / "vectors" / "collection" / collection_name / "storage.sqlite"
    data = bytearray(storage.read_bytes())
    data[len(data) // 2] ^= 0xFF
    storage.write_bytes(bytes(data))

    report = verify_backup(path)
    assert not report.ok
    assert report.problems == [f"vectors/collection/{collection_name}/storage.sqlite: checksum mismatch "
                               "(the file changed since the backup, or is corrupt)"]
    with pytest.raises(BackupError, match="does not verify, nothing restored"):
        await restore_backup(settings, path, force=True)


async def test_restore_refuses_a_non_empty_target_and_force_replaces_it(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    settings, path = await _indexed_backup(tmp_path, collection_name)
    manifest = backup.read_manifest(path)
    [counts] = manifest.collections
    assert counts.name == collection_name and counts.documents == 3 and counts.chunks == counts.points > 0

    other = tmp_path / "other"
    write_corpus(other, files=2, paragraphs=2, seed=11)
    await index_with_own_backends(str(other), collection_name)  # changes the target after the backup
    with pytest.raises(ConfigurationError, match=r"the target is not empty \(5 documents .*pass --force"):
        await restore_backup(settings, path)

    close_local_clients()
    restored = await restore_backup(settings, path, force=True)
    assert restored.replaced and restored.collections == manifest.collections


async def _trail(settings: Settings, write: str | None = None) -> list[AuditEntry]:
    """The registry's audit trail, after appending a line of ``write``'s action if given."""
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        if write is not None:
            await AuditLog(registry).record("cli:tester", write, target="key:0123456789ab")
        return await AuditLog(registry).read()
    finally:
        await registry.aclose()


async def test_a_restore_keeps_the_trail_and_appends_its_own_line(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    Settings().data_dir.mkdir(parents=True, exist_ok=True)
    await _trail(Settings(), write="key.created")
    settings, path = await _indexed_backup(tmp_path, collection_name)
    since = await _trail(settings, write="key.revoked")  # after the backup: the registry goes back, the trail keeps it

    close_local_clients()
    await restore_backup(settings, path, force=True, actor="ops:restorer")
    *kept, restored = await _trail(settings)
    assert kept == since and [line.action for line in kept] == ["key.created", "key.revoked"]
    assert (restored.actor, restored.action, restored.target, restored.outcome) == (
        "ops:restorer", "backup.restored", f"backup:{path.name}", "ok")
    assert restored.detail == f"from {path}; sqlite registry, embedded vectors; replaced what the target held"


async def test_collections_and_aliases_of_the_embedded_store_come_back(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    settings, _ = await _indexed_backup(tmp_path, collection_name)
    from qdrant_client import models

    client = local_client(settings.qdrant_path)
    client.update_collection_aliases(
        change_aliases_operations=[models.CreateAliasOperation(create_alias=models.CreateAlias(
            collection_name=collection_name, alias_name=f"{collection_name}_live"))]
    )
    made = await create_backup(settings, tmp_path / "backups")
    assert made.aliases == {f"{collection_name}_live": collection_name}

    close_local_clients()
    for path in (settings.data_dir / "qdrant", settings.data_dir / "registry.db"):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    restored = await restore_backup(settings, Path(made.path))
    assert not restored.replaced and restored.aliases == made.aliases
    client = local_client(settings.qdrant_path)
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == made.aliases
    assert client.count(f"{collection_name}_live").count == made.collections[0].points


async def test_a_backup_of_a_newer_schema_is_refused(data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    settings, path = await _indexed_backup(tmp_path, collection_name)
    copy = path / "registry.sqlite"  # made as a newer Citadel would have made it
    with sqlite3.connect(copy) as conn:
        conn.execute("INSERT INTO citadel_schema_version VALUES (?, '2027-01-01 00:00:00')", (SCHEMA_VERSION + 1,))
    conn.close()
    manifest = backup.read_manifest(path)
    manifest.schema_version = SCHEMA_VERSION + 1
    manifest.files["registry.sqlite"] = backup.FileEntry(sha256=backup.sha256_of(copy), bytes=copy.stat().st_size)
    (path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    assert verify_backup(path).ok
    close_local_clients()
    with pytest.raises(ConfigurationError, match=f"schema is version {SCHEMA_VERSION + 1}, newer than this Citadel knows"):
        await restore_backup(settings, path, force=True)


def test_the_configuration_is_kept_without_secrets(data_dir: Path) -> None:
    settings = Settings(
        database_url="postgresql://citadel:db-pass-123@db.example:5432/citadel", redis_url="redis://:redis-pass-456@cache:6379/0",
        openai_api_key="sk-secret-789", qdrant_url="https://qdrant.example:6333", qdrant_api_key="qdrant-key-000",
    )
    config = json.dumps(backup.public_settings(settings))
    for secret in ("db-pass-123", "redis-pass-456", "sk-secret-789", "qdrant-key-000"):
        assert secret not in config
    kept = json.loads(config)
    assert kept["database_url"] == "postgresql://citadel:***@db.example:5432/citadel"
    assert kept["qdrant_url"] == "https://qdrant.example:6333" and kept["chunk_size"] == 1000


def _fake_backup(directory: Path, moment: dt.datetime) -> Path:
    """A complete backup folder with an empty manifest, dated ``moment``."""
    name = f"citadel-backup-{moment:%Y%m%dT%H%M%SZ}"
    path = directory / name
    path.mkdir(parents=True)
    backend = {"kind": "sqlite", "location": "x"}
    manifest = Manifest.model_validate({
        "format": 1, "name": name, "created_at": moment, "duration_s": 0.1, "citadel_version": "0", "schema_version": 6,
        "registry": backend, "vectors": {"kind": "embedded", "location": "y"}, "collections": [], "files": {},
    })
    (path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return path


def test_prune_keeps_the_newest_of_each_day_and_week_and_ignores_incomplete_folders(tmp_path: Path) -> None:
    base = dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC)  # a Wednesday
    moments = [base - dt.timedelta(days=day, hours=hour) for day in range(0, 30) for hour in (0, 12)]
    for moment in moments:
        _fake_backup(tmp_path, moment)
    interrupted = tmp_path / ".citadel-backup-20261202T040000Z.partial-1234abcd"
    interrupted.mkdir()
    no_manifest = tmp_path / "citadel-backup-20261202T050000Z"  # named like one, never finished
    no_manifest.mkdir()
    assert not verify_backup(no_manifest).ok and "not a complete backup" in verify_backup(no_manifest).problems[0]
    assert len(list_backups(tmp_path)) == 60

    result = prune_backups(tmp_path, keep_daily=3, keep_weekly=2)

    # Backups run at 03:00 and 15:00. Days: Dec 2 (03:00 only), Dec 1 and Nov 30 (their 15:00 runs);
    # ISO weeks: 49 (Mon Nov 30 on: Dec 2 03:00 again) and 48 (its newest: Sun Nov 29 15:00).
    expected = ["citadel-backup-20261202T030000Z", "citadel-backup-20261201T150000Z", "citadel-backup-20261130T150000Z",
                "citadel-backup-20261129T150000Z"]
    assert result.kept == expected
    assert sorted(b.name for b in list_backups(tmp_path)) == sorted(expected)
    assert len(result.deleted) == 56
    assert interrupted.is_dir() and no_manifest.is_dir()


def test_retention_never_deletes_the_newest_and_counts_only_days_with_backups() -> None:
    day = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    old = [day - dt.timedelta(days=40), day - dt.timedelta(days=60), day - dt.timedelta(days=61, hours=1)]
    assert retained(old, 0, 0) == {old[0]}
    # The timer stopped for weeks: the last two days that have backups are kept, however old.
    assert retained(old, 2, 0) == {old[0], old[1]}
    same_week = [dt.datetime(2026, 1, 5, tzinfo=dt.UTC) + dt.timedelta(days=d) for d in range(7)]  # Monday to Sunday
    assert retained(same_week, 0, 1) == {same_week[-1]}


def test_prune_deletes_what_interrupted_backups_left_a_day_ago_but_never_a_fresh_one(tmp_path: Path) -> None:
    import os
    import time

    kept = _fake_backup(tmp_path, dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC))
    old_partial = tmp_path / ".citadel-backup-20261130T030000Z.partial-0badc0de"
    old_deleting = tmp_path / ".citadel-backup-20261101T030000Z.deleting-12345678"
    slow_partial = tmp_path / ".citadel-backup-20261129T030000Z.partial-5105105f"  # started long ago, still writing
    fresh_partial = tmp_path / ".citadel-backup-20261202T040000Z.partial-f2e5f2e5"
    stranger = tmp_path / ".citadel-backup-notes"  # not named as Citadel names its folders
    two_days_ago = time.time() - 2 * 86400
    for folder in (old_partial, old_deleting, slow_partial, fresh_partial, stranger):
        (folder / "vectors").mkdir(parents=True)
        (folder / "vectors" / "part.snapshot").write_bytes(b"x" * 10)
        if folder is not fresh_partial:
            for path in (folder / "vectors" / "part.snapshot", folder / "vectors", folder):
                os.utime(path, (two_days_ago, two_days_ago))
    (slow_partial / "vectors" / "part.snapshot").write_bytes(b"y" * 20)  # written to just now

    result = prune_backups(tmp_path, keep_daily=1, keep_weekly=0)

    assert result.kept == [kept.name]
    assert result.deleted == [old_deleting.name, old_partial.name]
    assert not old_partial.exists() and not old_deleting.exists()
    assert slow_partial.is_dir() and fresh_partial.is_dir() and stranger.is_dir() and kept.is_dir()
    assert [b.name for b in list_backups(tmp_path)] == [kept.name]


async def test_every_file_and_folder_a_backup_creates_is_private_whatever_the_umask(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    """A backup holds every indexed text: owner-only (0700 folders, 0600 files) even under umask 000."""
    import os
    import stat

    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, paragraphs=2)
    await index_with_own_backends(str(corpus), collection_name)
    previous = os.umask(0)
    try:
        made = await create_backup(Settings(), tmp_path / "new" / "backups")
    finally:
        os.umask(previous)
    root = Path(made.path)
    created = [tmp_path / "new", tmp_path / "new" / "backups", root, *root.rglob("*")]
    modes = {str(path.relative_to(tmp_path)): stat.S_IMODE(path.stat().st_mode) for path in created}
    assert any(path.is_file() for path in created) and any(path.is_dir() for path in root.rglob("*"))
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)}
    assert not wrong, wrong
