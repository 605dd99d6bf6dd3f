"""The vector store: Qdrant collections, points and aliases (embedded or on a server), and the cheap look at
a store that is not open."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.store.probe import (
        StoreSnapshot,
        embedded_layout,
        embedded_store_holder,
        probe_embedded,
        probe_server,
        server_layout,
        store_in_use,
    )
    from citadel.store.vectorstore import (
        FILTER_KEY_MAX,
        FILTER_KEY_PATTERN,
        INT64_MAX,
        INT64_MIN,
        LOCAL_MODE_COMFORT,
        Hit,
        VectorStore,
        close_local_clients,
        filter_key_problem,
        filter_value_problem,
        local_client,
        prepare_embedded_write,
    )

__all__ = [
    "FILTER_KEY_MAX",
    "FILTER_KEY_PATTERN",
    "Hit",
    "INT64_MAX",
    "INT64_MIN",
    "LOCAL_MODE_COMFORT",
    "StoreSnapshot",
    "VectorStore",
    "close_local_clients",
    "embedded_layout",
    "embedded_store_holder",
    "filter_key_problem",
    "filter_value_problem",
    "local_client",
    "prepare_embedded_write",
    "probe_embedded",
    "probe_server",
    "server_layout",
    "store_in_use",
]

__getattr__ = lazy_exports(__name__, {
    "FILTER_KEY_MAX": "vectorstore",
    "FILTER_KEY_PATTERN": "vectorstore",
    "Hit": "vectorstore",
    "INT64_MAX": "vectorstore",
    "INT64_MIN": "vectorstore",
    "LOCAL_MODE_COMFORT": "vectorstore",
    "StoreSnapshot": "probe",
    "VectorStore": "vectorstore",
    "close_local_clients": "vectorstore",
    "embedded_layout": "probe",
    "embedded_store_holder": "probe",
    "filter_key_problem": "vectorstore",
    "filter_value_problem": "vectorstore",
    "local_client": "vectorstore",
    "prepare_embedded_write": "vectorstore",
    "probe_embedded": "probe",
    "probe_server": "probe",
    "server_layout": "probe",
    "store_in_use": "probe",
})
