"""The app factory: routers under ``/api/v1``, the security middleware, one set of backends per
process opened in the lifespan and closed on shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from api.errors import ERROR_RESPONSES, install_handlers
from api.middleware import ServiceMiddleware
from api.routers import admin, embeddings, health, metrics, orchestration, page, search, ui
from api.state import ServiceState
from api.version import VERSION
from citadel.apisettings import ApiSettings
from citadel.settings import Settings

PREFIX = "/api/v1"
log = logging.getLogger("citadel.api")

DESCRIPTION = """Embedding, search and workflows of Citadel over HTTP.

Every route but health and liveness needs `Authorization: Bearer <JWT>` or `X-API-Key: <key>`,
with the scope the route names (admin has every scope). Errors have one shape:
`{success: false, error: {code, message, details?}, request_id}`. Requests are rate limited per
identity; a 429 carries `Retry-After`, `RateLimit` and `RateLimit-Policy`."""


def create_app(settings: Settings | None = None, api: ApiSettings | None = None, *, tls: bool = False) -> FastAPI:
    """The HTTP service over ``settings`` (default: the environment)."""
    settings = settings or Settings()
    api = api or ApiSettings()
    service = ServiceState(settings, api)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.open()
        log.info("serving %s on %s", PREFIX, "embedded defaults" if service.embedded_store else "shared backends")
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="Citadel API", version=VERSION, description=DESCRIPTION, lifespan=lifespan,
        openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None,
    )
    app.state.service = service
    install_handlers(app)
    for router in (health.router, embeddings.router, search.router, orchestration.router, metrics.router, ui.router, admin.router):
        app.include_router(router, prefix=PREFIX)
    app.include_router(page.router)  # the search page, /ui/
    # Kubernetes-style aliases: liveness, readiness and the exposition at their usual paths.
    app.add_api_route("/livez", health.health, methods=["GET"], include_in_schema=True, tags=["health"], summary="Liveness")
    app.add_api_route("/readyz", health.health_detailed, methods=["GET"], tags=["health"], summary="Readiness")
    app.add_api_route("/metrics", metrics.prometheus, methods=["GET"], tags=["metrics"], summary="The Prometheus exposition",
                      dependencies=metrics.router.dependencies, response_class=Response,
                      responses={**ERROR_RESPONSES, **metrics.EXPOSITION_RESPONSES})
    cors: dict[str, Any] = dict(
        allow_origins=api.api_cors_origins, allow_credentials=bool(api.api_cors_origins),
        allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "RateLimit", "RateLimit-Policy", "Retry-After"], max_age=600,
    )
    app.add_middleware(CORSMiddleware, **cors)
    # Outermost, so that every answer (preflights too) has its request id, secure headers and metrics;
    # what it refuses itself before the app (401, 429, 413, ...) goes through the same CORS policy.
    app.add_middleware(ServiceMiddleware, max_body_bytes=api.api_max_body_bytes, tls=tls, cors=cors)
    return app
