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
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from citadel import __version__
from citadel.errors import CitadelError, ConfigurationError
from citadel.models import Result, UTCDateTime
from citadel.registry import SCHEMA_VERSION, Registry, chunks, collections, documents, metadata, schema_version
from citadel.settings import Settings, masked_url, secret
from citadel.store import embedded_store_holder, store_in_use

FORMAT_VERSION = 1
PREFIX = "citadel-backup-"
NAME = re.compile(r"citadel-backup-(\d{8}T\d{6}Z)")
# What a killed backup (or prune) leaves: the hidden folder it was writing (or deleting).
LEFTOVER = re.compile(r"\.citadel-backup-\d{8}T\d{6}Z\.(partial|deleting)-[0-9a-f]{8}")
LEFTOVER_AGE_S = 24 * 3600
STAMP = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
SQLITE_REGISTRY = "registry.sqlite"
PG_REGISTRY = "registry.pgdump"
CONFIG = "config.json"
VECTORS = "vectors"

Step = Callable[[str], None]


class BackupError(CitadelError):
    """A backup could not be made, checked or restored (the message says what and what to do)."""


class ServerAnswer(BackupError):
    """The Qdrant server refused a call (``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CollectionCounts(Result):
    """What one collection holds: registry documents (indexed) and chunks, and store points."""

    name: str
    model: str | None = None
    dimensions: int | None = None
    documents: int = 0
    chunks: int = 0
    points: int | None = Field(None, description="None: the vector store has no such collection.")


class FileEntry(Result):
    sha256: str
    bytes: int


class Backend(Result):
    kind: Literal["sqlite", "postgres", "embedded", "server"]
    location: str = Field(description="The database URL or store folder or server URL, password masked.")
    version: str | None = None


class Manifest(Result):
    """``manifest.json``: what a backup holds, and how to check it."""

    format: int
    name: str
    created_at: UTCDateTime
    duration_s: float
    citadel_version: str
    schema_version: int
    registry: Backend
    vectors: Backend
    collections: list[CollectionCounts]
    aliases: dict[str, str] = Field(default_factory=dict, description="Alias name -> collection.")
    files: dict[str, FileEntry]
    not_included: dict[str, str] = Field(default_factory=dict)


class BackupSummary(Result):
    """One complete backup, as ``create`` and ``list`` show it."""

    name: str
    path: str
    created_at: UTCDateTime
    bytes: int
    duration_s: float
    schema_version: int
    registry: str
    vectors: str
    collections: list[CollectionCounts]
    aliases: dict[str, str]
    pruned: list[str] = Field(default_factory=list, description="Backups deleted by the retention after this one.")

    @classmethod
    def of(cls, path: Path, manifest: Manifest) -> BackupSummary:
        return cls(
            name=manifest.name, path=str(path), created_at=manifest.created_at,
            bytes=sum(entry.bytes for entry in manifest.files.values()) + _size(path / MANIFEST),
            duration_s=manifest.duration_s, schema_version=manifest.schema_version,
            registry=manifest.registry.kind, vectors=manifest.vectors.kind,
            collections=manifest.collections, aliases=manifest.aliases,
        )


class VerifyReport(Result):
    """What ``verify`` found: ``ok`` with no problems, else one line per problem naming the file."""

    path: str
    ok: bool
    files_checked: int
    problems: list[str]
    backup: BackupSummary | None = None


class RestoreResult(Result):
    """What a restore wrote, with the counts read back from the restored backends."""

    name: str
    path: str
    duration_s: float
    registry: str
    vectors: str
    replaced: bool = Field(description="Whether a non-empty target was overwritten (--force).")
    collections: list[CollectionCounts]
    aliases: dict[str, str]


class PruneResult(Result):
    kept: list[str]
    deleted: list[str] = Field(
        description="Backups the retention dropped, then the hidden folders interrupted backups left over a day ago."
    )


# --- helpers ------------------------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _say(on_step: Step | None, message: str) -> None:
    if on_step is not None:
        on_step(message)


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


def _open_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file ``path`` is not sound (``integrity_check``), or None."""
    try:
        conn = _open_read_only(path)
        try:
            rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"not a readable SQLite database ({exc})"
    return None if rows == ["ok"] else "integrity check failed: " + "; ".join(rows[:3])


def _store_points(storage: Path) -> int:
    """Points in an embedded collection's SQLite file (one row a point)."""
    conn = _open_read_only(storage)
    try:
        return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])
    finally:
        conn.close()


def _registry_counts(conn: sa.Connection) -> tuple[int, dict[str, CollectionCounts]]:
    """The schema version and the per-collection counts of a registry (same queries on both databases)."""
    version = int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)
    found = {
        row.name: CollectionCounts(name=row.name, model=row.model, dimensions=row.dimensions)
        for row in conn.execute(sa.select(collections.c.name, collections.c.model, collections.c.dimensions))
    }

    def per_collection(table: sa.Table, *where: Any) -> Iterable[tuple[str, int]]:
        query = sa.select(table.c.collection, sa.func.count()).where(*where).group_by(table.c.collection)
        return ((str(name), int(count)) for name, count in conn.execute(query).all())

    for name, count in per_collection(documents, documents.c.status == "indexed"):
        found.setdefault(name, CollectionCounts(name=name)).documents = count
    for name, count in per_collection(chunks):
        found.setdefault(name, CollectionCounts(name=name)).chunks = count
    return version, found


def _sqlite_counts(path: Path) -> tuple[int, dict[str, CollectionCounts]]:
    engine = sa.create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            return _registry_counts(conn)
    finally:
        engine.dispose()


def sqlite_path(registry_url: str) -> Path:
    """The file of a SQLite registry URL."""
    database = sa.engine.make_url(registry_url).database
    if not database or database == ":memory:":
        raise ConfigurationError("the registry is an in-memory SQLite database: there is nothing to back up or restore")
    return Path(database)


def libpq_env(registry_url: str) -> tuple[dict[str, str], str]:
    """The environment that points pg_dump/pg_restore at the registry's database (the password in
    ``PGPASSWORD``, never on a command line), and the database name."""
    url = sa.engine.make_url(registry_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    for key, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username), ("PGPASSWORD", url.password)):
        if value:
            env[key] = str(value)
    mode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(mode, str) and mode:
        env["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(mode.lower(), mode)
    return env, url.database or ""


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(f"{name} is not on PATH: install the PostgreSQL client tools (apt-get install postgresql-client)")
    return found


def _run_tool(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a PostgreSQL client tool; its first error line (never its environment) on failure."""
    done = subprocess.run(list(args), env=dict(env) if env is not None else None, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = " / ".join(lines[:2]) or f"exit status {done.returncode}"
        raise BackupError(f"{Path(args[0]).name} failed: {reason}")
    return done.stdout


def _tool_version(name: str) -> str:
    return _run_tool([_pg_tool(name), "--version"]).strip()


def public_settings(settings: BaseModel) -> dict[str, Any]:
    """A settings object as JSON without secrets: secret values left out (URLs kept with the
    password masked), and a password in any other URL masked."""

    def clean(value: Any) -> Any:
        if isinstance(value, SecretStr):
            plain = value.get_secret_value()
            return masked_url(plain) if "://" in plain else "(set; not kept in backups)"
        if isinstance(value, str) and "://" in value:
            return masked_url(value)
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    plain: dict[str, Any] = to_jsonable_python({name: clean(value) for name, value in settings})
    return plain


def _config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {"settings": public_settings(settings)}
    try:
        from citadel.apisettings import ApiSettings

        config["api_settings"] = public_settings(ApiSettings())
    except ValidationError:
        config["api_settings"] = None  # the HTTP service's settings do not validate here; the core's do
    return config


def _qdrant_client_version() -> str:
    return "qdrant-client " + importlib.metadata.version("qdrant-client")


# --- the vector store ---------------------------------------------------------------------------


def _collection_dir(root: Path, name: str) -> Path:
    """``root/collection/<name>``, refusing a name that would lead outside it (as qdrant-client does)."""
    base = (root / "collection").resolve()
    path = (base / name).resolve()
    if path == base or base not in path.parents:
        raise BackupError(f"collection name {name!r} points outside the store folder; the store's meta.json is damaged")
    return root / "collection" / name


def _read_meta(qdrant_path: Path) -> dict[str, Any]:
    meta_path = qdrant_path / "meta.json"
    if not meta_path.is_file():
        return {"collections": {}, "aliases": {}}
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        meta.setdefault("aliases", {})
        if not isinstance(meta["collections"], dict):
            raise TypeError("collections is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"cannot read {meta_path} ({exc}): the embedded store's list of collections is damaged") from exc
    return meta


def _copy_embedded(qdrant_path: Path, target: Path, on_step: Step | None) -> tuple[dict[str, int], dict[str, str]]:
    """Copy every embedded collection and ``meta.json``; the points per collection and the aliases.

    The store is never opened: qdrant-client locks its folder to one process. ``meta.json`` is
    replaced whole by qdrant-client (written beside it, then renamed), so one read is consistent.
    """
    meta = _read_meta(qdrant_path)
    points: dict[str, int] = {}
    kept: dict[str, Any] = {}
    for name, config in meta["collections"].items():
        storage = _collection_dir(qdrant_path, name) / "storage.sqlite"
        if not storage.is_file():  # deleted since meta.json was read
            continue
        _say(on_step, f"copying the vectors of {name}")
        copy = _collection_dir(target, name) / "storage.sqlite"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy_sqlite(storage, copy)
        points[name] = _store_points(copy)
        kept[name] = config
    aliases = {str(alias): str(name) for alias, name in meta["aliases"].items() if name in kept}
    saved = {**meta, "collections": kept, "aliases": aliases}
    saved["text_indexes"] = {name: value for name, value in meta.get("text_indexes", {}).items() if name in kept}
    target.mkdir(parents=True, exist_ok=True)
    (target / "meta.json").write_text(json.dumps(saved), encoding="utf-8")
    return points, aliases


def _embedded_points(qdrant_path: Path) -> dict[str, int]:
    """Points per collection of an embedded store, read from its files."""
    meta = _read_meta(qdrant_path)
    found: dict[str, int] = {}
    for name in meta["collections"]:
        storage = _collection_dir(qdrant_path, name) / "storage.sqlite"
        found[name] = _store_points(storage) if storage.is_file() else 0
    return found


class QdrantServer:
    """The few REST calls of Qdrant's API a backup needs (collections, counts, snapshots, aliases)."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float = 600) -> None:
        headers = {"api-key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, verify=url.lower().startswith("https://"))

    def close(self) -> None:
        self.client.close()

    def _result(self, response: httpx.Response) -> Any:
        if response.is_error:
            try:
                reason = response.json()["status"]["error"]
            except (ValueError, KeyError, TypeError):
                reason = response.text[:200] or response.reason_phrase
            raise ServerAnswer(
                f"the Qdrant server at {masked_url(self.url)} answered {response.request.method} {response.request.url.path} "
                f"with {response.status_code}: {reason}",
                response.status_code,
            )
        return response.json()["result"] if response.content else None

    def _unreachable(self, exc: httpx.HTTPError) -> BackupError:
        return BackupError(f"cannot reach the Qdrant server at {masked_url(self.url)} ({exc}); start it or fix CITADEL_QDRANT_URL")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._result(self.client.request(method, path, **kwargs))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def version(self) -> str:
        try:
            answer = self.client.get("/")
            return "qdrant " + str(answer.json().get("version", "?")) if answer.is_success else "qdrant (version not told)"
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        except ValueError:
            return "qdrant (version not told)"

    def collections(self) -> list[str]:
        return sorted(str(c["name"]) for c in self.call("GET", "/collections")["collections"])

    def aliases(self) -> dict[str, str]:
        return {str(a["alias_name"]): str(a["collection_name"]) for a in self.call("GET", "/aliases")["aliases"]}

    def count(self, name: str) -> int:
        return int(self.call("POST", f"/collections/{quote(name, safe='')}/points/count", json={"exact": True})["count"])

    def download_snapshot(self, name: str, target: Path) -> None:
        """Have the server snapshot ``name``, save it to ``target`` (checked against the checksum
        the server gives), and delete it from the server."""
        base = f"/collections/{quote(name, safe='')}/snapshots"
        created = self.call("POST", base, params={"wait": "true"})
        snapshot = str(created["name"])
        try:
            with self.client.stream("GET", f"{base}/{quote(snapshot, safe='')}") as response:
                if response.is_error:
                    response.read()
                    self._result(response)
                with open(target, "wb") as handle:
                    for block in response.iter_bytes(1 << 20):
                        handle.write(block)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        finally:
            self.call("DELETE", f"{base}/{quote(snapshot, safe='')}", params={"wait": "true"})
        expected = created.get("checksum")
        if isinstance(expected, str) and expected and sha256_of(target) != expected.lower():
            raise BackupError(
                f"the snapshot of {name} downloaded from {masked_url(self.url)} does not match the checksum the server gave; "
                "run the backup again"
            )

    def delete_collection(self, name: str) -> None:
        self.call("DELETE", f"/collections/{quote(name, safe='')}")

    def upload_snapshot(self, name: str, source: Path, sha256: str) -> None:
        """Recover collection ``name`` from a snapshot file, which the server checks against
        ``sha256``; then delete the copy Qdrant keeps of an uploaded snapshot."""
        base = f"/collections/{quote(name, safe='')}/snapshots"
        uploaded = f"citadel-restore-{uuid.uuid4().hex[:12]}.snapshot"  # a name no snapshot of the server has
        with open(source, "rb") as handle:
            self.call(
                "POST", f"{base}/upload",
                params={"priority": "snapshot", "wait": "true", "checksum": sha256},
                files={"snapshot": (uploaded, handle, "application/octet-stream")},
            )
        try:
            self.call("DELETE", f"{base}/{uploaded}", params={"wait": "true"})
        except BackupError as exc:
            raise BackupError(
                f"collection {name} was restored, but the server kept the uploaded snapshot {uploaded}: {exc}; "
                f"delete it with DELETE /collections/{name}/snapshots/{uploaded} to free its disk space"
            ) from exc

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        """Make the server's aliases named in ``aliases`` point where they say."""
        existing = self.aliases()
        actions: list[dict[str, Any]] = [{"delete_alias": {"alias_name": alias}} for alias in aliases if alias in existing]
        actions += [{"create_alias": {"alias_name": alias, "collection_name": name}} for alias, name in aliases.items()]
        if actions:
            self.call("POST", "/collections/aliases", json={"actions": actions})


def _snapshot_file(name: str) -> str:
    return f"{VECTORS}/{quote(name, safe='')}.snapshot"


def _server(settings: Settings) -> QdrantServer:
    assert settings.qdrant_url
    return QdrantServer(settings.qdrant_url, secret(settings.qdrant_api_key))


SNAPSHOT_ATTEMPTS = 3


def _snapshot_collection(server: QdrantServer, name: str, target: Path) -> int | None:
    """Snapshot ``name`` into ``target``; the points it holds, or None when the collection went away.

    The snapshot is opaque, so its points are counted before and after it: a run writing to the
    collection meanwhile makes the counts differ, and the snapshot is taken again (the restore
    checks the restored count against this one).
    """
    for _ in range(SNAPSHOT_ATTEMPTS):
        try:
            before = server.count(name)
            server.download_snapshot(name, target)
            after = server.count(name)
        except ServerAnswer as exc:
            if exc.status == 404 and name not in server.collections():
                target.unlink(missing_ok=True)
                return None  # deleted since it was listed (a pruned blue-green version)
            raise
        if before == after:
            return after
    raise BackupError(
        f"collection {name} kept changing while it was snapshotted ({SNAPSHOT_ATTEMPTS} attempts); "
        "run the backup again when the indexing runs writing to it are done"
    )


def _server_backup(settings: Settings, target: Path, on_step: Step | None) -> tuple[dict[str, int], dict[str, str], str]:
    server = _server(settings)
    try:
        version = server.version()
        points: dict[str, int] = {}
        target.mkdir(parents=True, exist_ok=True)
        for name in server.collections():
            _say(on_step, f"snapshotting the vectors of {name}")
            count = _snapshot_collection(server, name, target.parent / _snapshot_file(name))
            if count is not None:
                points[name] = count
        aliases = {alias: name for alias, name in server.aliases().items() if name in points}
        return points, aliases, version
    finally:
        server.close()


# --- create -------------------------------------------------------------------------------------


def _backup_name(directory: Path) -> tuple[str, dt.datetime]:
    """A name no backup in ``directory`` has yet (names are per second: wait for the next one)."""
    while True:
        now = _utcnow().replace(microsecond=0)
        name = PREFIX + now.strftime(STAMP)
        if not (directory / name).exists():
            return name, now
        time.sleep(1.05 - _utcnow().microsecond / 1e6)


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


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
"""A backup holds the registry and every text indexed: readable by its owner only, whatever the umask."""


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


async def _write_backup(settings: Settings, work: Path, name: str, created_at: dt.datetime, on_step: Step | None) -> Manifest:
    registry = Registry(settings.registry_url)
    try:
        await registry.init()  # the copy then has this Citadel's schema
        _say(on_step, "copying the registry")
        if registry.dialect == "postgresql":
            await registry.engine.dispose()
            version, counts = await _dump_postgres(settings, registry, work / PG_REGISTRY)
            registry_backend = Backend(kind="postgres", location=masked_url(settings.registry_url), version=_tool_version("pg_dump"))
        else:
            await registry.engine.dispose()  # a copy made while this process holds no connection
            await asyncio.to_thread(copy_sqlite, sqlite_path(settings.registry_url), work / SQLITE_REGISTRY)
            version, counts = _sqlite_counts(work / SQLITE_REGISTRY)
            registry_backend = Backend(
                kind="sqlite", location=str(sqlite_path(settings.registry_url).resolve()), version=f"SQLite {sqlite3.sqlite_version}"
            )
    finally:
        await registry.aclose()
    if settings.qdrant_url:
        points, aliases, server_version = await asyncio.to_thread(_server_backup, settings, work / VECTORS, on_step)
        vectors = Backend(kind="server", location=masked_url(settings.qdrant_url), version=server_version)
    else:
        points, aliases = await asyncio.to_thread(_copy_embedded, settings.qdrant_path, work / VECTORS, on_step)
        vectors = Backend(kind="embedded", location=str(settings.qdrant_path.resolve()), version=_qdrant_client_version())
    for collection, count in points.items():
        counts.setdefault(collection, CollectionCounts(name=collection)).points = count
    (work / CONFIG).write_text(json.dumps(_config(settings), indent=2) + "\n", encoding="utf-8")
    _say(on_step, "computing checksums")
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


async def _dump_postgres(settings: Settings, registry: Registry, target: Path) -> tuple[int, dict[str, CollectionCounts]]:
    """``pg_dump`` of the ``citadel_*`` tables, and their counts from the very snapshot it dumps
    (exported from a repeatable-read transaction held open while pg_dump runs)."""
    tool = _pg_tool("pg_dump")
    env, database = libpq_env(settings.registry_url)
    async with registry.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            snapshot = (await conn.execute(sa.text("SELECT pg_export_snapshot()"))).scalar_one()
            version, counts = await conn.run_sync(_registry_counts)
            args = [tool, "--format=custom", "--no-password", f"--snapshot={snapshot}", "--table=citadel_*", f"--file={target}", database]
            await asyncio.to_thread(_run_tool, args, env)
    return version, counts


# --- list and prune -----------------------------------------------------------------------------


def read_manifest(path: Path) -> Manifest:
    """The manifest of the backup at ``path``; a BackupError saying why it is not a complete backup."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BackupError(f"{path} is not a backup folder")
    if not manifest_path.is_file():
        raise BackupError(f"{path} has no {MANIFEST}: it is not a complete backup (an interrupted backup never gets one)")
    try:
        return Manifest.model_validate_json(manifest_path.read_bytes())
    except (OSError, ValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise BackupError(f"{manifest_path}: not a readable backup manifest ({reason})") from exc


def complete_backups(directory: Path) -> list[tuple[Path, Manifest]]:
    """The complete backups in ``directory``, newest first (folders named as a backup with a
    readable manifest; interrupted ones, hidden while they were written, are never listed)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if not NAME.fullmatch(path.name) or not path.is_dir():
            continue
        try:
            found.append((path, read_manifest(path)))
        except BackupError:
            continue
    return sorted(found, key=lambda item: item[0].name, reverse=True)


def list_backups(directory: Path) -> list[BackupSummary]:
    return [BackupSummary.of(path, manifest) for path, manifest in complete_backups(directory)]


def backup_time(name: str) -> dt.datetime:
    """The UTC time in a backup's name."""
    match = NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a backup name ({PREFIX}yyyymmddThhmmssZ)")
    return dt.datetime.strptime(match.group(1), STAMP).replace(tzinfo=dt.UTC)


def retained(times: Sequence[dt.datetime], keep_daily: int, keep_weekly: int) -> set[dt.datetime]:
    """Which of ``times`` the retention keeps: the newest of each of the last ``keep_daily`` days
    and of each of the last ``keep_weekly`` ISO weeks that have a backup, and always the newest.

    Days and weeks without a backup do not count, so a timer that stopped for a while never lets
    the retention delete the last backups there are.
    """
    def day(moment: dt.datetime) -> object:
        return moment.date()

    def week(moment: dt.datetime) -> object:
        return moment.isocalendar()[:2]

    newest_first = sorted(times, reverse=True)
    keep = set(newest_first[:1])
    for limit, period in ((keep_daily, day), (keep_weekly, week)):
        seen: set[object] = set()
        for moment in newest_first:
            key = period(moment)
            if key in seen:
                continue
            if len(seen) >= limit:
                break
            seen.add(key)
            keep.add(moment)
    return keep


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and everything under it."""
    newest = path.lstat().st_mtime
    for child in path.rglob("*"):
        try:
            newest = max(newest, child.lstat().st_mtime)
        except OSError:
            continue  # deleted meanwhile
    return newest


def remove_leftovers(directory: Path, older_than_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Delete the hidden folders killed backups and prunes left in ``directory`` once nothing in
    them changed for ``older_than_s`` (a day): a younger one may be a backup still being written."""
    if not directory.is_dir():
        return []
    removed = []
    now = time.time()
    for path in sorted(directory.iterdir()):
        if not LEFTOVER.fullmatch(path.name) or not path.is_dir() or path.is_symlink():
            continue
        if now - _last_change(path) < older_than_s:
            continue
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise BackupError(f"cannot delete {path}, left by an interrupted backup ({exc.strerror}); delete it by hand") from exc
        removed.append(path.name)
    return removed


def prune_backups(directory: Path, keep_daily: int, keep_weekly: int) -> PruneResult:
    """Delete the complete backups in ``directory`` that the retention does not keep, and the
    folders of interrupted backups that have not changed for a day."""
    if keep_daily < 0 or keep_weekly < 0:
        raise ConfigurationError("--keep-daily and --keep-weekly count backups to keep: give 0 or more")
    backups = {backup_time(path.name): path for path, _ in complete_backups(directory)}
    keep = retained(list(backups), keep_daily, keep_weekly)
    deleted = []
    for moment in sorted(backups, reverse=True):
        if moment in keep:
            continue
        path = backups[moment]
        # Renamed first, so a prune killed halfway leaves no half-deleted folder that looks complete.
        doomed = path.with_name(f".{path.name}.deleting-{uuid.uuid4().hex[:8]}")
        path.rename(doomed)
        shutil.rmtree(doomed)
        deleted.append(path.name)
    deleted += remove_leftovers(directory)
    return PruneResult(kept=[backups[m].name for m in sorted(keep, reverse=True)], deleted=deleted)


# --- verify -------------------------------------------------------------------------------------


def resolve_backup(path: Path, settings: Settings | None = None) -> Path:
    """``path`` as given, or a backup of that name in the backup folder."""
    if not path.exists() and settings is not None and len(path.parts) == 1 and (settings.backup_dir / path).exists():
        return settings.backup_dir / path
    return path


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
    counts = {c.name: c for c in manifest.collections}
    for relative in sorted(sound):
        file = path / relative
        if relative.endswith(".sqlite") and (problem := sqlite_problem(file)):
            problems.append(f"{relative}: {problem}")
            continue
        if relative == SQLITE_REGISTRY:
            version, found = _sqlite_counts(file)
            problems += _count_problems(relative, counts, found, ("documents", "chunks"))
            if version != manifest.schema_version:
                problems.append(f"{relative}: schema version {version}, the manifest says {manifest.schema_version}")
        elif relative == PG_REGISTRY:
            try:
                listing = _run_tool([_pg_tool("pg_restore"), "--list", str(file)])
            except BackupError as exc:
                problems.append(f"{relative}: {exc}")
            else:
                if "TABLE DATA public citadel_documents" not in listing:
                    problems.append(f"{relative}: the dump holds no data of citadel_documents")
        elif relative.startswith(f"{VECTORS}/") and relative.endswith(".snapshot") and not tarfile.is_tarfile(file):
            problems.append(f"{relative}: not a tar archive, as every Qdrant snapshot is")
        elif relative.startswith(f"{VECTORS}/collection/") and relative.endswith("/storage.sqlite"):
            name = relative.removeprefix(f"{VECTORS}/collection/").removesuffix("/storage.sqlite")
            expected = counts[name].points if name in counts else None
            try:
                points: int | None = _store_points(file)
            except sqlite3.Error as exc:
                points = None
                problems.append(f"{relative}: not a collection's storage ({exc})")
                continue
            if points != expected:
                problems.append(f"{relative}: {points} points, the manifest says {expected}")
    return VerifyReport(
        path=str(path), ok=not problems, files_checked=len(manifest.files), problems=problems,
        backup=BackupSummary.of(path, manifest),
    )


def _count_problems(relative: str, expected: Mapping[str, CollectionCounts], found: Mapping[str, CollectionCounts],
                    fields: Sequence[str]) -> list[str]:
    problems = []
    for name in sorted(set(expected) | set(found)):
        for field in fields:
            want = getattr(expected[name], field) if name in expected else 0
            got = getattr(found[name], field) if name in found else 0
            if want != got:
                problems.append(f"{relative}: collection {name} has {got} {field}, the manifest says {want}")
    return problems


# --- restore ------------------------------------------------------------------------------------


def _close_own_embedded_clients() -> None:
    """This process's embedded-store clients keep every point in memory: close them before the
    files under them are replaced (a later open reads the restored files)."""
    vectorstore = sys.modules.get("citadel.store.vectorstore")
    if vectorstore is not None:
        close: Callable[[], None] = vectorstore.close_local_clients
        close()


async def _target_state(settings: Settings, embedded: bool) -> tuple[int, int, list[str]]:
    """(documents in the target registry, points in the target store, live runs writing to it)."""
    from citadel.registry import mark_crashed_runs

    documents_count = 0
    running: list[str] = []
    postgres = sa.engine.make_url(settings.registry_url).get_backend_name() == "postgresql"
    if postgres or sqlite_path(settings.registry_url).exists():
        registry = Registry(settings.registry_url)
        try:
            await registry.init()
            await mark_crashed_runs(registry)
            async with registry.engine.connect() as conn:
                documents_count = int((await conn.execute(sa.select(sa.func.count()).select_from(documents))).scalar_one())
            running = [run.id for run in await registry.recent_runs(limit=1000) if run.status == "running"]
        finally:
            await registry.aclose()
    if embedded:
        points = sum(_embedded_points(settings.qdrant_path).values())
    else:
        server = _server(settings)
        try:
            points = sum(server.count(name) for name in server.collections())
        finally:
            server.close()
    return documents_count, points, running


async def restore_backup(settings: Settings, path: Path, *, force: bool = False, on_step: Step | None = None) -> RestoreResult:
    """Restore a verified backup into the configured registry and vector store.

    The target must be empty (no documents, no points) unless ``force``; never while a run writes
    to it or another process holds the embedded store. An older registry schema is brought up to
    date by the usual upgrade; a newer one than this Citadel knows is refused.
    """
    started = time.perf_counter()
    _say(on_step, "verifying the backup")
    report = verify_backup(path)
    if not report.ok:
        raise BackupError(f"{path} does not verify, nothing restored: {'; '.join(report.problems)}")
    manifest = read_manifest(path)
    if manifest.schema_version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the backup's registry schema is version {manifest.schema_version}, newer than this Citadel knows "
            f"({SCHEMA_VERSION}); restore it with Citadel {manifest.citadel_version} or later"
        )
    postgres = sa.engine.make_url(settings.registry_url).get_backend_name() == "postgresql"
    want_registry = "postgres" if postgres else "sqlite"
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
    embedded = want_vectors == "embedded"
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
    _say(on_step, "restoring the registry")
    if postgres:
        await asyncio.to_thread(_restore_postgres, settings, path / PG_REGISTRY)
    else:
        await asyncio.to_thread(_restore_sqlite, path / SQLITE_REGISTRY, sqlite_path(settings.registry_url))
    _say(on_step, "restoring the vectors")
    if embedded:
        await asyncio.to_thread(_restore_embedded, path, manifest, settings.qdrant_path)
    else:
        await asyncio.to_thread(_restore_server, settings, path, manifest)
    _say(on_step, "checking the restored counts")
    expected = {c.name: c for c in manifest.collections}
    restored = await _restored_counts(settings, embedded, set(expected))
    problems = _count_problems("restored", expected, restored, ("documents", "chunks", "points"))
    if problems:
        raise BackupError("the restore finished but does not match the backup: " + "; ".join(problems))
    return RestoreResult(
        name=manifest.name, path=str(path), duration_s=round(time.perf_counter() - started, 3),
        registry=manifest.registry.kind, vectors=manifest.vectors.kind, replaced=replaced,
        collections=[restored[name] for name in sorted(restored)], aliases=manifest.aliases,
    )


def _restore_sqlite(copy: Path, target: Path) -> None:
    """Put the registry copy in place of ``target``: written beside it, then renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.restoring-{uuid.uuid4().hex[:8]}")
    shutil.copyfile(copy, staging)
    # A write-ahead log left by the old database would be replayed into the new one.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(staging, target)


def _restore_postgres(settings: Settings, dump: Path) -> None:
    env, database = libpq_env(settings.registry_url)
    restore = _pg_tool("pg_restore")
    in_dump = set(re.findall(r" TABLE \S+ (citadel_\w+) ", _run_tool([restore, "--list", str(dump)])))
    _run_tool(
        [restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
         "--exit-on-error", "--no-password", f"--dbname={database}", str(dump)],
        env,
    )
    # --clean drops only the tables the dump holds. A table newer than the backup's schema would
    # keep the target's rows; dropped, it is created again by the schema upgrade that follows, and
    # filled from the restored rows where it derives from them (the run totals).
    newer = sorted(name for name in metadata.tables if name not in in_dump)
    if newer:
        drop = "DROP TABLE IF EXISTS " + ", ".join(f'"{name}"' for name in newer) + " CASCADE"
        _run_tool([_pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", f"--dbname={database}", "-c", drop], env)


def _restore_embedded(path: Path, manifest: Manifest, qdrant_path: Path) -> None:
    """Build the store folder beside the target, then swap it in (the old one deleted after)."""
    tag = uuid.uuid4().hex[:8]
    staging = qdrant_path.with_name(f".{qdrant_path.name}.restoring-{tag}")
    source = path / VECTORS
    staging.mkdir(parents=True)
    try:
        if (source / "meta.json").is_file():
            shutil.copyfile(source / "meta.json", staging / "meta.json")
        for collection in manifest.collections:
            if collection.points is None:
                continue
            copy = _collection_dir(staging, collection.name) / "storage.sqlite"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_collection_dir(source, collection.name) / "storage.sqlite", copy)
        old = qdrant_path.with_name(f".{qdrant_path.name}.replaced-{tag}")
        if qdrant_path.exists():
            qdrant_path.rename(old)
        staging.rename(qdrant_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _restore_server(settings: Settings, path: Path, manifest: Manifest) -> None:
    """Recover each collection from its snapshot, then set the aliases. Collections of the server
    that the backup does not hold are left as they are.

    A collection the server already has is deleted first: Qdrant recovers the points into an
    existing collection but keeps its own configuration (Citadel's model and dimensions among it)
    and refuses a snapshot of other vector sizes, so replacing it means recreating it.
    """
    server = _server(settings)
    try:
        existing = set(server.collections())
        for collection in manifest.collections:
            if collection.points is None:
                continue
            if collection.name in existing:
                server.delete_collection(collection.name)
            relative = _snapshot_file(collection.name)
            if relative not in manifest.files:
                raise BackupError(f"{path} lists collection {collection.name} but not its snapshot {relative}: the manifest is damaged")
            server.upload_snapshot(collection.name, path / relative, manifest.files[relative].sha256)
        server.set_aliases(manifest.aliases)
    finally:
        server.close()


async def _restored_counts(settings: Settings, embedded: bool, restored: set[str]) -> dict[str, CollectionCounts]:
    """The counts of the restored registry and store (on a server, of the restored collections only)."""
    registry = Registry(settings.registry_url)
    try:
        await registry.init()  # brings an older schema up to date
        async with registry.engine.connect() as conn:
            _, counts = await conn.run_sync(_registry_counts)
    finally:
        await registry.aclose()
    if embedded:
        points = _embedded_points(settings.qdrant_path)
    else:
        server = _server(settings)
        try:
            points = {name: server.count(name) for name in server.collections() if name in restored}
        finally:
            server.close()
    for name, count in points.items():
        counts.setdefault(name, CollectionCounts(name=name)).points = count
    return counts
