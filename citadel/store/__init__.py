"""The vector store: Qdrant collections, points and aliases (embedded or on a server), the cheap look at
a store that is not open, the embedded store's files, and a server's snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.store.embeddedlayout import (
        EMBEDDED_COLLECTIONS_DIR,
        EMBEDDED_META_FILE,
        EMBEDDED_STORAGE_FILE,
        EmbeddedMeta,
        embedded_storage_file,
        read_embedded_meta,
        stored_points,
    )
    from citadel.store.filters import (
        FILTER_KEY_MAX,
        FILTER_KEY_PATTERN,
        INT64_MAX,
        INT64_MIN,
        filter_key_problem,
        filter_value_problem,
    )
    from citadel.store.fusion import SearchOptions
    from citadel.store.hits import Hit, Searched
    from citadel.store.localclients import LOCAL_MODE_COMFORT, close_local_clients, local_client, prepare_embedded_write
    from citadel.store.probe import (
        StoreSnapshot,
        embedded_layout,
        embedded_store_holder,
        probe_embedded,
        probe_server,
        server_layout,
        store_in_use,
    )
    from citadel.store.snapshots import ServerError, ServerSnapshots
    from citadel.store.vectorstore import VectorStore

__all__ = [
    "EMBEDDED_COLLECTIONS_DIR",
    "EMBEDDED_META_FILE",
    "EMBEDDED_STORAGE_FILE",
    "FILTER_KEY_MAX",
    "FILTER_KEY_PATTERN",
    "Hit",
    "INT64_MAX",
    "INT64_MIN",
    "LOCAL_MODE_COMFORT",
    "SearchOptions",
    "Searched",
    "EmbeddedMeta",
    "ServerError",
    "ServerSnapshots",
    "StoreSnapshot",
    "VectorStore",
    "close_local_clients",
    "embedded_layout",
    "embedded_storage_file",
    "embedded_store_holder",
    "filter_key_problem",
    "filter_value_problem",
    "local_client",
    "prepare_embedded_write",
    "probe_embedded",
    "probe_server",
    "read_embedded_meta",
    "server_layout",
    "store_in_use",
    "stored_points",
]

__getattr__ = lazy_exports(__name__, {
    "EMBEDDED_COLLECTIONS_DIR": "embeddedlayout",
    "EMBEDDED_META_FILE": "embeddedlayout",
    "EMBEDDED_STORAGE_FILE": "embeddedlayout",
    "EmbeddedMeta": "embeddedlayout",
    "FILTER_KEY_MAX": "filters",
    "FILTER_KEY_PATTERN": "filters",
    "Hit": "hits",
    "INT64_MAX": "filters",
    "INT64_MIN": "filters",
    "LOCAL_MODE_COMFORT": "localclients",
    "SearchOptions": "fusion",
    "Searched": "hits",
    "ServerError": "snapshots",
    "ServerSnapshots": "snapshots",
    "StoreSnapshot": "probe",
    "VectorStore": "vectorstore",
    "close_local_clients": "localclients",
    "embedded_layout": "probe",
    "embedded_storage_file": "embeddedlayout",
    "embedded_store_holder": "probe",
    "filter_key_problem": "filters",
    "filter_value_problem": "filters",
    "local_client": "localclients",
    "prepare_embedded_write": "localclients",
    "probe_embedded": "probe",
    "probe_server": "probe",
    "read_embedded_meta": "embeddedlayout",
    "server_layout": "probe",
    "store_in_use": "probe",
    "stored_points": "embeddedlayout",
})
