"""The backup drill: index, back up, destroy, restore; then the counts and the top hits match
exactly, indexing again embeds nothing, and the audit trail holds its lines from before the
backup, then the restore's own, and still refuses changes. On the embedded defaults and on a real Postgres."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from citadel.registry import Registry
from citadel.settings import Settings
from citadel.store import close_local_clients
from citadel.testing.corpus import write_corpus
from citadel.testing.postgres import admin_execute
from cli.main import app
from tests.support.debian import ensure_debian_package

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

runner = CliRunner()
QUERIES = ("vector cache latency", "postgres registry payload", "retry worker schedule deployment")


def invoke(*args: str | Path) -> Any:
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The registry the drill runs on: the embedded SQLite file, or a Postgres database of its own."""
    if request.param == "sqlite":
        yield {"kind": "sqlite"}
        return
    ensure_debian_package("pg_dump", "postgresql-client")
    admin = request.getfixturevalue("postgres_url")
    name = f"citadel_backup_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_execute(f"CREATE DATABASE {name}", admin))
    monkeypatch.setenv("CITADEL_DATABASE_URL", admin.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield {"kind": "postgres", "database": name, "admin": admin}
    finally:
        asyncio.run(admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", admin))


def _state(collection: str) -> tuple[dict[str, int], dict[str, list[tuple[str, float]]]]:
    """(documents, chunks and vectors of the collection; the top 5 hits of each query)."""
    status = invoke("status", "--json")
    assert status.exit_code == 0, status.output
    entry = next(c for c in json.loads(status.stdout)["collections"] if c["collection"] == collection)
    counts = {key: entry[key] for key in ("documents", "chunks", "vectors")}
    hits = {}
    for query in QUERIES:
        found = invoke("search", query, "--collection", collection, "--limit", "5", "--json")
        assert found.exit_code == 0, found.output
        hits[query] = [(hit["id"], hit["score"]) for hit in json.loads(found.stdout)]
    return counts, hits


def _trail() -> list[dict[str, Any]]:
    listed = invoke("audit", "--json")
    assert listed.exit_code == 0, listed.output
    lines: list[dict[str, Any]] = json.loads(listed.stdout)
    return lines


def _restored_trail(before: list[dict[str, Any]], backup: str, replaced: bool) -> None:
    """The trail after a restore: the lines as they were (the backup's, and the target's since), then the restore's own line."""
    after = _trail()
    assert after[:-1] == before
    last = after[-1]
    assert (last["actor"], last["action"], last["target"], last["outcome"]) == (
        f"cli:{getpass.getuser()}", "backup.restored", f"backup:{backup}", "ok")
    assert ("replaced what the target held" if replaced else "into an empty target") in last["detail"]


def _try_to_rewrite_the_trail(registry: dict[str, str], data_dir: Path) -> None:
    """An UPDATE and a DELETE on the restored trail: refused on SQLite, nothing on Postgres."""
    if registry["kind"] == "postgres":
        url = Settings().registry_url
        asyncio.run(admin_execute("UPDATE citadel_audit SET actor = 'someone else'", url))
        asyncio.run(admin_execute("DELETE FROM citadel_audit", url))
        return
    with sqlite3.connect(data_dir / "registry.db") as conn:
        for statement in ("UPDATE citadel_audit SET actor = 'someone else'", "DELETE FROM citadel_audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)
    conn.close()


def test_the_drill(registry: dict[str, str], data_dir: Path, tmp_path: Path, collection_name: str) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=8, paragraphs=4)
    indexed = invoke("index", corpus, "--collection", collection_name, "--json")
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["chunks_embedded"] > 0
    # Read back from disk, as after the restore: points just upserted score in the last float digits
    # a little differently from the same points loaded from the store's file.
    close_local_clients()
    counts, hits = _state(collection_name)
    assert counts["documents"] == 8 and counts["chunks"] == counts["vectors"] > 8 and all(len(h) == 5 for h in hits.values())

    key = invoke("apikey", "create", "--name", "before the backup", "--scopes", "search", "--json")
    assert key.exit_code == 0, key.output
    trail = _trail()
    assert [line["action"] for line in trail] == ["key.created"]

    backups = tmp_path / "backups"
    made = invoke("backup", "create", "--to", backups, "--json")
    assert made.exit_code == 0, made.output
    summary = json.loads(made.stdout)
    path = Path(summary["path"])
    assert path.parent == backups and path.name == summary["name"] and summary["registry"] == registry["kind"]
    assert [(c["name"], c["documents"], c["chunks"], c["points"]) for c in summary["collections"]] == [
        (collection_name, 8, counts["chunks"], counts["vectors"])
    ]
    assert (path / ("registry.pgdump" if registry["kind"] == "postgres" else "registry.sqlite")).is_file()
    assert invoke("backup", "verify", path).exit_code == 0

    # Destroy everything: the data folder (embedded store, SQLite registry) and the Postgres database.
    close_local_clients()
    shutil.rmtree(data_dir)
    if registry["kind"] == "postgres":
        asyncio.run(admin_execute(f"DROP DATABASE {registry['database']} WITH (FORCE)", registry["admin"]))
        asyncio.run(admin_execute(f"CREATE DATABASE {registry['database']}", registry["admin"]))

    restored = invoke("backup", "restore", path, "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["replaced"] is False
    _restored_trail(trail, path.name, replaced=False)
    restored_trail = _trail()
    _try_to_rewrite_the_trail(registry, data_dir)
    assert _trail() == restored_trail
    after_counts, after_hits = _state(collection_name)
    assert after_counts == counts
    for query in QUERIES:
        assert after_hits[query] == hits[query], query
    again = invoke("index", corpus, "--collection", collection_name, "--json")
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert (rerun["chunks_embedded"], rerun["unchanged"], rerun["added"]) == (0, 8, 0)

    refused = invoke("backup", "restore", path)
    assert refused.exit_code == 2 and "the target is not empty" in refused.output and "--force" in refused.output
    forced = invoke("backup", "restore", path, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["replaced"] is True
    _restored_trail(restored_trail, path.name, replaced=True)  # the first restore's line was kept: it came after the backup

    # A second backup the same day, kept alone by --keep-daily 1; the first is pruned.
    second = invoke("backup", "create", "--to", backups, "--keep-daily", "1", "--keep-weekly", "0", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["pruned"] == [path.name]
    listed = invoke("backup", "list", "--to", backups, "--json")
    assert [b["name"] for b in json.loads(listed.stdout)] == [json.loads(second.stdout)["name"]]


def test_verify_exits_1_naming_the_corrupted_file_and_ignores_an_interrupted_backup(
    data_dir: Path, tmp_path: Path, collection_name: str
) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=2, paragraphs=2)
    assert invoke("index", corpus, "--collection", collection_name, "--json").exit_code == 0
    made = invoke("backup", "create", "--json")  # into CITADEL_BACKUP_DIR's default, <data dir>/backups
    assert made.exit_code == 0, made.output
    path = Path(json.loads(made.stdout)["path"])
    assert path.parent == data_dir / "backups"
    registry = path / "registry.sqlite"
    data = bytearray(registry.read_bytes())
    data[100] ^= 0x01
    registry.write_bytes(bytes(data))

    checked = invoke("backup", "verify", path.name)  # a name in the backup folder will do
    assert checked.exit_code == 1
    assert "FAIL  registry.sqlite: checksum mismatch" in checked.stdout

    interrupted = data_dir / "backups" / "citadel-backup-20300101T000000Z"  # named like one, without a manifest
    (interrupted / "vectors").mkdir(parents=True)
    report = invoke("backup", "verify", interrupted, "--json")
    assert report.exit_code == 1 and "not a complete backup" in json.loads(report.stdout)["problems"][0]
    listed = json.loads(invoke("backup", "list", "--json").stdout)
    assert [b["name"] for b in listed] == [path.name]
    pruned = invoke("backup", "prune", "--keep-daily", "0", "--keep-weekly", "0", "--json")
    assert json.loads(pruned.stdout) == {"kept": [path.name], "deleted": []} and interrupted.is_dir()

    missing = invoke("backup", "restore", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "does not exist" in missing.output


async def _no_upgrade(self: Registry) -> None:
    """Registry.init of a Citadel whose schema is the registry's own: nothing to create or upgrade."""


def test_a_backup_of_an_older_schema_restores_over_a_newer_registry(
    data_dir: Path, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restore (with --force) replaces the tables newer than the backup too, and the upgrade that
    follows rebuilds them from the restored rows (the run totals, from the restored runs)."""
    ensure_debian_package("pg_dump", "postgresql-client")
    name = f"citadel_backup_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_execute(f"CREATE DATABASE {name}", postgres_url))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("CITADEL_DATABASE_URL", url)
    try:
        corpus = tmp_path / "corpus"
        write_corpus(corpus, files=3, paragraphs=2)
        assert invoke("index", corpus, "--collection", "old", "--json").exit_code == 0
        # Make the registry what schema version 5 was: no run totals yet.
        asyncio.run(admin_execute("DROP TABLE citadel_run_totals; UPDATE citadel_schema_version SET version = 5", url))
        # A backup as the Citadel of schema 5 wrote it: this one's would upgrade the registry first.
        with monkeypatch.context() as older:
            older.setattr(Registry, "init", _no_upgrade)
            made = invoke("backup", "create", "--to", tmp_path / "backups", "--json")
        assert made.exit_code == 0, made.output
        path = Path(json.loads(made.stdout)["path"])
        assert json.loads((path / "manifest.json").read_text())["schema_version"] == 5

        # The registry moves on: upgraded to version 6 (run totals backfilled) and a second collection indexed.
        assert invoke("index", corpus, "--collection", "new", "--json").exit_code == 0
        close_local_clients()
        restored = invoke("backup", "restore", path, "--force", "--json")
        assert restored.exit_code == 0, restored.output

        async def totals() -> set[tuple[str, str, int]]:
            registry = Registry(Settings().registry_url)
            await registry.init()
            try:
                return {(t.collection, t.status, t.runs) for t in await registry.run_totals()}
            finally:
                await registry.aclose()

        assert asyncio.run(totals()) == {("old", "completed", 1)}
        collections = [c["collection"] for c in json.loads(invoke("status", "--json").stdout)["collections"]]
        assert collections == ["old"]
    finally:
        close_local_clients()
        asyncio.run(admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", postgres_url))
