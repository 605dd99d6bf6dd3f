"""Dependency checks of ``/health/detailed`` and ``/readyz``: concurrent, each with its own
timeout, reused for a few seconds so that probes cannot load the backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import httpx
import sqlalchemy as sa
from pydantic import BaseModel

from citadel.resources import Resources

Status = Literal["up", "down", "embedded"]

# Without these the service cannot embed, search or index; without the cache or Prefect it can.
REQUIRED = ("qdrant", "postgres", "embedder")


class DependencyHealth(BaseModel):
    status: Status
    latency_ms: float
    kind: str
    error: str | None = None


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: str
    version: str
    dependencies: dict[str, DependencyHealth]


class HealthChecker:
    """Checks each dependency the way it is configured: a server is probed, an embedded one
    (in-process cache, embedded store, SQLite registry, hashing embedder) says so."""

    def __init__(self, resources: Resources, prefect_api_url: str | None, *, timeout_s: float, cache_s: float) -> None:
        self.resources = resources
        self.prefect_api_url = prefect_api_url
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._last: tuple[float, dict[str, DependencyHealth]] | None = None
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def check(self) -> dict[str, DependencyHealth]:
        async with self._lock:  # concurrent probes share one round of checks
            if self._last and time.monotonic() - self._last[0] < self.cache_s:
                return self._last[1]
            names = ("redis", "qdrant", "postgres", "prefect", "embedder")
            probes = (self._redis, self._qdrant, self._postgres, self._prefect, self._embedder)
            results = await asyncio.gather(*(self._timed(probe) for probe in probes))
            found = dict(zip(names, results, strict=True))
            self._last = (time.monotonic(), found)
            return found

    async def _timed(self, probe: Callable[[], Awaitable[tuple[Status, str]]]) -> DependencyHealth:
        started = time.perf_counter()
        try:
            status, kind = await asyncio.wait_for(probe(), self.timeout_s)
            error = None
        except TimeoutError:
            status, kind, error = "down", "", f"no answer within {self.timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - a failed check is a status, never an error of the route
            status, kind, error = "down", "", type(exc).__name__
        return DependencyHealth(status=status, latency_ms=round((time.perf_counter() - started) * 1000, 2), kind=kind, error=error)

    async def _redis(self) -> tuple[Status, str]:
        if not self.resources.settings.redis_url:
            return "embedded", "in-process LRU"
        await self.resources.cache.ping()
        return "up", "redis"

    async def _qdrant(self) -> tuple[Status, str]:
        settings = self.resources.settings
        if not settings.qdrant_url:
            await asyncio.to_thread(lambda: self.resources.store.client.get_collections())
            return "embedded", "qdrant embedded"
        headers = {"api-key": settings.qdrant_api_key.get_secret_value()} if settings.qdrant_api_key else {}
        response = await self._http.get(settings.qdrant_url.rstrip("/") + "/readyz", headers=headers)
        response.raise_for_status()
        return "up", "qdrant"

    async def _postgres(self) -> tuple[Status, str]:
        registry = await self.resources.registry()
        async with registry.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return ("up", "postgres") if registry.dialect == "postgresql" else ("embedded", "sqlite")

    async def _prefect(self) -> tuple[Status, str]:
        if not self.prefect_api_url:
            return "embedded", "prefect in-process"
        response = await self._http.get(self.prefect_api_url.rstrip("/") + "/health")
        response.raise_for_status()
        return "up", "prefect"

    async def _embedder(self) -> tuple[Status, str]:
        settings = self.resources.settings
        if settings.embedder == "hashing":
            return "embedded", "hashing"
        if settings.embedder == "wordllama":
            await self.resources.embedder.check()
            return "embedded", "wordllama"
        await self.resources.embedder.check()
        return "up", settings.embedder

    async def aclose(self) -> None:
        await self._http.aclose()


def overall(dependencies: dict[str, DependencyHealth]) -> Literal["healthy", "degraded", "unhealthy"]:
    down = {name for name, dep in dependencies.items() if dep.status == "down"}
    if down & set(REQUIRED):
        return "unhealthy"
    return "degraded" if down else "healthy"
