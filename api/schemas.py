"""Request and response bodies of ``/api/v1``: strict (unknown fields refused), bounded, and built
on the core's typed results where one exists."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from citadel.models import ApiKeyCreated, ApiKeyRecord, SearchHit, WorkflowReport

# Hard upper bounds of the schema; the configured (smaller or equal) ones are checked per request.
MAX_TEXT_CHARS = 1_000_000
MAX_BATCH_TEXTS = 10_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Succeeded(BaseModel):
    """Base of the successful answers: ``success`` first, as in the error shape."""

    success: bool = True


class Liveness(BaseModel):
    status: Literal["healthy"] = "healthy"
    timestamp: str
    version: str


class GenerateRequest(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="At most CITADEL_API_MAX_TEXT_CHARS characters.")
    model: str | None = Field(None, max_length=255, description="A served model; default: the configured one.")
    cache_enabled: bool = Field(True, description="Read the embedding cache first (results are cached either way).")


class GenerateResponse(Succeeded):
    embedding: list[float]
    model: str
    dimensions: int
    cached: bool
    duration_ms: float


class BatchRequest(Strict):
    texts: list[str] = Field(
        min_length=1, max_length=MAX_BATCH_TEXTS, description="At most CITADEL_API_MAX_BATCH_TEXTS texts of CITADEL_API_MAX_TEXT_CHARS."
    )
    model: str | None = Field(None, max_length=255)
    batch_size: int | None = Field(None, gt=0, le=1024, description="Accepted for compatibility; the service batches itself.")
    cache_enabled: bool = True


class BatchResponse(Succeeded):
    embeddings: list[list[float]]
    model: str
    dimensions: int
    cached_count: int
    duration_ms: float


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=10_000)
    collection: str | None = Field(None, max_length=255)
    limit: int = Field(10, gt=0, le=100)
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Minimum cosine similarity.")
    filter: dict[str, str | int | float | bool] | None = Field(None, max_length=16, description="Exact-match metadata filters.")


class SearchResponse(Succeeded):
    query: str
    collection: str
    model: str
    hits: list[SearchHit]
    duration_ms: float


class WorkflowSubmitted(Succeeded):
    task_id: str = Field(description="The Prefect flow run id.")
    status: str
    status_url: str
    runs_in: Literal["api", "workers"]


class WorkflowStatus(Succeeded):
    task_id: str
    status: str | None
    name: str | None = None
    workflow_id: str | None = None
    start: str | None = None
    end: str | None = None
    steps: dict[str, Any]

    @classmethod
    def of(cls, report: WorkflowReport) -> WorkflowStatus:
        return cls(
            task_id=report.flow_run_id, status=report.state, name=report.name, workflow_id=report.workflow_id,
            start=report.start, end=report.end, steps={k: v.to_json() for k, v in report.steps.items()},
        )


class WorkflowList(Succeeded):
    workflows: list[WorkflowStatus]


class SystemMetrics(Succeeded):
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    timestamp: str


class MetricsResponse(Succeeded):
    time_range: str
    metrics: dict[str, Any]


class DashboardConfig(Succeeded):
    dashboard_type: str
    config: dict[str, Any]


class ChartResponse(Succeeded):
    chart_type: Literal["line"] = "line"
    time_range: str
    data: dict[str, Any]
    config: dict[str, Any]


class KeyCreateRequest(Strict):
    name: str = Field(min_length=1, max_length=255)
    scopes: list[Literal["embeddings", "search", "workflows", "metrics", "admin"]] = Field(min_length=1, max_length=5)


class KeyList(Succeeded):
    keys: list[ApiKeyRecord]


class KeyCreatedResponse(Succeeded):
    key: ApiKeyCreated
