"""Embedded mode's clients, one per store folder and process: the loaded store, or (until something
needs it loaded) its rows, and the care a loaded store needs (its memory, its SQLite files, its warning).

qdrant-client locks an embedded store's folder to one client per process, so clients are shared by
path. The lock is held through every use of the rows, so that loading the store never closes them
under a write.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

import citadel.store.embeddedlayout as layout
from citadel.store.embeddedrows import EmbeddedRows
from citadel.store.lexical import LEXICAL_VECTOR
from citadel.store.probe import held_elsewhere

log = logging.getLogger(__name__)

LOCAL_MODE_COMFORT = 20_000
"""Points per collection above which qdrant-client itself advises a server."""


@contextmanager
def without_local_mode_warning() -> Iterator[None]:
    """qdrant-client warns at every open and at the first large upsert of an embedded store;
    Citadel says it once, in its own words, with the setting to change (:func:`advise_if_large`).
    The filter added is that one warning's: if threads interleave, at worst it outlives the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
        yield


# The shared clients by resolved path: the loaded store, or its rows until something needs it loaded.
LOCAL_CLIENTS: dict[str, QdrantClient] = {}
LOCAL_ROWS: dict[str, EmbeddedRows] = {}
LOCAL_LOCK = threading.RLock()


def local_client(path: Path) -> QdrantClient:
    """The process-wide embedded-mode client of ``path``, its points loaded (its rows closed first)."""
    key = str(path.resolve())
    with LOCAL_LOCK:
        client = LOCAL_CLIENTS.get(key)
        if client is None:
            rows = LOCAL_ROWS.pop(key, None)
            if rows is not None:
                rows.close()
            client = _open_client(path)
            for collection in client.get_collections().collections:
                reserve_rows(client, collection.name, 0)
                advise_if_large(key, collection.name, lambda name: client.count(name, exact=True).count)
            _release_freed_memory()
            LOCAL_CLIENTS[key] = client
        return client


def _open_client(path: Path) -> QdrantClient:
    """A new embedded-mode client of ``path``: every point of the store loaded into memory."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        with without_local_mode_warning(), _cyclic_gc_paused():
            return QdrantClient(path=str(path.resolve()))
    except RuntimeError as exc:
        raise held_elsewhere(path) from exc


@contextmanager
def embedded_rows(path: Path) -> Iterator[EmbeddedRows | None]:
    """The rows of the embedded store at ``path`` while the block runs, or None when this process
    has the store loaded (its client is then the one to use) or its rows cannot be written here."""
    key = str(path.resolve())
    with LOCAL_LOCK:
        if key in LOCAL_CLIENTS:
            yield None
            return
        rows = LOCAL_ROWS.get(key)
        if rows is None:
            if not layout.meta_file(path).exists():
                _open_client(path).close()  # a new store: its own client lays out its files
            rows = EmbeddedRows.open(Path(key))
            if rows is not None:
                LOCAL_ROWS[key] = rows
        yield rows


def create_collection(client: QdrantClient, name: str, dimensions: int, model: str) -> None:
    """A collection of Citadel's shape: an unnamed dense vector, and the lexical sparse one with
    the store's IDF (:mod:`citadel.store.lexical`)."""
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
        sparse_vectors_config={LEXICAL_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        metadata={"model": model, "dimensions": dimensions, "created_by": "citadel"},
    )


def create_unloaded(path: Path, name: str, dimensions: int, model: str) -> None:
    """Create a collection in an embedded store this process has not loaded, by the store's own
    client, let go at once: its rows are written without it."""
    key = str(path.resolve())
    with LOCAL_LOCK:
        rows = LOCAL_ROWS.pop(key, None)
        if rows is not None:
            rows.close()
        client = _open_client(path)
        try:
            if not client.collection_exists(name):
                create_collection(client, name, dimensions, model)
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
    with LOCAL_LOCK:
        for client in LOCAL_CLIENTS.values():
            client.close()
        LOCAL_CLIENTS.clear()
        for rows in LOCAL_ROWS.values():
            rows.close()
        LOCAL_ROWS.clear()


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
    spare float32 rows (see :func:`tune_embedded_storage` and :func:`reserve_rows`)."""
    tune_embedded_storage(client, name)
    reserve_rows(client, name, adding)


def reserve_rows(client: QdrantClient, name: str, adding: int) -> None:
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


def tune_embedded_storage(client: QdrantClient, name: str) -> None:
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
