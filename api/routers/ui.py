"""What a dashboard front end needs: its widget layout and chart series from recorded figures."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from fastapi import APIRouter, Depends, Query

from api.errors import ERROR_RESPONSES, ApiError
from api.routers.metrics import TIME_RANGE, range_seconds, runs_in_range
from api.schemas import ChartResponse, DashboardConfig
from api.security import Caller, require
from api.state import State

router = APIRouter(prefix="/ui", tags=["ui"], dependencies=[Depends(require("metrics"))], responses=ERROR_RESPONSES)

# Each widget's source route needs a scope (health/detailed needs none): a caller is given only the
# widgets it can read, so a metrics-only key's dashboard has no widget that would answer 403.
_SCOPES = {"/api/v1/metrics/": "metrics", "/api/v1/ui/": "metrics", "/api/v1/orchestration/": "workflows"}

_WIDGETS: dict[str, list[dict[str, Any]]] = {
    "main": [
        {"id": "health", "type": "status", "title": "Dependencies", "source": "/api/v1/health/detailed", "refresh_s": 15},
        {"id": "system", "type": "gauges", "title": "Host", "source": "/api/v1/metrics/system", "refresh_s": 15},
        {"id": "embedding-performance", "type": "line", "title": "Embedding throughput",
         "source": "/api/v1/ui/charts/embedding-performance?time_range=24h", "refresh_s": 60},
        {"id": "embeddings", "type": "stats", "title": "Embeddings (1h)", "source": "/api/v1/metrics/embeddings?time_range=1h",
         "refresh_s": 60},
        {"id": "workflows", "type": "table", "title": "Recent workflows", "source": "/api/v1/orchestration/workflows", "refresh_s": 30},
    ],
    "embeddings": [
        {"id": "embedding-performance", "type": "line", "title": "Embedding throughput",
         "source": "/api/v1/ui/charts/embedding-performance?time_range=24h", "refresh_s": 60},
        {"id": "embeddings", "type": "stats", "title": "Embeddings (24h)", "source": "/api/v1/metrics/embeddings?time_range=24h",
         "refresh_s": 60},
    ],
    "workflows": [
        {"id": "workflows", "type": "table", "title": "Recent workflows", "source": "/api/v1/orchestration/workflows", "refresh_s": 15},
    ],
}


@router.get("/dashboard/config", response_model=DashboardConfig, summary="The widgets of a dashboard")
async def dashboard_config(
    identity: Caller,
    dashboard_type: str = Query("main", description=f"One of {', '.join(_WIDGETS)}.", json_schema_extra={"enum": list(_WIDGETS)}),
) -> DashboardConfig:
    """The widgets of a dashboard that the caller's scopes can read; the others are left out."""
    if dashboard_type not in _WIDGETS:
        raise ApiError(400, f"dashboard_type {dashboard_type!r} is not one of {', '.join(_WIDGETS)}", code="bad_dashboard_type")
    widgets = [widget for widget in _WIDGETS[dashboard_type] if all(identity.allows(scope) for scope in widget_scopes(widget))]
    return DashboardConfig(dashboard_type=dashboard_type, config={"widgets": widgets, "theme": "auto"})


def widget_scopes(widget: dict[str, Any]) -> list[str]:
    """The scopes a widget's source route needs (none for the health check)."""
    return [scope for prefix, scope in _SCOPES.items() if widget["source"].startswith(prefix)]


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


@router.get("/charts/embedding-performance", response_model=ChartResponse, summary="Embedding throughput over time")
async def embedding_performance(state: State, identity: Caller, time_range: str = TIME_RANGE) -> ChartResponse:
    """Two series: texts this API process embedded per minute, and the chunks per second of each
    finished indexing run into a collection the caller reaches."""
    seconds = range_seconds(time_range)
    minutes = state.embedding.usage.since(time.time() - seconds)
    runs = [run for run in await runs_in_range(state, seconds, identity) if run.finished_at and run.duration_s]
    datasets = [
        {"label": "API texts per minute", "unit": "texts/min",
         "points": [{"x": _iso(minute), "y": usage.texts} for minute, usage in minutes]},
        {"label": "Indexing chunks per second", "unit": "chunks/s",
         "points": [{"x": run.finished_at.isoformat(), "y": round(run.chunks_embedded / run.duration_s, 2),  # type: ignore[union-attr,operator]
                     "collection": run.collection} for run in runs]},
    ]
    return ChartResponse(
        time_range=time_range, data={"datasets": datasets},
        config={"x": {"type": "time"}, "y": {"beginAtZero": True}, "title": "Embedding throughput"},
    )
