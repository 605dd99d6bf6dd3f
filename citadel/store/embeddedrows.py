"""An embedded Qdrant store's points read and written as rows of its own files, without loading it.

Opening an embedded store loads every point of every collection into memory (at 60,000 points of
768 dimensions: about 16 s and 3 GB here). An index run does not search: it writes the points of
changed chunks, deletes vanished ones, reads back a few vectors and counts, and each of those is a
row of the collection's SQLite file. The rows are written as qdrant-client's own persistence
writes them (its key encoding, a pickled ``PointStruct`` holding the vector as given and a JSON
payload; :mod:`citadel.store.embeddedlayout` knows the files), under the store's lock taken as its
client takes it, so a client that opens the store later loads them like its own. Anything that
needs the loaded store (a search, aliases) closes these rows first and loads it
(:func:`citadel.store.localclients.local_client`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic_core import to_jsonable_python

import citadel.store.embeddedlayout as layout
from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.store.embeddedlayout import EmbeddedCollection, EmbeddedMeta
from citadel.store.lexical import LEXICAL_VECTOR, lexical_point
from citadel.store.probe import held_elsewhere

__all__ = ["EmbeddedCollection", "EmbeddedRows", "check_collection"]


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

    def __init__(self, path: Path, lock: IO[str], points: layout.ClientPoints) -> None:
        self.path = path
        self._lock = lock
        self._point_type = points.point_type
        self._normalize_id = points.normalize_id
        self._databases: dict[str, sqlite3.Connection] = {}
        self._meta: EmbeddedMeta | None = None

    @classmethod
    def open(cls, path: Path) -> EmbeddedRows | None:
        """The rows of the store at ``path``, its lock taken; None when this qdrant-client keeps its
        points another way or the store does not exist yet (its own client then opens it)."""
        points = layout.client_points()
        if points is None or not layout.meta_file(path).is_file():
            return None
        lock_path = layout.lock_file(path)
        if not lock_path.exists():
            lock_path.write_text(layout.EMBEDDED_LOCK_TEXT)
        lock = open(lock_path, "r+")  # noqa: SIM115  # held until close(), as the store's own client holds it
        if not layout.try_lock(lock):
            lock.close()
            raise held_elsewhere(path) from None
        return cls(path, lock, points)

    def close(self) -> None:
        """Close the collections' files and let the store go."""
        for database in self._databases.values():
            database.close()
        self._databases.clear()
        self._meta = None
        if not self._lock.closed:
            layout.unlock(self._lock)
            self._lock.close()

    # collections -------------------------------------------------------------------------
    def _read_meta(self) -> EmbeddedMeta:
        if self._meta is None:  # only this process changes it while the lock is held
            try:
                self._meta = layout.read_embedded_meta(self.path)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"the embedded vector store's {layout.meta_file(self.path)} is unreadable ({exc}); restore it from a backup"
                ) from exc
            if self._meta is None:
                raise ConfigurationError(
                    f"the embedded vector store's {layout.meta_file(self.path)} is unreadable (it is missing); restore it from a backup"
                )
        return self._meta

    def collection(self, name: str) -> EmbeddedCollection | None:
        """The collection ``name`` stands for (itself or the one its alias names), or None."""
        return self._read_meta().collection(name)

    def _database(self, name: str) -> sqlite3.Connection | None:
        found = self.collection(name)
        if found is None:
            return None
        database = self._databases.get(found.name)
        if database is None:
            storage = layout.embedded_storage_file(self.path, found.name)
            if storage is None:
                raise ConfigurationError(f"collection name {found.name!r} points outside the embedded store at {self.path}")
            database = layout.open_for_writes(storage)
            self._databases[found.name] = database
        return database

    # points ------------------------------------------------------------------------------
    def _keys(self, ids: Sequence[str]) -> dict[str, str]:
        """Storage key -> point id, ids normalised as the store's client normalises them."""
        keys: dict[str, str] = {}
        for pid in ids:
            normal = self._normalize_id(pid)
            keys[layout.storage_key(normal)] = str(normal)
        return keys

    def count(self, name: str) -> int:
        database = self._database(name)
        return 0 if database is None else layout.count_rows(database)

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
            vector_of: dict[str, Any] = {"": values}
            if LEXICAL_VECTOR in found.sparse_vectors:
                vector_of[LEXICAL_VECTOR] = lexical_point(payload)
            point = self._point_type.model_construct(id=normal, vector=vector_of, payload=to_jsonable_python(payload))
            rows.append(layout.point_row(layout.storage_key(normal), point))
        layout.write_rows(database, rows)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        database = self._database(name)
        if database is not None:
            layout.delete_keys(database, list(self._keys(ids)))

    def present(self, name: str, ids: Sequence[str]) -> set[str]:
        database = self._database(name)
        if database is None:
            return set()
        keys = self._keys(ids)
        return {keys[key] for key in layout.present_keys(database, list(keys))}

    def ids(self, name: str) -> set[str]:
        """Every point id of a collection, from the keys alone (each key is the id, pickled)."""
        database = self._database(name)
        if database is None:
            return set()
        return {str(self._normalize_id(layout.key_id(key))) for key in layout.all_keys(database)}

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by point id (as written: the store normalises them only when it loads)."""
        database = self._database(name)
        if database is None:
            return {}
        keys = self._keys(ids)
        found: dict[str, list[float]] = {}
        for key, blob in layout.point_rows(database, list(keys)):
            vector = layout.point_of(blob).vector
            if isinstance(vector, dict):
                vector = vector.get("")
            if isinstance(vector, list):
                found[keys[key]] = vector
        return found
