"""The document registry: documents, chunks, dead letters, runs and API keys, its schema and migrations, run
totals and run locks (SQLite embedded, Postgres in production)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.registry.base import utcnow
    from citadel.registry.database import Registry
    from citadel.registry.documentrows import ChunkRow, DeadLetter, DocumentRecord, StoredDocument, check_collection_model, chunked
    from citadel.registry.idlists import among, not_among
    from citadel.registry.runlock import Holder, RunLock, find_crashed_runs, holder, lock_key, mark_crashed_runs, process_alive
    from citadel.registry.runtotals import RunTotals
    from citadel.registry.schema import (
        SCHEMA_VERSION,
        api_keys,
        audit,
        chunks,
        collections,
        documents,
        index_runs,
        locks,
        metadata,
        schema_version,
    )

__all__ = [
    "ChunkRow",
    "DeadLetter",
    "DocumentRecord",
    "Holder",
    "Registry",
    "RunLock",
    "RunTotals",
    "SCHEMA_VERSION",
    "StoredDocument",
    "among",
    "api_keys",
    "audit",
    "check_collection_model",
    "chunked",
    "chunks",
    "collections",
    "documents",
    "find_crashed_runs",
    "holder",
    "index_runs",
    "lock_key",
    "locks",
    "mark_crashed_runs",
    "metadata",
    "not_among",
    "process_alive",
    "schema_version",
    "utcnow",
]

__getattr__ = lazy_exports(__name__, {
    "among": "idlists",
    "not_among": "idlists",
    "ChunkRow": "documentrows",
    "DeadLetter": "documentrows",
    "DocumentRecord": "documentrows",
    "Holder": "runlock",
    "Registry": "database",
    "RunLock": "runlock",
    "RunTotals": "runtotals",
    "SCHEMA_VERSION": "schema",
    "StoredDocument": "documentrows",
    "api_keys": "schema",
    "audit": "schema",
    "check_collection_model": "documentrows",
    "chunked": "documentrows",
    "chunks": "schema",
    "collections": "schema",
    "documents": "schema",
    "find_crashed_runs": "runlock",
    "holder": "runlock",
    "index_runs": "schema",
    "lock_key": "runlock",
    "locks": "schema",
    "mark_crashed_runs": "runlock",
    "metadata": "schema",
    "process_alive": "runlock",
    "schema_version": "schema",
    "utcnow": "base",
})
