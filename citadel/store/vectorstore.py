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
import math
import re
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
from citadel.errors import ConfigurationError
from citadel.models import SearchHit
from citadel.store.embeddedrows import EmbeddedRows, check_collection
from citadel.store.probe import held_elsewhere

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

# Embedded mode locks its folder to one client per process, so clients are shared by path: the
# loaded store, or (until something needs it loaded) its rows. The lock is held through every use
# of the rows, so that loading the store never closes them under a write.
_LOCAL_CLIENTS: dict[str, QdrantClient] = {}
_LOCAL_ROWS: dict[str, EmbeddedRows] = {}
_LOCAL_LOCK = threading.RLock()


def local_client(path: Path) -> QdrantClient:
    """The process-wide embedded-mode client of ``path``, its points loaded (its rows closed first)."""
    key = str(path.resolve())
    with _LOCAL_LOCK:
        client = _LOCAL_CLIENTS.get(key)
        if client is None:
            rows = _LOCAL_ROWS.pop(key, None)
            if rows is not None:
                rows.close()
            client = _open_client(path)
            for collection in client.get_collections().collections:
                _reserve_rows(client, collection.name, 0)
                advise_if_large(key, collection.name, lambda name: client.count(name, exact=True).count)
            _release_freed_memory()
            _LOCAL_CLIENTS[key] = client
        return client


def _open_client(path: Path) -> QdrantClient:
    """A new embedded-mode client of ``path``: every point of the store loaded into memory."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        with _without_local_mode_warning(), _cyclic_gc_paused():
            return QdrantClient(path=str(path.resolve()))
    except RuntimeError as exc:
        raise held_elsewhere(path) from exc


@contextmanager
def embedded_rows(path: Path) -> Iterator[EmbeddedRows | None]:
    """The rows of the embedded store at ``path`` while the block runs, or None when this process
    has the store loaded (its client is then the one to use) or its rows cannot be written here."""
    key = str(path.resolve())
    with _LOCAL_LOCK:
        if key in _LOCAL_CLIENTS:
            yield None
            return
        rows = _LOCAL_ROWS.get(key)
        if rows is None:
            if not (path / "meta.json").exists():
                _open_client(path).close()  # a new store: its own client lays out its files
            rows = EmbeddedRows.open(Path(key))
            if rows is not None:
                _LOCAL_ROWS[key] = rows
        yield rows


def _create_collection(client: QdrantClient, name: str, dimensions: int, model: str) -> None:
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
        metadata={"model": model, "dimensions": dimensions, "created_by": "citadel"},
    )


def _create_unloaded(path: Path, name: str, dimensions: int, model: str) -> None:
    """Create a collection in an embedded store this process has not loaded, by the store's own
    client, let go at once: its rows are written without it."""
    key = str(path.resolve())
    with _LOCAL_LOCK:
        rows = _LOCAL_ROWS.pop(key, None)
        if rows is not None:
            rows.close()
        client = _open_client(path)
        try:
            if not client.collection_exists(name):
                _create_collection(client, name, dimensions, model)
        finally:
            client.close()
            _release_freed_memory()  # the other collections it loaded


_advised: set[str] = set()


def advise_if_large(key: str, name: str, count: Callable[[str], int]) -> None:
    """Once per process and store: one line of advice when an embedded collection outgrows it."""
    if key in _advised:
        return
    points = count(name)
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
        for rows in _LOCAL_ROWS.values():
            rows.close()
        _LOCAL_ROWS.clear()


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


# Ids in one delete request to a server: about 160 KB of JSON, far below Qdrant's 32 MB limit on a
# request, so an edited corpus's thousands of vanished points take one or two round trips.
IDS_PER_DELETE = 4096


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


# A payload field as Qdrant addresses it: names (letters, digits, '_', '-') joined by dots, each
# optionally followed by '[]' for "any element of this array" (``cities[].name``, ``tags[]``). The
# one pattern for the core and the API (which documents it and checks it with Python's re too).
FILTER_KEY_PATTERN = r"^[\w-]+(\[\])*(\.[\w-]+(\[\])*)*$"
FILTER_KEY = re.compile(FILTER_KEY_PATTERN)
FILTER_KEY_MAX = 255
# Qdrant holds integers as 64-bit signed numbers: a bigger one cannot be stored or matched.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def filter_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` as a filter's payload field, or None when Qdrant can address it."""
    if len(key) > FILTER_KEY_MAX or not FILTER_KEY.fullmatch(key):
        return (
            f"filter field {key[:80]!r} is not a payload field: use letters, digits, '_' and '-', with dots between "
            f"nested names and '[]' after an array's name (cities[].name), at most {FILTER_KEY_MAX} characters"
        )
    return None


def filter_value_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a value a filter matches, or None when it can be matched."""
    if isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return f"{value} is beyond 64-bit integers, which the vector store holds; give a number from {INT64_MIN} to {INT64_MAX}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} matches nothing (NaN and infinity equal nothing); give a finite number"
    return f"a {type(value).__name__} cannot be matched; give strings, numbers or booleans"


def filter_condition(key: str, value: Any) -> models.FieldCondition | models.Filter:
    """The condition that payload field ``key`` equals ``value`` (any of them, for a list).

    Strings, integers and booleans match exactly; Qdrant matches no float exactly, so a number is
    the range from it to itself (which an integer payload of the same value also falls in). NaN
    and infinity equal nothing, an integer beyond 64 bits cannot be held, and a key outside Qdrant's
    path syntax addresses nothing: each is a :class:`ConfigurationError` rather than a failure of the store.
    """
    problem = filter_key_problem(key)
    if problem:
        raise ConfigurationError(problem)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigurationError(f"filter field {key!r} lists no value to match: give one or more")
    for v in values:
        problem = filter_value_problem(v)
        if problem:
            raise ConfigurationError(f"filter field {key!r}: {problem}")
    conditions: list[models.Condition] = []
    exact = [v for v in values if isinstance(v, (str, int)) and not isinstance(v, bool)]
    for kind in (str, int):
        same = [v for v in exact if isinstance(v, kind)]
        if same:
            match = models.MatchValue(value=same[0]) if len(same) == 1 else models.MatchAny(any=same)
            conditions.append(models.FieldCondition(key=key, match=match))
    for v in values:
        if isinstance(v, bool):
            conditions.append(models.FieldCondition(key=key, match=models.MatchValue(value=v)))
        elif isinstance(v, float):
            conditions.append(models.FieldCondition(key=key, range=models.Range(gte=v, lte=v)))
    if len(conditions) == 1 and isinstance(conditions[0], models.FieldCondition):
        return conditions[0]
    return models.Filter(should=conditions)


class VectorStore:
    """Thin, batched, async-friendly wrapper over one Qdrant client.

    The client is synchronous (embedded mode is pure Python), so every call runs in a worker
    thread and never blocks the event loop. An embedded store opened by :meth:`connect` is not
    loaded for writes, deletes, counts and reading back vectors: those go to its rows
    (:mod:`citadel.store.embeddedrows`); a search or an alias change loads it.
    """

    def __init__(self, client: QdrantClient | None, *, batch_size: int = 128, is_server: bool = False, path_key: str = "") -> None:
        self._client = client  # None: the embedded store at path_key, loaded only when needed
        self.is_server = is_server
        self.path_key = path_key  # the embedded store's folder
        self.batch_size = batch_size
        self._checked: set[tuple[str, int, str]] = set()

    @classmethod
    def connect(cls, *, url: str | None, api_key: str | None, path: Path, batch_size: int = 128) -> VectorStore:
        if url:
            # Certificates are loaded only for an https server (as in citadel.store.probe).
            client = QdrantClient(url=url, api_key=api_key, timeout=60, verify=url.lower().startswith("https://"))
            return cls(client, batch_size=batch_size, is_server=True)
        with embedded_rows(path) as rows:  # takes the store now: one held elsewhere fails here
            if rows is None:
                local_client(path)
        return cls(None, batch_size=batch_size, path_key=str(path.resolve()))

    @property
    def client(self) -> QdrantClient:
        """The Qdrant client; for an embedded store, loaded (once per process) on first use."""
        return self._client if self._client is not None else local_client(Path(self.path_key))

    @contextmanager
    def _rows(self) -> Iterator[EmbeddedRows | None]:
        """The embedded store's rows, when this store writes them instead of a loaded client."""
        if self._client is not None:
            yield None
            return
        with embedded_rows(Path(self.path_key)) as rows:
            yield rows

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client method in a worker thread, the client taken there too (loading an embedded
        store takes seconds, which the event loop must not wait through)."""
        return await asyncio.to_thread(lambda: getattr(self.client, method)(*args, **kwargs))

    # collections -------------------------------------------------------------------------
    def _ensure_collection_sync(self, name: str, dimensions: int, model: str) -> None:
        with self._rows() as rows:
            if rows is not None:
                found = rows.collection(name)
                if found is None:
                    _create_unloaded(Path(self.path_key), name, dimensions, model)
                    return
                check_collection(name, found.dimensions, found.model, dimensions, model)
                return
        if not self.client.collection_exists(name):
            try:
                _create_collection(self.client, name, dimensions, model)
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
        check_collection(name, size, (info.config.metadata or {}).get("model"), dimensions, model)

    async def ensure_collection(self, name: str, dimensions: int, model: str) -> None:
        """Create ``name`` if missing; refuse one of another size or model."""
        key = (name, dimensions, model)
        if key in self._checked:
            return
        await self._run(self._ensure_collection_sync, name, dimensions, model)
        if not self.is_server and self._loaded():
            _tune_embedded_storage(self.client, name)
        metrics.POINTS_DELETED.labels(name)  # the collection's deletes start at 0, so their rate is 0, not absent
        self._checked.add(key)

    def _loaded(self) -> bool:
        """Whether this process has the embedded store loaded (a server is never loaded)."""
        return self._client is not None or str(Path(self.path_key).resolve()) in _LOCAL_CLIENTS

    def _collection_exists_sync(self, name: str) -> bool:
        with self._rows() as rows:
            if rows is not None:
                return rows.collection(name) is not None
        return self.client.collection_exists(name)

    async def collection_exists(self, name: str) -> bool:
        return await self._run(self._collection_exists_sync, name)

    def _count_sync(self, name: str) -> int:
        with self._rows() as rows:
            if rows is not None:
                return rows.count(name)
        if not self.client.collection_exists(name):
            return 0
        return self.client.count(name, exact=True).count

    async def count(self, name: str) -> int:
        return await self._run(self._count_sync, name)

    # points ------------------------------------------------------------------------------
    def _upsert_sync(self, name: str, ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]]) -> None:
        with self._rows() as rows:
            if rows is not None:
                for start in range(0, len(ids), self.batch_size):
                    end = start + self.batch_size
                    rows.upsert(name, ids[start:end], vectors[start:end], payloads[start:end])
                advise_if_large(self.path_key, name, rows.count)
                return
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
            advise_if_large(self.path_key, name, lambda name: self.client.count(name, exact=True).count)

    async def upsert(self, name: str, ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points in batches and return once the store acknowledged every batch."""
        if ids:
            await self._run(self._upsert_sync, name, ids, vectors, payloads)
            metrics.POINTS_UPSERTED.labels(name).inc(len(ids))

    def _delete_sync(self, name: str, ids: Sequence[str]) -> None:
        with self._rows() as rows:
            if rows is not None:
                rows.delete(name, ids)
                return
        if not self.client.collection_exists(name):
            return
        for start in range(0, len(ids), IDS_PER_DELETE):
            selector = models.PointIdsList(points=list(ids[start : start + IDS_PER_DELETE]))
            self.client.delete(name, points_selector=selector, wait=True)

    async def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id (the registry knows them; a filter scan would be slow in embedded mode)."""
        if ids:
            await self._run(self._delete_sync, name, ids)
            metrics.POINTS_DELETED.labels(name).inc(len(ids))

    def _present_sync(self, name: str, ids: Sequence[str]) -> set[str]:
        with self._rows() as rows:
            if rows is not None:
                return rows.present(name, ids)
        records = self.client.retrieve(name, ids=list(ids), with_vectors=False, with_payload=False)
        return {str(record.id) for record in records}

    async def present(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the collection holds (nothing but the ids is read)."""
        if not ids:
            return set()
        return await self._run(self._present_sync, name, ids)

    def _point_ids_sync(self, name: str, page: int) -> set[str]:
        with self._rows() as rows:
            if rows is not None:
                return rows.ids(name)
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

    def _retrieve_vectors_sync(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        with self._rows() as rows:
            if rows is not None:
                return rows.vectors(name, ids)
        records = self.client.retrieve(name, ids=list(ids), with_vectors=True, with_payload=False)
        # Citadel's collections hold one unnamed dense vector per point: a list of floats.
        return {str(record.id): cast("list[float]", record.vector) for record in records if isinstance(record.vector, list)}

    async def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by point id, for reusing them instead of embedding a moved chunk again."""
        if not ids:
            return {}
        return await self._run(self._retrieve_vectors_sync, name, ids)

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int = 10,
        score_threshold: float | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Nearest points to ``vector``; ``filters`` match payload fields exactly (a list means any of),
        as :func:`filter_condition` says."""
        if not await self.collection_exists(name):
            raise ConfigurationError(f"collection {name!r} does not exist yet; index something into it first")
        conditions = [filter_condition(key, value) for key, value in (filters or {}).items()]
        response = await self._call(
            "query_points",
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
        collections = await self._call("get_collections")
        aliases = await self._call("get_aliases")
        return {c.name for c in collections.collections}, {a.alias_name: a.collection_name for a in aliases.aliases}

    async def point_sample(self, name: str) -> Hit | None:
        """One point of a collection with its payload (for a check search), or None when it is empty."""
        points, _ = await self._call("scroll", name, limit=1, with_payload=True, with_vectors=False)
        return Hit(str(points[0].id), 1.0, points[0].payload or {}) if points else None

    async def point_alias(self, alias: str, target: str, *, replace_collection: bool = False) -> None:
        """Make ``alias`` stand for ``target`` in one atomic operation of the store (a search
        never sees the alias missing). ``replace_collection`` first deletes a plain collection that
        holds the alias's name: names are shared by collections and aliases."""
        if replace_collection and await self._call("collection_exists", alias):
            collections, _ = await self.layout()
            if alias in collections:
                await self.delete_collection(alias)
        _, aliases = await self.layout()
        operations: list[models.AliasOperations] = []
        if alias in aliases:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=target, alias_name=alias)))
        await self._call("update_collection_aliases", change_aliases_operations=operations)

    async def delete_collection(self, name: str) -> None:
        await self._call("delete_collection", name)
        self._checked = {key for key in self._checked if key[0] != name}
