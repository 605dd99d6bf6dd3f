"""Health checks of every configured backend, each with the fix when it fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from citadel.indexing import awaiting_repair, check_store
from citadel.models import DoctorCheck
from citadel.resources import Resources
from citadel.settings import Settings, masked_url


async def _check(name: str, probe: Callable[[], Awaitable[str]], fix: str) -> DoctorCheck:
    try:
        return DoctorCheck(name=name, ok=True, detail=await probe())
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
        return DoctorCheck(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}", fix=fix)


async def _drift_checks(resources: Resources) -> list[DoctorCheck]:
    """Per collection: does the store hold what the registry says (the cheap check of every run)?"""
    registry = await resources.registry()
    waiting = await awaiting_repair(registry)
    checks = []
    for entry in await registry.collection_stats():
        name = entry.collection
        check = await check_store(resources, name)
        held = "no such collection" if check.points is None else f"{check.points} points"
        detail = f"{check.expected} chunks in the registry, {held} in the store"
        problems = []
        if check.missing:
            problems.append(f"at least {check.missing} missing")
        if check.stray:
            problems.append(f"{check.stray} not in the registry")
        if waiting.get(name):
            problems.append(f"{sum(waiting[name].values())} documents awaiting repair")
        checks.append(DoctorCheck(
            name=f"collection {name}",
            ok=not problems,
            detail=detail + (f" ({', '.join(problems)})" if problems else ""),
            fix=f"citadel verify --repair --collection {name}" if problems else "",
        ))
    return checks


async def run_checks(settings: Settings, prefect_api_url: str | None = None) -> list[DoctorCheck]:
    """Check the embedder, the cache, the registry, the vector store, each collection's store
    against the registry, and the Prefect API (``prefect_api_url``, as Prefect's settings give it)."""
    resources = Resources(settings)
    results: list[DoctorCheck] = []
    try:
        async def embedder() -> str:
            e = resources.embedder
            await e.check()
            return f"{settings.embedder} model {e.model} ({e.dimensions} dimensions)"

        embedder_fix = {
            "hashing": "nothing to do: the hashing embedder runs in-process",
            "wordllama": "reinstall Citadel (pip install wordllama): the model's files ship in that package",
            "ollama": f"start Ollama at {', '.join(settings.ollama_urls)} and "
            f"`ollama pull {settings.embedding_model or 'nomic-embed-text'}`, or fix CITADEL_OLLAMA_URLS",
            "openai": f"start the server at {settings.openai_base_url} or fix CITADEL_OPENAI_BASE_URL / CITADEL_OPENAI_API_KEY",
        }[settings.embedder]
        results.append(await _check("embedder", embedder, embedder_fix))

        async def cache() -> str:
            await resources.cache.ping()
            if settings.redis_url:
                return f"redis {masked_url(settings.redis_url.get_secret_value())}"
            return f"in-process LRU ({settings.lru_size} vectors, {settings.lru_mb} MB at most); set CITADEL_REDIS_URL to share it"

        results.append(await _check("embedding cache", cache, "start Redis or fix CITADEL_REDIS_URL (runs still work without it, slower)"))

        async def registry() -> str:
            await resources.registry()
            return masked_url(settings.registry_url)

        results.append(await _check("registry", registry, "start Postgres or fix CITADEL_DATABASE_URL (postgresql://user@host:5432/db)"))

        async def store() -> str:
            await resources.store._call("get_collections")
            return f"qdrant {settings.qdrant_url}" if settings.qdrant_url else f"embedded qdrant at {settings.qdrant_path}"

        store_fix = "start Qdrant or fix CITADEL_QDRANT_URL / CITADEL_QDRANT_API_KEY; embedded mode allows one process per folder"
        results.append(await _check("vector store", store, store_fix))
        if results[-1].ok and results[-2].ok:
            results.extend(await _drift_checks(resources))

        api = prefect_api_url
        if api:
            async def prefect() -> str:
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(f"{api.rstrip('/')}/health")
                    response.raise_for_status()
                return f"Prefect API {api}"

            results.append(await _check("prefect", prefect, "start `prefect server start` or fix PREFECT_API_URL"))
        else:
            results.append(DoctorCheck(name="prefect", ok=True, detail="no PREFECT_API_URL: flows run on a temporary local server"))
    finally:
        await resources.aclose()
    return results
