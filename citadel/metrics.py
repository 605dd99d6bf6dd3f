"""The engine's live Prometheus metrics: embedding backends, the cache and the vector store.

They count what this process does. A process that serves (the API, a flow run inside it) exposes
them; the figures of runs in worker processes that exit come from the registry at scrape time
(:mod:`citadel.scrape`), so nothing is lost when a worker's process ends. Labels are bounded: a
server is its configured host, a model and a collection are configuration, never a document.
Under ``PROMETHEUS_MULTIPROC_DIR`` (several API workers) every process writes its own samples and
one scrape adds them up; the gauges then sum over live processes.
"""

from __future__ import annotations

import platform
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram

from citadel import __version__

BUILD_INFO = Gauge("citadel_build_info", "The running version of Citadel (always 1).", ["version", "python_version"],
                   multiprocess_mode="max")
BUILD_INFO.labels(__version__, platform.python_version()).set(1)

EMBED_REQUESTS = Counter("citadel_embedding_requests", "HTTP requests sent to an embedding server (each attempt).",
                         ["server", "model"])
EMBED_TEXTS = Counter("citadel_embedding_texts", "Texts an embedding server embedded.", ["server", "model"])
EMBED_ERRORS = Counter("citadel_embedding_errors", "Failed requests to an embedding server, by reason.", ["server", "model", "reason"])
EMBED_LATENCY = Histogram(
    "citadel_embedding_request_duration_seconds", "Time an embedding server took to answer one request.", ["server", "model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
EMBED_SLOTS = Gauge("citadel_embedding_slots_in_use",
                    "Requests in flight at an embedding server (CITADEL_EMBED_REQUESTS_PER_SERVER at most each).",
                    ["server", "model"], multiprocess_mode="livesum")

CACHE_HITS = Counter("citadel_embedding_cache_hits", "Texts whose vector the embedding cache held.", ["cache"])
CACHE_MISSES = Counter("citadel_embedding_cache_misses", "Texts the embedding cache did not hold.", ["cache"])
CACHE_ERRORS = Counter("citadel_embedding_cache_errors", "Failed reads and writes of the embedding cache.", ["cache"])

POINTS_UPSERTED = Counter("citadel_vector_points_upserted", "Points written to the vector store.", ["collection"])
POINTS_DELETED = Counter("citadel_vector_points_deleted", "Points deleted from the vector store by id.", ["collection"])


def server_label(url: str) -> str:
    """A server as a label: its host and port, never a user, password, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or url
    return f"{host}:{parts.port}" if parts.port else host
