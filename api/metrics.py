"""The HTTP service's Prometheus metrics: requests by route template, method and status, latency,
requests in flight, rate-limit refusals and authentication failures by reason.

With several uvicorn workers each process writes its samples under ``PROMETHEUS_MULTIPROC_DIR``
(``citadel api --workers N`` sets one up) and any worker's exposition adds them all up, so one
scrape sees the whole service.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("citadel_http_requests", "HTTP requests served.", ["route", "method", "status"])
LATENCY = Histogram(
    "citadel_http_request_duration_seconds", "Time to serve an HTTP request.", ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge("citadel_http_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum")
RATE_LIMITED = Counter("citadel_http_rate_limited", "Requests refused with 429.", ["route"])
AUTH_FAILURES = Counter("citadel_http_auth_failures", "Requests refused for their credentials.", ["reason"])


def exposition() -> tuple[bytes, str]:
    """The metrics text of this process, or of every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
