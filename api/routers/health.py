"""Liveness (touches nothing) and readiness (checks every dependency)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.health import HealthReport, overall
from api.schemas import Liveness
from api.state import State
from api.version import VERSION

router = APIRouter(tags=["health"])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@router.get("/health", response_model=Liveness, summary="Liveness: the process answers (no dependency touched)")
async def health() -> Liveness:
    return Liveness(timestamp=_now(), version=VERSION)


@router.get(
    "/health/detailed",
    response_model=HealthReport,
    responses={503: {"model": HealthReport, "description": "A dependency the service cannot work without is down"}},
    summary="Readiness: every dependency checked concurrently (cached for CITADEL_API_HEALTH_CACHE_S)",
)
async def health_detailed(state: State) -> JSONResponse:
    dependencies = await state.health.check()
    report = HealthReport(status=overall(dependencies), timestamp=_now(), version=VERSION, dependencies=dependencies)
    return JSONResponse(report.model_dump(mode="json", exclude_none=True), status_code=503 if report.status == "unhealthy" else 200)
