"""The document registry: what is indexed where, in SQL (Postgres via asyncpg, or a SQLite file).

One code path (SQLAlchemy Core, async) serves both databases. The registry follows the vector
store, never leads it: before points are written it records their ids as *pending* (a write-ahead
intent, so a crash can never leave a point the registry does not know), and only after the store
acknowledged the write does it mark the document indexed with its new content hash.
"""

from __future__ import annotations

from citadel.registry.base import utcnow
from citadel.registry.documentrows import (
    ChunkRow,
    DeadLetter,
    DocumentRecord,
    DocumentRows,
    StoredChunk,
    StoredDocument,
    check_collection_model,
    chunked,
)
from citadel.registry.runrecords import RunRecords
from citadel.registry.schema import SCHEMA_VERSION, chunks, collections, dead_letters, documents, index_runs, schema_version

__all__ = [
    "SCHEMA_VERSION", "ChunkRow", "DeadLetter", "DocumentRecord", "Registry", "StoredChunk", "StoredDocument",
    "check_collection_model", "chunked", "chunks", "collections", "dead_letters", "documents", "index_runs", "schema_version",
    "utcnow",
]


class Registry(DocumentRows, RunRecords):
    """Async access to the registry tables of one database: its documents and chunks
    (:class:`DocumentRows`), its dead letters, runs and status (:class:`RunRecords`)."""
