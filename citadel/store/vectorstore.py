"""Qdrant vector store: a server by URL, or embedded mode in a folder (the default).

Collections are created with the embedder's size and model recorded in their metadata; a
collection of another size or model is refused before anything is written. Writes go in
batches with deterministic ids, so retrying them never duplicates a point.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from citadel import metrics
from citadel.errors import ConfigurationError
from citadel.store.embeddedrows import EmbeddedRows, check_collection
from citadel.store.filters import filter_condition
from citadel.store.fusion import SearchOptions
from citadel.store.hits import Hit, Searched
from citadel.store.lexical import LEXICAL_VECTOR, lexical_point
from citadel.store.localclients import (
    LOCAL_CLIENTS,
    advise_if_large,
    create_collection,
    create_unloaded,
    embedded_rows,
    local_client,
    reserve_rows,
    tune_embedded_storage,
    without_local_mode_warning,
)
from citadel.store.searching import Query, has_lexical, mode_for, point_ids, search_dense, search_fused, store_changed
from citadel.store.upload import Uploader

__all__ = ["IDS_PER_DELETE", "Hit", "Searched", "VectorStore", "local_client"]

T = TypeVar("T")
Vectors = Sequence[Sequence[float]] | np.ndarray  # one row per point

# Ids in one delete request to a server: about 160 KB of JSON, far below Qdrant's 32 MB limit on a
# request, so an edited corpus's thousands of vanished points take one or two round trips.
IDS_PER_DELETE = 4096
LEXICAL_TTL_S = 2.0


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
        self._lexical: dict[str, bool] = {}
        self._lexical_seen: dict[str, tuple[float, bool]] = {}
        self.uploader: Uploader | None = None  # a server's: points upserted over REST, several batches at once

    @classmethod
    def connect(cls, *, url: str | None, api_key: str | None, path: Path, batch_size: int = 128, parallel: int = 2) -> VectorStore:
        if url:
            # Certificates are loaded only for an https server (as in citadel.store.probe).
            client = QdrantClient(url=url, api_key=api_key, timeout=60, verify=url.lower().startswith("https://"))
            store = cls(client, batch_size=batch_size, is_server=True)
            store.uploader = Uploader(url, api_key, batch_size=batch_size, parallel=parallel)
            return store
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
                    create_unloaded(Path(self.path_key), name, dimensions, model)
                    return
                check_collection(name, found.dimensions, found.model, dimensions, model)
                return
        if not self.client.collection_exists(name):
            try:
                create_collection(self.client, name, dimensions, model)
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
            tune_embedded_storage(self.client, name)
        metrics.POINTS_DELETED.labels(name)  # the collection's deletes start at 0, so their rate is 0, not absent
        self._checked.add(key)

    def _loaded(self) -> bool:
        """Whether this process has the embedded store loaded (a server is never loaded)."""
        return self._client is not None or str(Path(self.path_key).resolve()) in LOCAL_CLIENTS

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
        lexical = self._lexical_of(name)
        for start in range(0, len(ids), self.batch_size):
            end = start + self.batch_size
            dense = [list(map(float, v)) for v in vectors[start:end]]
            batch = models.Batch(
                ids=list(ids[start:end]),
                vectors={"": dense, LEXICAL_VECTOR: [lexical_point(p) for p in payloads[start:end]]} if lexical else dense,
                payloads=list(payloads[start:end]),
            )
            if self.is_server:
                self.client.upsert(name, points=batch, wait=True)
                continue
            reserve_rows(self.client, name, len(batch.ids))
            with without_local_mode_warning():
                self.client.upsert(name, points=batch, wait=True)
        if not self.is_server:
            advise_if_large(self.path_key, name, lambda name: self.client.count(name, exact=True).count)

    async def upsert(self, name: str, ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points in batches and return once the store acknowledged every batch; each point's
        lexical vector is made from its payload's ``text`` where the collection keeps them."""
        if ids:
            with self._changing():
                if self.uploader is not None:
                    lexical = self._lexical.get(name)
                    if lexical is None:
                        lexical = await self._run(self._lexical_of, name)
                    await self.uploader.upsert(name, ids, vectors, payloads, lexical)
                else:
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
            with self._changing():
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
        return point_ids(self.client, name, page=page)

    async def point_ids(self, name: str, page: int = 2000) -> set[str]:
        """Every point id of a collection, scrolled a page at a time (for a full check against the registry)."""
        return await self._run(self._point_ids_sync, name, page)

    def _retrieve_vectors_sync(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        with self._rows() as rows:
            if rows is not None:
                return rows.vectors(name, ids)
        records = self.client.retrieve(name, ids=list(ids), with_vectors=True, with_payload=False)
        # The dense vector is the unnamed one: the point's whole vector, or "" of its named vectors.
        dense = {str(r.id): r.vector.get("") if isinstance(r.vector, dict) else r.vector for r in records}
        return {pid: cast("list[float]", vector) for pid, vector in dense.items() if isinstance(vector, list)}

    async def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by point id, for reusing them instead of embedding a moved chunk again."""
        if not ids:
            return {}
        return await self._run(self._retrieve_vectors_sync, name, ids)

    def _has_lexical_sync(self, name: str) -> bool:
        with self._rows() as rows:
            if rows is not None:
                found = rows.collection(name)
                return found is not None and LEXICAL_VECTOR in found.sparse_vectors
        return has_lexical(self.client, name)

    def _lexical_of(self, name: str) -> bool:
        """Whether ``name`` keeps lexical vectors (looked up once per store object and collection)."""
        known = self._lexical.get(name)
        if known is None:
            known = self._lexical[name] = self._has_lexical_sync(name)
        return known

    def _searchable_lexically(self, name: str) -> bool:
        """Whether ``name`` has lexical vectors, looked up at most every :data:`LEXICAL_TTL_S`
        (a round trip to a server; an alias may point at another version since)."""
        now = time.monotonic()
        seen = self._lexical_seen.get(name)
        if seen is None or now - seen[0] > LEXICAL_TTL_S:
            seen = self._lexical_seen[name] = (now, has_lexical(self.client, name))
        return seen[1]

    def _search_sync(self, name: str, query: Query) -> Searched:
        mode = query.options.mode if query.text.strip() else "dense"  # no words given: the vector alone
        if mode != "dense":
            mode = mode_for(mode, self._searchable_lexically(name), name)
        path_key = None if self.is_server else self.path_key
        if mode == "dense":
            points = search_dense(self.client, name, query, embedded=not self.is_server)
        else:
            points = search_fused(self.client, name, query, mode, path_key=path_key)
        return Searched([Hit(pid, score, payload) for pid, score, payload in points], mode)

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        *,
        text: str = "",
        limit: int = 10,
        score_threshold: float | None = None,
        filters: dict[str, Any] | None = None,
        by_document: bool = False,
        options: SearchOptions | None = None,
    ) -> Searched:
        """The best points for a query: by its ``vector`` alone unless ``options`` ask for another mode
        (which needs its ``text``, :mod:`citadel.store.searching`). ``filters`` match payload fields
        exactly (a list means any of), as :func:`filter_condition` says. ``by_document``: each
        document's best point only, ``limit`` documents."""
        if not await self.collection_exists(name):
            raise ConfigurationError(f"collection {name!r} does not exist yet; index something into it first")
        conditions = [filter_condition(key, value) for key, value in (filters or {}).items()]
        query = Query(
            vector, text, limit, score_threshold, models.Filter(must=conditions) if conditions else None, by_document,
            options or SearchOptions(mode="dense"),
        )
        return await asyncio.to_thread(lambda: self._search_sync(name, query))

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
        with self._changing():
            await self._call("update_collection_aliases", change_aliases_operations=operations)
        self._lexical.pop(alias, None)
        self._lexical_seen.pop(alias, None)

    async def delete_collection(self, name: str) -> None:
        with self._changing():
            await self._call("delete_collection", name)
        self._checked = {key for key in self._checked if key[0] != name}
        self._lexical.pop(name, None)
        self._lexical_seen.pop(name, None)

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """An embedded store's lexical indexes are stale once a write ends, however it ends (a server
        keeps its own): marked after it, so that a search during the write cannot keep an index built
        without the written points."""
        try:
            yield
        finally:
            if not self.is_server:
                store_changed(self.path_key)
