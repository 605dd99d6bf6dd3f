"""Figures of the service and the engine, all measured or recorded: psutil for the host, this
process's own counters for the API, the registry's runs for indexing. An empty range is empty."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import psutil
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.errors import ERROR_RESPONSES, ApiError
from api.metrics import exposition
from api.schemas import MetricsResponse, SystemMetrics
from api.security import Caller, require
from api.state import ServiceState, State
from citadel.auth import Identity
from citadel.models import IndexRunRecord

router = APIRouter(tags=["metrics"], dependencies=[Depends(require("metrics"))], responses=ERROR_RESPONSES)

RANGES = {"5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "12h": 12 * 3600, "24h": 86400, "7d": 7 * 86400}
# The enum is documented; a value outside it is the route's 400, which names the ranges.
TIME_RANGE = Query("1h", description=f"One of {', '.join(RANGES)}.", json_schema_extra={"enum": list(RANGES)})


def range_seconds(time_range: str) -> int:
    if time_range not in RANGES:
        raise ApiError(400, f"time_range {time_range!r} is not one of {', '.join(RANGES)}", code="bad_time_range")
    return RANGES[time_range]


async def runs_in_range(state: ServiceState, seconds: int, identity: Identity) -> list[IndexRunRecord]:
    """The runs of the last ``seconds`` into the collections ``identity`` reaches."""
    registry = await state.resources.registry()
    runs = await registry.runs_since(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))
    return [run for run in runs if identity.reaches(run.collection)]


@router.get("/metrics/system", response_model=SystemMetrics, summary="CPU, memory and disk of the host (psutil)")
async def system(state: State) -> SystemMetrics:
    data_dir = state.settings.data_dir
    path = data_dir if data_dir.exists() else data_dir.resolve().anchor
    return SystemMetrics(
        cpu_percent=psutil.cpu_percent(interval=None), memory_percent=psutil.virtual_memory().percent,
        disk_percent=psutil.disk_usage(str(path)).percent, timestamp=dt.datetime.now(dt.UTC).isoformat(),
    )


@router.get("/metrics/embeddings", response_model=MetricsResponse, summary="Embedding figures of a time range")
async def embeddings(state: State, identity: Caller, time_range: str = TIME_RANGE) -> MetricsResponse:
    """The API's own embedding figures, and the indexing runs' of the collections the caller reaches."""
    seconds = range_seconds(time_range)
    usage = state.embedding.usage.total(time.time() - seconds)
    runs = [run for run in await runs_in_range(state, seconds, identity) if run.status != "running"]
    embedded = sum(run.chunks_embedded for run in runs)
    run_seconds = sum(run.duration_s or 0.0 for run in runs)
    api: dict[str, Any] = {
        "requests": usage.requests, "texts": usage.texts, "cache_hits": usage.cached, "texts_embedded": usage.computed,
        "errors": usage.errors,
        "cache_hit_ratio": round(usage.cached / usage.texts, 4) if usage.texts else None,
        "mean_latency_ms": round(usage.seconds / usage.requests * 1000, 3) if usage.requests else None,
    }
    batching = state.embedding.batchers[state.embedding.default_model].stats
    indexing: dict[str, Any] = {
        "runs": len(runs), "failed_runs": sum(run.status != "completed" for run in runs),
        "chunks_embedded": embedded, "cache_hits": sum(run.cache_hits for run in runs),
        "chunks_per_second": round(embedded / run_seconds, 2) if run_seconds else None,
    }
    return MetricsResponse(time_range=time_range, metrics={
        "api": api, "indexing": indexing, "models": state.embedding.models,
        "micro_batching_since_start": {"batches": batching.batches, "texts": batching.texts, "shared": batching.shared},
    })


EXPOSITION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}
}


@router.get("/metrics/prometheus", summary="The Prometheus exposition", response_class=Response, responses=EXPOSITION_RESPONSES)
async def prometheus(state: State, identity: Caller) -> Response:
    """Every series to a caller that reaches every collection; to another, those without a
    ``collection`` label and those of the collections it reaches."""
    body, content_type = await exposition(state)
    if not identity.reaches_every_collection:
        body = reached_series(body, identity)
    return Response(body, media_type=content_type)


_LABEL = re.compile(rb'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?\s*')


def reached_series(text: bytes, identity: Identity) -> bytes:
    """The exposition ``text`` without the samples labelled with a collection ``identity`` does not
    reach (HELP and TYPE lines stay: they name no collection). A sample whose labels do not parse is
    left out too: what it names cannot be told."""
    kept = []
    for line in text.split(b"\n"):
        named = [] if line.startswith(b"#") else _collections_of(line)
        if named is not None and all(identity.reaches(collection) for collection in named):
            kept.append(line)
    return b"\n".join(kept)


def _collections_of(line: bytes) -> list[str] | None:
    """The values of a sample line's ``collection`` labels, read label by label (a value may hold
    any text, escaped); None when the labels do not parse."""
    position = line.find(b"{")
    if position < 0:
        return []
    position += 1
    found = []
    while not line.startswith(b"}", position):
        label = _LABEL.match(line, position)
        if label is None:
            return None
        if label.group(1) == b"collection":
            found.append(_unescape(label.group(2)))
        position = label.end()
    return found


def _unescape(value: bytes) -> str:
    """A label value as written in the text format (backslash, quote and newline escaped)."""
    return re.sub(rb"\\(.)", lambda m: b"\n" if m.group(1) == b"n" else m.group(1), value).decode("utf-8", "replace")
