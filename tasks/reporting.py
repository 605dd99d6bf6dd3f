"""What a run shows in the Prefect UI: a readable name, tags, and artifacts of what it did.

Artifacts are keyed per collection (or workflow), so the UI's artifact page keeps each one's
history; their data is plain JSON, readable over Prefect's REST API (``/api/artifacts/filter``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import PrefectHTTPStatusError
from prefect.runtime import flow_run
from prefect.states import Completed

from citadel.models import IndexRunRecord, RunSummary, SearchResults, ShardedRunSummary, WorkflowReport
from citadel.registry import DeadLetter
from citadel.settings import Settings
from citadel.words import plural
from citadel.workflows import summarize_output

log = logging.getLogger(__name__)

SNIPPET = 160


def artifact_key(kind: str, name: str) -> str:
    """``index-docs-v2`` from ``("index", "Docs_v2")``: artifact keys allow lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "default"
    return f"{kind}-{slug}"[:255]


def completed(result: dict[str, Any], failed: int) -> dict[str, Any]:
    """A run's result, in a ``Completed`` state named for its failed documents when it has any
    ("Completed with 3 failed documents"): the UI says what happened, and it stays a success for
    retries, schedules and callers, who read ``result`` as from any run."""
    if not failed:
        return result
    documents = plural(failed, "failed document")
    name, message = f"Completed with {documents}", f"{documents}: see the run's dead-letters artifact"
    state: State[dict[str, Any]] = Completed(data=result, name=name, message=message)
    return cast(dict[str, Any], state)  # a flow returning a state ends in it; its caller gets ``result``


def run_tags(settings: Settings, collection: str | None = None) -> list[str]:
    """Tags that let the UI filter runs by collection and embedder."""
    tags = [f"embedder:{settings.embedder}"]
    if collection:
        tags.insert(0, f"collection:{collection}")
    return tags


async def tag_flow_run(tags: Sequence[str]) -> None:
    """Add ``tags`` to the running flow run (a flow's own tags are fixed when it is declared)."""
    if not flow_run.id:
        return
    try:
        async with get_client() as client:
            current = await client.read_flow_run(uuid.UUID(flow_run.id))
            await client.update_flow_run(current.id, tags=sorted({*current.tags, *tags}))
    except Exception as exc:  # noqa: BLE001 - a missing tag must never fail a run
        log.warning("could not tag flow run %s: %s", flow_run.id, exc)


async def report_index_run(summary: RunSummary, failures: Sequence[DeadLetter]) -> None:
    """The run's summary as a table, and its dead letters with their reasons as markdown."""
    row = {
        **summary.counts().to_json(),
        "duration_s": summary.duration_s,
        "source": summary.source,
        "model": summary.model,
        "store_drift": bool(summary.store and summary.store.drift),
    }
    await save_artifact("index", lambda: acreate_table_artifact(
        [row], key=artifact_key("index", summary.collection),
        description=f"What indexing {summary.source} into {summary.collection} did",
    ))
    if failures:
        lines = [f"# Dead letters of {summary.collection}", "", "| document | stage | reason |", "|---|---|---|"]
        lines += [f"| `{_cell(f.document_id)}` | {f.stage} | {_cell(f.error)} |" for f in failures]
        if summary.failed > len(failures):
            lines.append(f"\n... and {summary.failed - len(failures)} more: `citadel status` lists them.")
        await save_artifact("dead-letters", lambda: acreate_markdown_artifact(
            "\n".join(lines), key=artifact_key("dead-letters", summary.collection),
            description="Documents this run could not index, retried on the next run",
        ))


async def report_search(query: str, collection: str, found: SearchResults) -> None:
    """The top hits of a search as a table, and the mode that ranked them."""
    hits = found.hits
    rows: list[dict[str, Any]] = [
        {"rank": rank, "score": round(hit.score, 4), "document": hit.document_id, "chunk": hit.chunk_index,
         "text": " ".join(str(hit.text or "").split())[:SNIPPET]}
        for rank, hit in enumerate(hits, start=1)
    ]
    await save_artifact("search", lambda: acreate_table_artifact(
        rows or [{"rank": None, "score": None, "document": "no hits", "chunk": None, "text": ""}],
        key=artifact_key("search", collection), description=f"Top hits for {query[:200]!r} ({found.mode} search)",
    ))


async def report_sharded_run(summary: ShardedRunSummary, runs: Sequence[FlowRun], recorded: Sequence[IndexRunRecord]) -> None:
    """A row per shard: its run's name and final state, and what it did (from the registry)."""
    by_run = {record.flow_run_id: record for record in recorded}
    rows = []
    for run in runs:
        record = by_run.get(str(run.id))
        counts = record.counts().to_json() if record else {}
        rows.append({"shard run": run.name, "state": run.state.name if run.state else "unknown", **counts, "flow_run_id": str(run.id)})
    await save_artifact("index-sharded", lambda: acreate_table_artifact(
        rows, key=artifact_key("index-sharded", summary.collection),
        description=f"The {plural(summary.shards, 'shard')} of indexing {summary.source} into {summary.collection}",
    ))


async def report_workflow(report: WorkflowReport) -> None:
    """Each step's state, time and output (or error), as a table."""
    rows = [
        {"step": step_id, "state": step.state, "cached": step.cached, "seconds": step.duration_s,
         "output or error": summarize_output(step.error or step.output)}
        for step_id, step in report.steps.items()
    ]
    await save_artifact("workflow", lambda: acreate_table_artifact(
        rows, key=artifact_key("workflow", report.workflow_id or "workflow"),
        description=f"Steps of workflow {report.workflow_id}",
    ))


ARTIFACT_ATTEMPTS = 3


async def save_artifact(kind: str, create: Callable[[], Awaitable[Any]]) -> None:
    """Save a run's summary artifact. It shows the run in the UI but is not its result (the result
    holds the same summary), so a Prefect server's error is tried again and, if it stays, logged
    instead of failing a run whose work is done (seen: a 500 on /artifacts/ under load)."""
    for attempt in range(1, ARTIFACT_ATTEMPTS + 1):
        try:
            await create()
            return
        except PrefectHTTPStatusError as exc:
            status = exc.response.status_code
            if status < 500:
                raise
            if attempt == ARTIFACT_ATTEMPTS:
                log.warning("the %s artifact was not saved: the Prefect server answered %s %s times", kind, status, attempt)
                return
            await asyncio.sleep(0.5 * attempt)


def _cell(text: str) -> str:
    """Text fit for a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")[:300]
