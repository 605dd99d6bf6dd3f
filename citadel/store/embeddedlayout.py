"""The embedded store's folder as qdrant-client's local mode lays it out, known here and nowhere else.

::

    <store>/.lock                               flock'ed (exclusive) by the one client holding the store
    <store>/meta.json                           {"collections": {name: config}, "aliases": {alias: name}, ...}
    <store>/collection/<name>/storage.sqlite    table points (id TEXT PRIMARY KEY, point BLOB)

A point's row key is its id pickled (protocol 4) in base64, the row a pickled ``PointStruct``. The
probe, the rows writer and the backups read these files without opening the store (which loads every
point); ``tests/core/test_embeddedrows.py`` checks this against the installed qdrant-client.
"""

from __future__ import annotations

import base64
import fcntl
import json
import pickle
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

EMBEDDED_META_FILE = "meta.json"
EMBEDDED_LOCK_FILE = ".lock"
EMBEDDED_LOCK_TEXT = "tmp lock file"  # what qdrant-client writes into a lock file it creates
EMBEDDED_COLLECTIONS_DIR = "collection"
EMBEDDED_STORAGE_FILE = "storage.sqlite"
POINTS_TABLE = "points"
KEY_PICKLE_PROTOCOL = 4
_IN_CLAUSE = 500  # ids per statement, well under SQLite's limit on bound parameters


@dataclass(frozen=True)
class EmbeddedCollection:
    """What an embedded store's ``meta.json`` says of one collection."""

    name: str  # the collection itself, an alias resolved
    dimensions: int | None
    model: str | None
    sparse_vectors: tuple[str, ...] = ()  # names of its sparse vectors


class MetaError(ValueError):
    """``meta.json`` is not the store's list of collections."""


@dataclass(frozen=True)
class EmbeddedMeta:
    """An embedded store's ``meta.json``: its collections (name -> config) and aliases (alias -> name)."""

    collections: dict[str, Any]
    aliases: dict[str, str]
    raw: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> EmbeddedMeta:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("collections"), dict):
            raise MetaError("collections is not a mapping")
        aliases = raw.get("aliases", {})
        if not isinstance(aliases, dict):
            raise MetaError("aliases is not a mapping")
        return cls(raw["collections"], aliases, raw)

    def collection(self, name: str) -> EmbeddedCollection | None:
        """The collection ``name`` stands for (itself or the one its alias names), or None."""
        real = self.aliases.get(name, name)
        config = self.collections.get(real)
        if config is None:
            return None
        vectors = config.get("vectors") or {}
        size = vectors.get("size") if isinstance(vectors, dict) else None
        sparse = config.get("sparse_vectors") or {}
        return EmbeddedCollection(
            real, size if isinstance(size, int) else None, (config.get("metadata") or {}).get("model"),
            tuple(sparse) if isinstance(sparse, dict) else (),
        )

    def keeping(self, names: Collection[str]) -> dict[str, Any]:
        """This ``meta.json`` holding only the collections ``names`` (and their aliases and text indexes)."""
        kept = {name: config for name, config in self.collections.items() if name in names}
        aliases = {str(alias): str(name) for alias, name in self.aliases.items() if name in kept}
        text_indexes = {name: value for name, value in self.raw.get("text_indexes", {}).items() if name in kept}
        return {**self.raw, "collections": kept, "aliases": aliases, "text_indexes": text_indexes}


def meta_file(root: Path) -> Path:
    return root / EMBEDDED_META_FILE


def lock_file(root: Path) -> Path:
    return root / EMBEDDED_LOCK_FILE


def read_embedded_meta(root: Path) -> EmbeddedMeta | None:
    """The ``meta.json`` of the store at ``root``; None when it has none (no store there yet).
    OSError or ValueError when it cannot be read as the store's list of collections. qdrant-client
    replaces it whole (written beside it, then renamed), so one read is consistent."""
    path = meta_file(root)
    if not path.exists():
        return None
    return EmbeddedMeta.parse(path.read_text(encoding="utf-8"))


def collection_dir(root: Path, name: str) -> Path | None:
    """``root/collection/<name>``, or None when the name leads outside it (names come from meta.json)."""
    base = (root / EMBEDDED_COLLECTIONS_DIR).resolve()
    if base not in (base / name).resolve().parents:
        return None
    return root / EMBEDDED_COLLECTIONS_DIR / name


def embedded_storage_file(root: Path, name: str) -> Path | None:
    """The SQLite file of collection ``name`` (None for a name leading outside the store)."""
    folder = collection_dir(root, name)
    return None if folder is None else folder / EMBEDDED_STORAGE_FILE


def try_lock(handle: IO[str]) -> bool:
    """Take the store's lock file as qdrant-client takes it (an exclusive ``flock``), without waiting."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(handle: IO[str]) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)


# the points table -------------------------------------------------------------------------


def storage_key(point_id: object) -> str:
    """How a point's (normalised) id keys its row."""
    return base64.b64encode(pickle.dumps(point_id, protocol=KEY_PICKLE_PROTOCOL)).decode("utf-8")


def key_id(key: str) -> Any:
    """The point id a row key holds."""
    return pickle.loads(base64.b64decode(key))  # noqa: S301  # the store's own keys


def point_of(blob: bytes) -> Any:
    """The ``PointStruct`` a row holds."""
    return pickle.loads(blob)  # noqa: S301  # the store's own rows, as its client reads them


def point_row(key: str, point: object) -> tuple[str, sqlite3.Binary]:
    """The row of a point (as qdrant-client's persistence writes it)."""
    return key, sqlite3.Binary(pickle.dumps(point))


def open_read_only(storage: Path, timeout_s: float = 30) -> sqlite3.Connection:
    return sqlite3.connect(f"{storage.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s)


def open_for_writes(storage: Path) -> sqlite3.Connection:
    """A collection's SQLite file for the rows writer (its folder and table made when missing)."""
    storage.parent.mkdir(parents=True, exist_ok=True)
    # Calls come from worker threads one at a time (the caller holds the store's lock).
    database = sqlite3.connect(str(storage), check_same_thread=False)
    # Embedded mode's own client sets nothing: WAL commits without waiting on the disk for every
    # write and stays consistent when a process is killed.
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=NORMAL")
    database.execute(f"CREATE TABLE IF NOT EXISTS {POINTS_TABLE} (id TEXT PRIMARY KEY, point BLOB)")
    database.commit()
    return database


def count_rows(database: sqlite3.Connection) -> int:
    return int(database.execute(f"SELECT count(*) FROM {POINTS_TABLE}").fetchone()[0])


def stored_points(storage: Path, timeout_s: float = 30) -> int:
    """Points in an embedded collection's SQLite file (one row a point), read-only."""
    database = open_read_only(storage, timeout_s)
    try:
        return count_rows(database)
    finally:
        database.close()


def _in_parts(keys: Sequence[str]) -> Iterator[tuple[str, Sequence[str]]]:
    for start in range(0, len(keys), _IN_CLAUSE):
        part = keys[start : start + _IN_CLAUSE]
        yield ",".join("?" * len(part)), part


def present_keys(database: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` have a row."""
    found: set[str] = set()
    for marks, part in _in_parts(keys):
        found.update(key for (key,) in database.execute(f"SELECT id FROM {POINTS_TABLE} WHERE id IN ({marks})", part))
    return found


def all_keys(database: sqlite3.Connection) -> Iterator[str]:
    for (key,) in database.execute(f"SELECT id FROM {POINTS_TABLE}"):
        yield key


def point_rows(database: sqlite3.Connection, keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(key, row) of the points of ``keys`` that have a row."""
    for marks, part in _in_parts(keys):
        yield from database.execute(f"SELECT id, point FROM {POINTS_TABLE} WHERE id IN ({marks})", part)


def write_rows(database: sqlite3.Connection, rows: Sequence[tuple[str, sqlite3.Binary]]) -> None:
    """Write rows in one transaction: all of them or, if it fails, none."""
    with database:
        database.executemany(f"INSERT OR REPLACE INTO {POINTS_TABLE} VALUES (?, ?)", rows)


def delete_keys(database: sqlite3.Connection, keys: Sequence[str]) -> None:
    with database:
        for marks, part in _in_parts(keys):
            database.execute(f"DELETE FROM {POINTS_TABLE} WHERE id IN ({marks})", part)


@dataclass(frozen=True)
class ClientPoints:
    """qdrant-client's own point type and id normalisation, for rows it will load as its own."""

    point_type: Any
    normalize_id: Callable[[Any], Any]


def client_points() -> ClientPoints | None:
    """qdrant-client's point type and id normalisation; None when it is not installed or keeps its
    points in another file or under other keys than this module knows (its own client then opens the store)."""
    try:
        from qdrant_client.http.models import PointStruct
        from qdrant_client.local.persistence import STORAGE_FILE_NAME, CollectionPersistence
        from qdrant_client.local.utils import normalize_point_id
    except ImportError:
        return None
    sample = normalize_point_id("00000000-0000-0000-0000-000000000001")
    if STORAGE_FILE_NAME != EMBEDDED_STORAGE_FILE or CollectionPersistence.encode_key(sample) != storage_key(sample):
        return None
    return ClientPoints(PointStruct, normalize_point_id)
