"""An embedded Qdrant store's points read and written as rows of its own files, without loading it.

Opening an embedded store loads every point of every collection into memory (at 60,000 points of
768 dimensions: about 16 s and 3 GB here). An index run does not search: it writes the points of
changed chunks, deletes vanished ones, reads back a few vectors and counts, and each of those is a
row of the collection's SQLite file. The rows are written as qdrant-client's own persistence
writes them (its key encoding, a pickled ``PointStruct`` holding the vector as given and a JSON
payload), under the store's lock taken as its client takes it, so a client that opens the store
later loads them like its own. Anything that needs the loaded store (a search, aliases) closes
these rows first and loads it (:func:`citadel.store.vectorstore.local_client`).
"""

from __future__ import annotations

import base64
import fcntl
import json
import pickle
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic_core import to_jsonable_python

from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.store.probe import held_elsewhere

_IN_CLAUSE = 500  # ids per statement, well under SQLite's limit on bound parameters


@dataclass(frozen=True)
class EmbeddedCollection:
    """What an embedded store's ``meta.json`` says of one collection."""

    name: str  # the collection itself, an alias resolved
    dimensions: int | None
    model: str | None


def check_collection(name: str, dimensions: int | None, stored_model: str | None, want_dimensions: int, want_model: str) -> None:
    """Refuse a collection whose vectors are of another size or model than the embedder's."""
    if dimensions != want_dimensions:
        raise CollectionMismatchError(
            f"collection {name!r} holds {dimensions}-dimensional vectors but the embedder {want_model} makes "
            f"{want_dimensions}; use another collection (--collection) or the collection's own model"
        )
    if stored_model and stored_model != want_model:
        raise CollectionMismatchError(
            f"collection {name!r} was built with model {stored_model!r}, not {want_model!r}; "
            "vectors of different models cannot be searched together: use another collection"
        )


class EmbeddedRows:
    """One embedded store's collections as SQLite rows, held under the store's lock until closed."""

    def __init__(self, path: Path, lock: Any, encode_key: Any, point_type: Any, normalize_id: Any) -> None:
        self.path = path
        self._lock = lock
        self._encode_key = encode_key
        self._point_type = point_type
        self._normalize_id = normalize_id
        self._databases: dict[str, sqlite3.Connection] = {}
        self._meta: dict[str, Any] | None = None

    @classmethod
    def open(cls, path: Path) -> EmbeddedRows | None:
        """The rows of the store at ``path``, its lock taken; None when this qdrant-client keeps its
        points another way or the store does not exist yet (its own client then opens it)."""
        try:
            from qdrant_client.http.models import PointStruct
            from qdrant_client.local.persistence import STORAGE_FILE_NAME, CollectionPersistence
            from qdrant_client.local.utils import normalize_point_id
        except ImportError:
            return None
        if STORAGE_FILE_NAME != "storage.sqlite" or not (path / "meta.json").is_file():
            return None
        lock_path = path / ".lock"
        if not lock_path.exists():
            lock_path.write_text("tmp lock file")
        lock = open(lock_path, "r+")  # noqa: SIM115  # held until close(), as the store's own client holds it
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise held_elsewhere(path) from None
        return cls(path, lock, CollectionPersistence.encode_key, PointStruct, normalize_point_id)

    def close(self) -> None:
        """Close the collections' files and let the store go."""
        for database in self._databases.values():
            database.close()
        self._databases.clear()
        self._meta = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    # collections -------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any]:
        if self._meta is None:  # only this process changes it while the lock is held
            meta_path = self.path / "meta.json"
            try:
                self._meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"the embedded vector store's {meta_path} is unreadable ({exc}); restore it from a backup"
                ) from exc
        return self._meta

    def collection(self, name: str) -> EmbeddedCollection | None:
        """The collection ``name`` stands for (itself or the one its alias names), or None."""
        meta = self._read_meta()
        real = meta.get("aliases", {}).get(name, name)
        config = meta.get("collections", {}).get(real)
        if config is None:
            return None
        vectors = config.get("vectors") or {}
        size = vectors.get("size") if isinstance(vectors, dict) else None
        return EmbeddedCollection(real, size if isinstance(size, int) else None, (config.get("metadata") or {}).get("model"))

    def _database(self, name: str) -> sqlite3.Connection | None:
        found = self.collection(name)
        if found is None:
            return None
        database = self._databases.get(found.name)
        if database is None:
            base = (self.path / "collection").resolve()
            folder = (base / found.name).resolve()
            if base not in folder.parents:  # names come from meta.json: stay inside the store
                raise ConfigurationError(f"collection name {found.name!r} points outside the embedded store at {self.path}")
            folder.mkdir(parents=True, exist_ok=True)
            # Calls come from worker threads one at a time (the caller holds the store's lock).
            database = sqlite3.connect(str(folder / "storage.sqlite"), check_same_thread=False)
            # Embedded mode's own client sets nothing: WAL commits without waiting on the disk for
            # every write and stays consistent when a process is killed.
            database.execute("PRAGMA journal_mode=WAL")
            database.execute("PRAGMA synchronous=NORMAL")
            database.execute("CREATE TABLE IF NOT EXISTS points (id TEXT PRIMARY KEY, point BLOB)")
            database.commit()
            self._databases[found.name] = database
        return database

    # points ------------------------------------------------------------------------------
    def _keys(self, ids: Sequence[str]) -> dict[str, str]:
        """Storage key -> point id, ids normalised as the store's client normalises them."""
        keys: dict[str, str] = {}
        for pid in ids:
            normal = self._normalize_id(pid)
            keys[self._encode_key(normal)] = str(normal)
        return keys

    def _in_chunks(self, keys: Sequence[str]) -> Iterator[tuple[str, Sequence[str]]]:
        for start in range(0, len(keys), _IN_CLAUSE):
            part = keys[start : start + _IN_CLAUSE]
            yield ",".join("?" * len(part)), part

    def count(self, name: str) -> int:
        database = self._database(name)
        return 0 if database is None else int(database.execute("SELECT count(*) FROM points").fetchone()[0])

    def upsert(
        self, name: str, ids: Sequence[str], vectors: Sequence[Sequence[float]] | np.ndarray, payloads: Sequence[dict[str, Any]]
    ) -> None:
        """Write points in one transaction: all of them or, if it fails, none."""
        found = self.collection(name)
        database = self._database(name)
        if found is None or database is None:
            raise ConfigurationError(f"collection {name!r} does not exist in the embedded store at {self.path}")
        rows = []
        for pid, vector, payload in zip(ids, vectors, payloads, strict=True):
            values: list[float] = np.asarray(vector, dtype=np.float64).tolist()  # exact for float32 rows too
            if found.dimensions is not None and len(values) != found.dimensions:
                raise CollectionMismatchError(
                    f"a vector of {len(values)} dimensions cannot go into {found.name!r}, which holds {found.dimensions}"
                )
            normal = self._normalize_id(pid)
            point = self._point_type.model_construct(id=normal, vector={"": values}, payload=to_jsonable_python(payload))
            rows.append((self._encode_key(normal), sqlite3.Binary(pickle.dumps(point))))
        with database:
            database.executemany("INSERT OR REPLACE INTO points VALUES (?, ?)", rows)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        database = self._database(name)
        if database is None:
            return
        with database:
            for marks, part in self._in_chunks(list(self._keys(ids))):
                database.execute(f"DELETE FROM points WHERE id IN ({marks})", part)

    def present(self, name: str, ids: Sequence[str]) -> set[str]:
        database = self._database(name)
        if database is None:
            return set()
        keys = self._keys(ids)
        found: set[str] = set()
        for marks, part in self._in_chunks(list(keys)):
            found.update(keys[key] for (key,) in database.execute(f"SELECT id FROM points WHERE id IN ({marks})", part))
        return found

    def ids(self, name: str) -> set[str]:
        """Every point id of a collection, from the keys alone (each key is the id, pickled)."""
        database = self._database(name)
        if database is None:
            return set()
        found: set[str] = set()
        for (key,) in database.execute("SELECT id FROM points"):
            found.add(str(self._normalize_id(pickle.loads(base64.b64decode(key)))))  # noqa: S301  # the store's own keys
        return found

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by point id (as written: the store normalises them only when it loads)."""
        database = self._database(name)
        if database is None:
            return {}
        keys = self._keys(ids)
        found: dict[str, list[float]] = {}
        for marks, part in self._in_chunks(list(keys)):
            for key, blob in database.execute(f"SELECT id, point FROM points WHERE id IN ({marks})", part):
                vector = pickle.loads(blob).vector  # noqa: S301  # the store's own rows, as its client reads them
                if isinstance(vector, dict):
                    vector = vector.get("")
                if isinstance(vector, list):
                    found[keys[key]] = vector
        return found

