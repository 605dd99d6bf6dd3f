"""Citadel's own Prefect events: what an operator's automations react to.

Each event's resource is the collection (``citadel.collection.<name>``) or, for a change on disk,
the source (``citadel.source.<path>``); the source and the flow run are related resources, and the
payload carries the counts. Prefect's events worker adds the run's flow, deployment and tags.
An event never fails a run: one that cannot be sent is a warning in the log. No payload holds a
secret: error messages are redacted, and settings are never sent.

    citadel.index.completed      an index run ended (payload: its counters)
    citadel.index.failed         an index run failed or crashed (payload: the state and its message)
    citadel.document.failed      a run sent documents to the dead letters (one per run, with the count)
    citadel.collection.switched  a blue-green build became the live version of its alias
    citadel.store.repaired       a run wrote again what the vector store had lost
    citadel.source.changed       files of a watched source changed and settled (``citadel watch``)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from prefect.events import emit_event

from citadel.logs import redact
from citadel.models import RunSummary, SwitchReport
from citadel.registry import DeadLetter

log = logging.getLogger(__name__)

INDEX_COMPLETED = "citadel.index.completed"
INDEX_FAILED = "citadel.index.failed"
DOCUMENT_FAILED = "citadel.document.failed"
COLLECTION_SWITCHED = "citadel.collection.switched"
STORE_REPAIRED = "citadel.store.repaired"
SOURCE_CHANGED = "citadel.source.changed"
LISTED_FAILURES = 20
"""Dead letters named in a ``citadel.document.failed`` payload; `citadel status` lists them all."""


def collection_resource(name: str) -> dict[str, str]:
    """The collection (an alias for blue-green ones) as an event's resource."""
    return {"prefect.resource.id": f"citadel.collection.{name}", "prefect.resource.name": name, "citadel.collection": name}


def source_resource(source: str, collection: str | None = None) -> dict[str, str]:
    """A source (a folder, glob, file, s3:// prefix or inline name) as an event's resource."""
    source = redact(source)
    labels = {"prefect.resource.id": f"citadel.source.{source}", "prefect.resource.name": source, "citadel.source": source}
    if collection:
        labels["citadel.collection"] = collection
    return labels


def related(resource: dict[str, str], role: str) -> dict[str, str]:
    """``resource`` as a related resource with ``role``."""
    return {**resource, "prefect.resource.role": role}


def flow_run_related(flow_run_id: str | None, name: str | None = None) -> list[dict[str, str]]:
    """The flow run as a related resource (none outside a run)."""
    if not flow_run_id:
        return []
    labels = {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}
    if name:
        labels["prefect.resource.name"] = name
    return [labels]


def emit(event: str, resource: dict[str, str], related: Sequence[dict[str, str]] = (), payload: dict[str, Any] | None = None) -> bool:
    """Send one event to the Prefect API; False (and a warning) when it could not be sent."""
    try:
        sent = emit_event(event, resource=resource, related=list(related), payload=payload or {})
    except Exception as exc:  # noqa: BLE001 - an event must never fail a run
        log.warning("could not emit the event %s: %s", event, redact(str(exc)))
        return False
    return sent is not None


def emit_index_events(summary: RunSummary, collection: str, failures: Sequence[DeadLetter] = ()) -> None:
    """The events of a finished index run into ``collection`` (the alias a blue-green run built a
    version of): completed, and document failures and store repairs when there were some."""
    resource = collection_resource(collection)
    links = [related(source_resource(summary.source), "source"), *flow_run_related(summary.flow_run_id)]
    counts = summary.counts().to_json()
    emit(INDEX_COMPLETED, resource, links, {
        **counts, "documents_seen": summary.documents_seen, "duration_s": summary.duration_s, "model": summary.model,
        "version": summary.collection, "source": redact(summary.source), "run_id": summary.run_id,
        "store_drift": bool(summary.store and summary.store.drift), "warnings": len(summary.warnings),
    })
    if summary.failed:
        listed = [{"document_id": f.document_id, "stage": f.stage} for f in failures[:LISTED_FAILURES]]
        emit(DOCUMENT_FAILED, resource, links, {"count": summary.failed, "documents": listed, "run_id": summary.run_id})
    store = summary.store
    if summary.repaired or (store is not None and store.drift):
        emit(STORE_REPAIRED, resource, links, {
            "documents": summary.repaired, "missing": store.missing if store else 0, "stray": store.stray if store else 0,
            "version": summary.collection, "run_id": summary.run_id,
        })


def emit_switched(report: SwitchReport, flow_run_id: str | None = None) -> None:
    """A blue-green switch: the alias now reads ``report.live`` (``report.previous`` kept for rollback)."""
    emit(COLLECTION_SWITCHED, collection_resource(report.collection), flow_run_related(flow_run_id), report.to_json())


def emit_source_changed(source: str, collection: str, changes: int, examples: Sequence[str] = ()) -> bool:
    """Files of ``source`` changed and settled: the on-change deployment indexes it into ``collection``."""
    return emit(
        SOURCE_CHANGED, source_resource(source, collection), [related(collection_resource(collection), "collection")],
        {"changes": changes, "paths": [redact(p) for p in examples[:LISTED_FAILURES]]},
    )


def index_failed_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """A flow hook (``on_failure``, ``on_crashed``): ``citadel.index.failed`` for the run's
    collection and source, with the state's message (redacted)."""
    parameters = dict(getattr(flow_run, "parameters", None) or {})
    try:
        collection = parameters.get("collection") or _default_collection()
        source = parameters.get("source")
        source_name = source if isinstance(source, str) else str(parameters.get("source_name") or "inline")
        links = [related(source_resource(source_name), "source"), *flow_run_related(str(flow_run.id), flow_run.name)]
        emit(INDEX_FAILED, collection_resource(collection), links, {
            "flow": getattr(flow, "name", ""), "state": getattr(state, "name", ""), "flow_run_name": flow_run.name,
            "source": redact(source_name),
            "message": redact(str(getattr(state, "message", "") or ""))[:1000],
        })
    except Exception as exc:  # noqa: BLE001 - a hook that raises would hide the run's own failure
        log.warning("could not emit the event %s: %s", INDEX_FAILED, redact(str(exc)))


def _default_collection() -> str:
    from citadel.settings import Settings

    return Settings().collection
