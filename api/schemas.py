"""Request and response bodies of ``/api/v1``: strict (unknown fields refused), bounded, and built
on the core's typed results where one exists."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

from citadel.auth import KEY_NAME_PATTERN
from citadel.models import ApiKeyCreated, ApiKeyRecord, AuditEntry, SearchHit, WorkflowReport
from citadel.settings import SearchMode
from citadel.store import FILTER_KEY_MAX, FILTER_KEY_PATTERN, INT64_MAX, INT64_MIN, filter_key_problem, filter_value_problem

# Hard upper bounds of the schema; the configured (smaller or equal) ones are checked per request.
MAX_TEXT_CHARS = 1_000_000
MAX_BATCH_TEXTS = 10_000


def unicode_text(value: str) -> str:
    """``value`` when it is Unicode text. JSON can carry a lone UTF-16 surrogate (``"\\ud800"``),
    which no backend, cache or database can encode: refused here, before it reaches any of them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"character {exc.start} is a lone UTF-16 surrogate (U+{ord(value[exc.start]):04X}), which is not Unicode text: "
            "send valid UTF-8 (pair the surrogate or drop it)"
        ) from None
    return value


def unicode_problems(value: Any, limit: int = 20) -> list[dict[str, str]]:
    """Where a JSON value read as a plain dict (a workflow) holds a string or a key that is not
    Unicode text, as the schema's 422 details say it: walked without recursion, at most ``limit``."""
    problems: list[dict[str, str]] = []
    pending: list[tuple[str, Any]] = [("body", value)]
    while pending and len(problems) < limit:
        where, item = pending.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                # The location repeats the key, escaped: a lone surrogate cannot be written into the answer.
                shown = f"{where}.{str(key).encode('utf-8', 'backslashreplace').decode()}"
                pending.append((shown, child))
                pending.append((shown, str(key)))
        elif isinstance(item, list):
            pending.extend((f"{where}.{index}", child) for index, child in enumerate(item))
        elif isinstance(item, str):
            try:
                unicode_text(item)
            except ValueError as exc:
                problems.append({"location": where, "message": f"Value error, {exc}", "type": "value_error"})
    return problems


def _unicode_input(value: Any) -> Any:
    return unicode_text(value) if isinstance(value, str) else value


# Every string of a request body is Unicode text (checked before the length, which needs it).
Text = Annotated[str, BeforeValidator(_unicode_input)]

COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
# Checked by the routes with a 400 that says what is missing; documented as patterns (unanchored:
# somewhere in the text). Python's \w is Unicode, as the check (str.isalnum) is.
SOME_TEXT = r"\S"
SOME_WORD = r"[^\W_]"


def filter_value(value: Any) -> str | bool | int | float:
    """A value to match, by the core's rules (a string, a boolean, or a finite number within 64-bit
    integers), with a float bounded as an integer is: the documented schema cannot tell them apart."""
    if isinstance(value, str):
        return unicode_text(value)
    problem = filter_value_problem(value)
    if problem is None and isinstance(value, float) and not INT64_MIN <= value <= INT64_MAX:
        problem = f"{value} is beyond 64-bit integers, which the vector store holds; give a number from {INT64_MIN} to {INT64_MAX}"
    if problem:
        raise ValueError(problem)
    return cast("bool | int | float", value)  # what the core accepts, strings aside


def filter_key(value: str) -> str:
    """A payload field the vector store can address, checked by the core's own pattern (Python's re, as the search does)."""
    problem = filter_key_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def key_name(value: str) -> str:
    if not re.fullmatch(KEY_NAME_PATTERN, value):
        raise ValueError("a key name needs a visible character and no control character (NUL, newline, tab): use printable text")
    return value


Filter = Annotated[
    dict[Annotated[str, AfterValidator(filter_key)], Annotated[Any, PlainValidator(filter_value)]],
    WithJsonSchema({
        "type": "object", "maxProperties": 16, "propertyNames": {"pattern": FILTER_KEY_PATTERN, "maxLength": FILTER_KEY_MAX},
        "additionalProperties": {"anyOf": [
            {"type": "string"}, {"type": "boolean"}, {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
            {"type": "number", "minimum": INT64_MIN, "maximum": INT64_MAX},
        ]},
    }),
]


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
    text: Text = Field(
        min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": SOME_TEXT},
        description="At most CITADEL_API_MAX_TEXT_CHARS characters, not only whitespace.",
    )
    model: Text | None = Field(None, max_length=255, description="A served model; default: the configured one.")
    cache_enabled: bool = Field(True, description="Read the embedding cache first (results are cached either way).")


class GenerateResponse(Succeeded):
    embedding: list[float]
    model: str
    dimensions: int
    cached: bool
    duration_ms: float


class BatchRequest(Strict):
    texts: list[Annotated[Text, Field(json_schema_extra={"pattern": SOME_TEXT})]] = Field(
        min_length=1, max_length=MAX_BATCH_TEXTS, description="At most CITADEL_API_MAX_BATCH_TEXTS texts of CITADEL_API_MAX_TEXT_CHARS."
    )
    model: Text | None = Field(None, max_length=255)
    batch_size: int | None = Field(None, gt=0, le=1024, description="Accepted for compatibility; the service batches itself.")
    cache_enabled: bool = True


class BatchResponse(Succeeded):
    embeddings: list[list[float]]
    model: str
    dimensions: int
    cached_count: int
    duration_ms: float


class SearchRequest(Strict):
    query: Text = Field(min_length=1, max_length=10_000, json_schema_extra={"pattern": SOME_WORD}, description="Some letter or digit.")
    # The pattern is checked by the route (a 400 naming the rules), documented here.
    collection: Text | None = Field(None, max_length=255, json_schema_extra={"pattern": COLLECTION_PATTERN})
    limit: int = Field(10, gt=0, le=100)
    threshold: float | None = Field(
        None, ge=-1.0, le=1000.0, description="Minimum score of a hit: its cosine similarity in dense mode, its BM25 "
        "score in sparse mode, its fused score (0 to 1 with the default convex fusion) in hybrid mode.",
    )
    filter: Filter | None = Field(
        None, max_length=16, description="Exact-match metadata filters: a payload field (dotted for a nested one) and its value."
    )
    group_by: Literal["chunk", "document"] = Field(
        "chunk", description="chunk: the nearest chunks; document: each document's nearest chunk, `limit` documents."
    )
    mode: SearchMode | None = Field(
        None, description="dense (the embedding's nearest chunks), sparse (the query's words, BM25) or hybrid (both, "
        "fused); default: the service's search_mode setting (hybrid).",
    )


class SearchResponse(Succeeded):
    query: str
    collection: str
    model: str
    mode: SearchMode = Field(
        description="The mode that ranked the hits: the one asked for, or dense for a collection without lexical vectors."
    )
    hits: list[SearchHit]
    reranked: bool = Field(False, description="Whether the reranker (CITADEL_RERANK_URL) ordered the hits.")
    warnings: list[str] = Field(default_factory=list, description="What the search did without: a reranker that failed, say.")
    duration_ms: float


class CollectionEntry(Strict):
    name: str = Field(description="What a search names: a collection, or the alias of a blue-green one.")
    model: str


class CollectionList(Succeeded):
    collections: list[CollectionEntry]
    search_mode: SearchMode = Field(description="The mode a search without one uses (the service's search_mode setting).")


class WorkflowSubmitted(Succeeded):
    task_id: str = Field(description="The Prefect flow run id.")
    name: str | None = Field(None, description="The flow run's name, final from its creation on (as the UI shows it).")
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


# Documented forms of a key's grants, tier and lifetimes, checked by the admin routes as a JSON
# Schema validator reads them (400 naming the rules). A source holds no comma (grants are stored
# comma-separated) and no control character (a NUL names no file and cannot be stored).
GRANT_PATTERN = r"^[A-Za-z0-9_.*?-]{1,255}$"
SOURCE_PATTERN = r"^(\*|(/|[sS]3://)[^,\x00-\x1f\x7f]*)$"
LIMITS_PATTERN = r"^[1-9][0-9]{0,8}/(second|minute|hour|day)(;[1-9][0-9]{0,8}/(second|minute|hour|day))*$"
TTL_PATTERN = r"^[1-9][0-9]{0,5}[smh]?$|^[1-9][0-9]{0,4}d$"
GRACE_PATTERN = r"^[0-9]{1,6}[smh]?$|^[0-9]{1,5}d$"


class KeyCreateRequest(Strict):
    name: Annotated[Text, AfterValidator(key_name)] = Field(
        min_length=1, max_length=255, json_schema_extra={"pattern": KEY_NAME_PATTERN},
        description="Some visible character, no control characters.",
    )
    scopes: list[Literal["embeddings", "search", "workflows", "metrics", "admin"]] = Field(min_length=1, max_length=5)
    collections: list[Annotated[Text, Field(max_length=255, json_schema_extra={"pattern": GRANT_PATTERN})]] | None = Field(
        None, max_length=100, description="Collection names or patterns (`*`, `?`) it reaches; none given: no collection. "
        "A blue-green collection's versions are reached through its name.",
    )
    sources: list[Annotated[Text, Field(max_length=1024, json_schema_extra={"pattern": SOURCE_PATTERN})]] | None = Field(
        None, max_length=100, description="Absolute folders and s3://bucket/prefix entries its workflows may read, inside the "
        "service's own (CITADEL_API_SOURCE_ROOTS / _BUCKETS), or `*` for all the service allows; none given: none.",
    )
    rate_limits: Text | None = Field(
        None, max_length=255, json_schema_extra={"pattern": LIMITS_PATTERN},
        description="Its own rate limits, e.g. `5/second;100/minute`, each within the service's (CITADEL_API_RATE_LIMITS); "
        "none given: the service's.",
    )
    expires_in: Text | None = Field(
        None, max_length=16, json_schema_extra={"pattern": TTL_PATTERN},
        description="How long it works: seconds, or a number with s, m, h or d (`90d`); none given: until revoked.",
    )


class KeyRotateRequest(Strict):
    grace: Text = Field(
        max_length=16, json_schema_extra={"pattern": GRACE_PATTERN},
        description="How long the old key keeps working: seconds, or a number with s, m, h or d (`1h`); `0`: it stops at once.",
    )


class KeyList(Succeeded):
    keys: list[ApiKeyRecord]


class KeyCreatedResponse(Succeeded):
    key: ApiKeyCreated


class KeyRotatedResponse(Succeeded):
    key: ApiKeyCreated = Field(description="The new key, its value included (shown this once).")
    replaced: ApiKeyRecord = Field(description="The old key: it works until its expires_at.")


class AuditList(Succeeded):
    entries: list[AuditEntry] = Field(description="Oldest first.")
