"""Qdrant vector store: a server by URL, or embedded mode in a folder (the default).

Collections are created with the embedder's size and model recorded in their metadata; a
collection of another size or model is refused before anything is written. Writes go in
batches with deterministic ids, so retrying them never duplicates a point.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import gc
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from citadel import metrics
from citadel.errors import CollectionMismatchError, ConfigurationError
from citadel.models import SearchHit
from citadel.storeprobe import embedded_store_holder, store_in_use

log = logging.getLogger(__name__)
T = TypeVar("T")
Vectors = Sequence[Sequence[float]] | np.ndarray  # one row per point

LOCAL_MODE_COMFORT = 20_000
"""Points per collection above which qdrant-client itself advises a server."""



@contextmanager
def _without_local_mode_warning() -> Iterator[None]:
    """qdrant-client warns at every open and at the first large upsert of an embedded store;
    Citadel says it once, in its own words, with the setting to change (:func:`advise_if_large`).
    The filter added is that one warning's: if threads interleave, at worst it outlives the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
        yield

# Embedded mode locks its folder to one client per process, so clients are shared by path.
_LOCAL_CLIENTS: dict[str, QdrantClient] = {}
_LOCAL_LOCK = threading.Lock()


def local_client(path: Path) -> QdrantClient:
    """The process-wide embedded-mode client of ``path``."""
    key = str(path.resolve())
    with _LOCAL_LOCK:
        client = _LOCAL_CLIENTS.get(key)
        if client is None:
            path.mkdir(parents=True, exist_ok=True)
            try:
                with _without_local_mode_warning(), _cyclic_gc_paused():
                    client = QdrantClient(path=key)
            except RuntimeError as exc:
                raise ConfigurationError(store_in_use(path, embedded_store_holder(path, others_only=True) or "another process")) from exc
            for collection in client.get_collections().collections:
                _reserve_rows(client, collection.name, 0)
                advise_if_large(client, key, collection.name)
            _release_freed_memory()
            _LOCAL_CLIENTS[key] = client
        return client


_advised: set[str] = set()


def advise_if_large(client: QdrantClient, key: str, name: str) -> None:
    """Once per process and store: one line of advice when an embedded collection outgrows it."""
    if key in _advised:
        return
    points = client.count(name, exact=True).count
    if points > LOCAL_MODE_COMFORT:
        _advised.add(key)
        log.warning(
            "the embedded vector store at %s holds over %s points in %s (%s); it keeps every point in memory "
            "and searches by scanning them all: point CITADEL_QDRANT_URL at a Qdrant server",
            key, f"{LOCAL_MODE_COMFORT:,}", name, f"{points:,}",
        )


@atexit.register
def close_local_clients() -> None:
    """Close every embedded-mode client; at exit, before the interpreter tears down its modules."""
    with _LOCAL_LOCK:
        for client in _LOCAL_CLIENTS.values():
            client.close()
        _LOCAL_CLIENTS.clear()


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while an embedded store loads.

    The load unpickles every point, vector as a list of Python floats; each full collection walks
    them all again (measured at 60,000 points of 768 dimensions: about 1.5 s of a 12 s open). The
    load makes no cycles, and collection resumes after it (process-wide, as gc is).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def prepare_embedded_write(client: QdrantClient, name: str, adding: int) -> None:
    """Ready an embedded collection for ``adding`` more points: its SQLite file in WAL mode and
    spare float32 rows (see :func:`_tune_embedded_storage` and :func:`_reserve_rows`)."""
    _tune_embedded_storage(client, name)
    _reserve_rows(client, name, adding)


def _reserve_rows(client: QdrantClient, name: str, adding: int) -> None:
    """Make room in an embedded collection's vector array for ``adding`` more points, as float32.

    Qdrant's embedded mode grows a full array with np.resize, which copies it and writes every new
    row (at 60,000 points of 768 dimensions: seconds, and 300 MB resident at once), and its load
    builds a float64 array (twice the memory of the float32 rows it writes) with no spare row, so
    the first point added after opening pays that copy. Here the array doubles into zeros from
    calloc, whose spare rows take no memory until written. Best effort: the attributes are
    qdrant-client's internals, and without them the store is merely slower and larger.
    """
    try:
        collection = client._client.collections[name]  # type: ignore[attr-defined]  # qdrant-client's internals
        points = len(collection.ids)
        for vector_name, rows in list(collection.vectors.items()):
            if rows.ndim != 2 or rows.shape[0] < points:
                continue  # not the layout this was written for: leave Qdrant's own growth alone
            if rows.dtype == np.float32 and rows.shape[0] > points + adding:
                continue
            grown = np.zeros((max(2 * points + 1, points + adding + 1), rows.shape[1]), dtype=np.float32)
            grown[:points] = rows[:points]
            collection.vectors[vector_name] = grown
    except (AttributeError, KeyError, TypeError):
        pass


def _release_freed_memory() -> None:
    """Hand the memory a store's load freed back to the operating system (glibc only).

    The load unpickles every point, vector as a list of Python floats, and keeps only arrays and
    payloads: at 60,000 points about 800 MB stays resident in the C heap until trimmed.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim this way


def _tune_embedded_storage(client: QdrantClient, name: str) -> None:
    """Put an embedded collection's SQLite file in WAL mode with ``synchronous=NORMAL``.

    Embedded mode commits every point on its own; with the default rollback journal each commit
    waits for the disk (measured here: about 1.1 ms a point, against 0.13 ms in WAL mode). WAL stays
    consistent when a process is killed; only an operating-system crash or power loss may lose the
    last commits (``citadel index --full`` rewrites them). Best effort: the attributes are
    qdrant-client's internals, and without them the store is merely slower.
    """
    try:
        storage = client._client.collections[name].storage  # type: ignore[attr-defined]  # qdrant-client's internals
        if storage is not None:
            storage.storage.execute("PRAGMA journal_mode=WAL")
            storage.storage.execute("PRAGMA synchronous=NORMAL")
    except (AttributeError, KeyError, TypeError):
        pass


@dataclass(frozen=True)
class Hit:
    """One point found by a search, as the store returned it."""

    id: str
    score: float
    payload: dict[str, Any]

    def to_result(self) -> SearchHit:
        """The public search hit: Citadel's payload fields lifted, the rest kept as ``payload``."""
        payload = dict(self.payload)
        return SearchHit(
            score=self.score,
            id=self.id,
            document_id=payload.pop("document_id", None),
            chunk_index=payload.pop("chunk_index", None),
            text=payload.pop("text", None),
            source=payload.pop("source", None),
            payload=payload,
        )

    def as_dict(self) -> dict[str, Any]:
        """:meth:`to_result` as JSON."""
        return self.to_result().to_json()


class VectorStore:
    """Thin, batched, async-friendly wrapper over one Qdrant client.

    The client is synchronous (embedded mode is pure Python), so every call runs in a worker
    thread and never blocks the event loop.
    """

    def __init__(self, client: QdrantClient, *, batch_size: int = 128, is_server: bool = False, path_key: str = "") -> None:
        self.client = client
        self.is_server = is_server
        self.path_key = path_key  # the embedded store's folder
        self.batch_size = batch_size
        self._checked: set[tuple[str, int, str]] = set()

    @classmethod
    def connect(cls, *, url: str | None, api_key: str | None, path: Path, batch_size: int = 128) -> VectorStore:
        if url:
            return cls(QdrantClient(url=url, api_key=api_key, timeout=60), batch_size=batch_size, is_server=True)
        return cls(local_client(path), batch_size=batch_size, path_key=str(path.resolve()))

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # collections -------------------------------------------------------------------------
    def _ensure_collection_sync(self, name: str, dimensions: int, model: str) -> None:
        if not self.client.collection_exists(name):
            try:
                self.client.create_collection(
                    name,
                    vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
                    metadata={"model": model, "dimensions": dimensions, "created_by": "citadel"},
                )
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # 409: another worker created it meanwhile; check it below
                    raise
            else:
                if self.is_server:  # embedded mode has no payload indexes; on a server they speed up filters
                    for field in ("document_id", "source"):
                        self.client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
                return
        info = self.client.get_collection(name)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        stored_model = (info.config.metadata or {}).get("model")
        if size != dimensions:
            raise CollectionMismatchError(
                f"collection {name!r} holds {size}-dimensional vectors but the embedder {model} makes "
                f"{dimensions}; use another collection (--collection) or the collection's own model"
            )
        if stored_model and stored_model != model:
            raise CollectionMismatchError(
                f"collection {name!r} was built with model {stored_model!r}, not {model!r}; "
                "vectors of different models cannot be searched together: use another collection"
            )

    async def ensure_collection(self, name: str, dimensions: int, model: str) -> None:
        """Create ``name`` if missing; refuse one of another size or model."""
        key = (name, dimensions, model)
        if key in self._checked:
            return
        await self._run(self._ensure_collection_sync, name, dimensions, model)
        if not self.is_server:
            _tune_embedded_storage(self.client, name)
        metrics.POINTS_DELETED.labels(name)  # the collection's deletes start at 0, so their rate is 0, not absent
        self._checked.add(key)

    async def collection_exists(self, name: str) -> bool:
        return await self._run(self.client.collection_exists, name)

    async def count(self, name: str) -> int:
        if not await self.collection_exists(name):
            return 0
        return (await self._run(self.client.count, name, exact=True)).count

    # points ------------------------------------------------------------------------------
    def _upsert_sync(self, name: str, ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(ids), self.batch_size):
            end = start + self.batch_size
            batch = models.Batch(
                ids=list(ids[start:end]),
                vectors=[list(map(float, v)) for v in vectors[start:end]],
                payloads=list(payloads[start:end]),
            )
            if self.is_server:
                self.client.upsert(name, points=batch, wait=True)
                continue
            _reserve_rows(self.client, name, len(batch.ids))
            with _without_local_mode_warning():
                self.client.upsert(name, points=batch, wait=True)
        if not self.is_server:
            advise_if_large(self.client, self.path_key, name)

    async def upsert(self, name: str, ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points in batches and return once the store acknowledged every batch."""
        if ids:
            await self._run(self._upsert_sync, name, ids, vectors, payloads)
            metrics.POINTS_UPSERTED.labels(name).inc(len(ids))

    def _delete_sync(self, name: str, ids: Sequence[str]) -> None:
        if not self.client.collection_exists(name):
            return
        for start in range(0, len(ids), self.batch_size * 4):
            selector = models.PointIdsList(points=list(ids[start : start + self.batch_size * 4]))
            self.client.delete(name, points_selector=selector, wait=True)

    async def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id (the registry knows them; a filter scan would be slow in embedded mode)."""
        if ids:
            await self._run(self._delete_sync, name, ids)
            metrics.POINTS_DELETED.labels(name).inc(len(ids))

    async def present(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the collection holds (nothing but the ids is read)."""
        if not ids:
            return set()
        records = await self._run(self.client.retrieve, name, ids=list(ids), with_vectors=False, with_payload=False)
        return {str(record.id) for record in records}

    def _point_ids_sync(self, name: str, page: int) -> set[str]:
        found: set[str] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(name, limit=page, offset=offset, with_payload=False, with_vectors=False)
            found.update(str(point.id) for point in points)
            if offset is None:
                return found

    async def point_ids(self, name: str, page: int = 2000) -> set[str]:
        """Every point id of a collection, scrolled a page at a time (for a full check against the registry)."""
        return await self._run(self._point_ids_sync, name, page)

    async def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by point id, for reusing them instead of embedding a moved chunk again."""
        if not ids:
            return {}
        records = await self._run(self.client.retrieve, name, ids=list(ids), with_vectors=True, with_payload=False)
        # Citadel's collections hold one unnamed dense vector per point: a list of floats.
        return {str(record.id): cast("list[float]", record.vector) for record in records if isinstance(record.vector, list)}

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int = 10,
        score_threshold: float | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Nearest points to ``vector``; ``filters`` match payload fields exactly (a list means any of)."""
        if not await self.collection_exists(name):
            raise ConfigurationError(f"collection {name!r} does not exist yet; index something into it first")
        conditions = []
        for key, value in (filters or {}).items():
            match = models.MatchAny(any=list(value)) if isinstance(value, (list, tuple)) else models.MatchValue(value=value)
            conditions.append(models.FieldCondition(key=key, match=match))
        response = await self._run(
            self.client.query_points,
            name,
            query=[float(x) for x in vector],
            limit=limit,
            score_threshold=score_threshold,
            query_filter=models.Filter(must=conditions) if conditions else None,
            with_payload=True,
        )
        return [Hit(str(point.id), float(point.score), point.payload or {}) for point in response.points]

    async def layout(self) -> tuple[set[str], dict[str, str]]:
        """Every collection's name, and every alias with the collection it stands for."""
        collections = await self._run(self.client.get_collections)
        aliases = await self._run(self.client.get_aliases)
        return {c.name for c in collections.collections}, {a.alias_name: a.collection_name for a in aliases.aliases}

    async def point_sample(self, name: str) -> Hit | None:
        """One point of a collection with its payload (for a check search), or None when it is empty."""
        points, _ = await self._run(self.client.scroll, name, limit=1, with_payload=True, with_vectors=False)
        return Hit(str(points[0].id), 1.0, points[0].payload or {}) if points else None

    async def point_alias(self, alias: str, target: str, *, replace_collection: bool = False) -> None:
        """Make ``alias`` stand for ``target`` in one atomic operation of the store (a search
        never sees the alias missing). ``replace_collection`` first deletes a plain collection that
        holds the alias's name: names are shared by collections and aliases."""
        if replace_collection and await self._run(self.client.collection_exists, alias):
            collections, _ = await self.layout()
            if alias in collections:
                await self.delete_collection(alias)
        _, aliases = await self.layout()
        operations: list[models.AliasOperations] = []
        if alias in aliases:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=target, alias_name=alias)))
        await self._run(self.client.update_collection_aliases, change_aliases_operations=operations)

    async def delete_collection(self, name: str) -> None:
        await self._run(self.client.delete_collection, name)
        self._checked = {key for key in self._checked if key[0] != name}
