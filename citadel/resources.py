"""The backends one run needs, built from settings on first use and closed together.

Nothing is opened until asked for: a run over an unchanged corpus never opens the vector store
(Qdrant's embedded mode takes seconds and gigabytes to load a large collection), nor imports its
client. Tasks of a flow run, and the API's requests, share one set per settings and event loop
(:func:`open_resources`), so clients are never task inputs.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from pydantic import SecretStr

from citadel.embedders import CachedEmbedder, Embedder, EmbeddingCache, build_cache, build_embedder
from citadel.registry import Registry
from citadel.settings import Settings, secret

if TYPE_CHECKING:
    from citadel.store import VectorStore


class Resources:
    """Lazily built embedder, cache, registry and vector store of one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedder: Embedder | None = None
        self._cache: EmbeddingCache | None = None
        self._cached: CachedEmbedder | None = None
        self._registry: Registry | None = None
        self._store: VectorStore | None = None
        self._store_lock = threading.Lock()  # the store may be opened by a worker thread and the loop at once
        self._opening: asyncio.Future[VectorStore] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            s = self.settings
            self._cache = build_cache(secret(s.redis_url), ttl_s=s.cache_ttl_s, lru_size=s.lru_size, lru_mb=s.lru_mb)
        return self._cache

    @property
    def cached_embedder(self) -> CachedEmbedder:
        if self._cached is None:
            self._cached = CachedEmbedder(self.embedder, self.cache)
        return self._cached

    async def registry(self) -> Registry:
        if self._registry is None:
            registry = Registry(self.settings.registry_url)
            await registry.init()
            self._registry = registry
        return self._registry

    @property
    def store_opened(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> VectorStore:
        """The vector store, opened on first use (in the calling thread: see :meth:`open_store`)."""
        with self._store_lock:
            if self._store is None:
                # Imported here: qdrant-client takes about a second to import, which a run that
                # never opens the store (nothing changed) should not pay.
                from citadel.store import VectorStore

                s = self.settings
                self._store = VectorStore.connect(
                    url=s.qdrant_url,
                    api_key=secret(s.qdrant_api_key),
                    path=s.qdrant_path,
                    batch_size=s.upsert_batch_size,
                    parallel=s.upsert_parallel,
                )
            return self._store

    def open_store_in_background(self) -> None:
        """Start opening the vector store in a worker thread, once a run knows it will write: the
        seconds an embedded store takes to load then overlap with chunking and embedding."""
        if self._store is None and self._opening is None:
            self._opening = asyncio.ensure_future(asyncio.to_thread(lambda: self.store))

    async def open_store(self) -> VectorStore:
        """The vector store, opened without blocking the event loop (or the one being opened)."""
        if self._store is not None:
            return self._store
        self.open_store_in_background()
        assert self._opening is not None
        return await asyncio.shield(self._opening)  # a cancelled caller leaves the open to finish for the next

    async def aclose(self) -> None:
        if self._opening is not None:  # a thread cannot be stopped: let it finish, then close what it opened
            await asyncio.gather(self._opening, return_exceptions=True)
            self._opening = None
        if self._embedder is not None:
            await self._embedder.aclose()
        if self._cache is not None:
            await self._cache.aclose()
        if self._registry is not None:
            await self._registry.aclose()
        if self._store is not None and self.settings.qdrant_url:
            self._store.client.close()
        self._embedder = self._cache = self._cached = self._registry = self._store = None


# One set per settings and event loop: async clients belong to the loop that opened them.
_OPEN: dict[tuple[str, int], tuple[Resources, int]] = {}


def _key(settings: Settings) -> tuple[str, int]:
    # Secrets count too (two Redis URLs differing only in password are two caches); the key stays in memory.
    values = json.dumps(settings.model_dump(), sort_keys=True, default=_plain)
    return values, id(asyncio.get_running_loop())


def _plain(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def get_resources(settings: Settings) -> Resources:
    """The resources of ``settings`` on the running loop, built on first use."""
    key = _key(settings)
    if key not in _OPEN:
        _OPEN[key] = (Resources(settings), 0)
    return _OPEN[key][0]


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Share one set of clients among the tasks of a flow run and close them at its end."""
    key = _key(settings)
    resources, users = _OPEN.get(key, (None, 0))
    if resources is None:
        resources = Resources(settings)
    _OPEN[key] = (resources, users + 1)
    try:
        yield resources
    finally:
        resources, users = _OPEN[key]
        if users <= 1:
            del _OPEN[key]
            await resources.aclose()
        else:
            _OPEN[key] = (resources, users - 1)
