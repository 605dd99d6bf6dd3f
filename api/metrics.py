"""The service's Prometheus metrics, and the exposition that one scrape reads.

Live metrics (requests by route template, method and status, latency, requests in flight, rate-limit
refusals, authentication failures, and the engine's own in :mod:`citadel.metrics`) count what API
processes do. With several uvicorn workers each process writes its samples under
``PROMETHEUS_MULTIPROC_DIR`` (``citadel api --workers N`` sets one up) and any worker's exposition
adds them all up, so one scrape sees the whole service.

Figures that outlive processes are read at scrape time instead: the registry's run totals and dead
letters, the Prefect API's flow runs and workers, and the dependency checks of
``/health/detailed``. Each source is timed; one that fails leaves its figures out, never the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from citadel import metrics as engine_metrics  # noqa: F401 - registers the engine's metrics in this process
from citadel.ops import registry_families

if TYPE_CHECKING:
    from api.state import ServiceState

log = logging.getLogger("citadel.api")

REQUESTS = Counter("citadel_http_requests", "HTTP requests served.", ["route", "method", "status"])
LATENCY = Histogram(
    "citadel_http_request_duration_seconds", "Time to serve an HTTP request.", ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge("citadel_http_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum")
RATE_LIMITED = Counter("citadel_http_rate_limited", "Requests refused with 429.", ["route"])
AUTH_FAILURES = Counter("citadel_http_auth_failures", "Requests refused for their credentials.", ["reason"])


class _Families(Collector):
    """Families read before the scrape (the async sources), handed to prometheus-client."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


async def _dependency_families(state: ServiceState) -> list[Metric]:
    up = GaugeMetricFamily("citadel_dependency_up", "Whether a dependency answered its health check (1 also when embedded).",
                           labels=["dependency"])
    latency = GaugeMetricFamily("citadel_dependency_check_duration_seconds", "Time the dependency's health check took.",
                                labels=["dependency"])
    for name, health in sorted((await state.health.check()).items()):
        up.add_metric([name], 0 if health.status == "down" else 1)
        latency.add_metric([name], health.latency_ms / 1000)
    return [up, latency]


NEW_SERIES_HOLD_S = 60.0
"""A collection's counters stay at zero this long after its first run ended: four scrapes at
Prometheus's 15 s see the zero before the first count, so increase() counts that run."""


async def _registry_families(state: ServiceState) -> list[Metric]:
    return await registry_families(await state.resources.registry(), hold_new_s=NEW_SERIES_HOLD_S)


async def _prefect_families(state: ServiceState) -> list[Metric]:
    return await state.prefect_figures.families() if state.prefect_figures else []


SOURCES: dict[str, Callable[[ServiceState], Awaitable[list[Metric]]]] = {
    "dependencies": _dependency_families, "registry": _registry_families, "prefect": _prefect_families,
}


async def scrape_families(state: ServiceState, timeout_s: float) -> list[Metric]:
    """Every scrape-time source, read concurrently, each within ``timeout_s``, with its duration."""
    spent = GaugeMetricFamily("citadel_scrape_collector_duration_seconds", "Time a scrape-time source took.", labels=["collector"])
    ok = GaugeMetricFamily("citadel_scrape_collector_success", "Whether a scrape-time source gave its figures.", labels=["collector"])

    async def timed(name: str, source: Callable[[ServiceState], Awaitable[list[Metric]]]) -> list[Metric]:
        started = time.perf_counter()
        try:
            found = await asyncio.wait_for(source(state), timeout_s)
            ok.add_metric([name], 1)
        except Exception as exc:  # noqa: BLE001 - a source that fails is left out of this scrape, and said so
            log.warning("metrics source %s failed: %s", name, type(exc).__name__)
            ok.add_metric([name], 0)
            found = []
        spent.add_metric([name], time.perf_counter() - started)
        return found

    results = await asyncio.gather(*(timed(name, source) for name, source in SOURCES.items()))
    return [family for found in results for family in found] + [spent, ok]


async def exposition(state: ServiceState) -> tuple[bytes, str]:
    """The metrics text: this process's live metrics (or every worker's in multiprocess mode) and
    the scrape-time figures."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_Families(await scrape_families(state, state.api.api_health_timeout_s * 2)))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        live = CollectorRegistry()
        multiprocess.MultiProcessCollector(live)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY as live
    return generate_latest(live) + generate_latest(scraped), CONTENT_TYPE_LATEST
