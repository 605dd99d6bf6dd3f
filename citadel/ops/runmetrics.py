"""Indexing metrics derived at scrape time from the registry: durable counters that every process
reports alike, whichever process ran the work and whether it still exists.

A scrape reads the run totals (one row per collection, source and end status), the dead letters
per collection and the collections the registry knows: a few rows, never every run recorded (only
the first end of a collection whose totals just changed).
"""

from __future__ import annotations

import datetime as dt

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from citadel.registry import Registry, RunTotals

END_STATUSES = ("completed", "failed", "cancelled", "crashed")
DOCUMENT_OUTCOMES = ("added", "updated", "unchanged", "deleted", "failed", "repaired")
CHUNK_OUTCOMES = {
    "embedded": "chunks_embedded", "written": "chunks_written", "reused": "chunks_reused", "cache_hit": "cache_hits",
    "deleted": "points_deleted",
}


async def registry_families(registry: Registry, *, hold_new_s: float = 0.0) -> list[Metric]:
    """The indexing runs, documents, chunks, durations, last successes and dead letters.

    Every collection the registry knows has every counter from zero on, and a collection whose first
    run ended less than ``hold_new_s`` ago still shows its zeros: Prometheus then sees the series at 0
    before its first count (a series born at 1 hides that run from ``increase()``). The API holds them
    for a few scrape intervals; 0 gives the counts as they are.
    """
    totals = await registry.run_totals()
    waiting = await registry.dead_letter_counts()
    known = {row.collection for row in totals} | set(waiting) | await registry.known_collections()
    held = await _new_collections(registry, totals, hold_new_s)
    last_success = GaugeMetricFamily("citadel_index_last_success_timestamp_seconds",
                                     "When the last completed run of a collection and source ended (Unix time).",
                                     labels=["collection", "source"])
    for row in totals:
        if row.status == "completed":
            last_success.add_metric([row.collection, row.source], row.last_finished_at.timestamp())
    counters = _counter_families([row for row in totals if row.collection not in held], known)
    dead = GaugeMetricFamily("citadel_dead_letters", "Documents waiting in the dead letters.", labels=["collection"])
    for collection in sorted(known):
        dead.add_metric([collection], waiting.get(collection, 0))
    return [*counters, last_success, dead]


async def _new_collections(registry: Registry, totals: list[RunTotals], hold_s: float) -> set[str]:
    """The collections whose first run ended less than ``hold_s`` ago (only those with a recent run are asked about)."""
    if hold_s <= 0:
        return set()
    now = dt.datetime.now(dt.UTC)
    recent = sorted({row.collection for row in totals if (now - row.last_finished_at).total_seconds() < hold_s})
    if not recent:
        return set()
    return {name for name, ended in (await registry.first_run_ends(recent)).items() if (now - ended).total_seconds() < hold_s}


def _counter_families(totals: list[RunTotals], known: set[str]) -> list[Metric]:
    """Runs by end status, documents and chunks by outcome, run durations and points written, with
    zeros for every label set of every known collection."""
    runs = CounterMetricFamily("citadel_index_runs", "Indexing runs that ended, by end status.", labels=["collection", "status"])
    documents = CounterMetricFamily("citadel_index_documents", "Documents indexing runs handled, by outcome.",
                                    labels=["collection", "outcome"])
    chunks = CounterMetricFamily("citadel_index_chunks", "Chunks indexing runs handled, by outcome.", labels=["collection", "outcome"])
    duration = SummaryMetricFamily("citadel_index_run_duration_seconds", "Time indexing runs took.", labels=["collection"])
    by_status: dict[tuple[str, str], int] = {(c, status): 0 for c in known for status in END_STATUSES}
    by_document: dict[tuple[str, str], int] = {(c, outcome): 0 for c in known for outcome in DOCUMENT_OUTCOMES}
    by_chunk: dict[tuple[str, str], int] = {(c, outcome): 0 for c in known for outcome in CHUNK_OUTCOMES}
    seconds: dict[str, float] = dict.fromkeys(known, 0.0)
    for row in totals:
        by_status[row.collection, row.status] += row.runs
        for outcome in DOCUMENT_OUTCOMES:
            by_document[row.collection, outcome] += getattr(row, outcome)
        for outcome, column in CHUNK_OUTCOMES.items():
            by_chunk[row.collection, outcome] += getattr(row, column)
        seconds[row.collection] += row.duration_s
    for (collection, status), count in sorted(by_status.items()):
        runs.add_metric([collection, status], count)
    for (collection, outcome), count in sorted(by_document.items()):
        documents.add_metric([collection, outcome], count)
    for (collection, outcome), count in sorted(by_chunk.items()):
        chunks.add_metric([collection, outcome], count)
    for collection, spent in sorted(seconds.items()):
        ended = sum(count for (name, _), count in by_status.items() if name == collection)
        duration.add_metric([collection], count_value=ended, sum_value=spent)
    return [runs, documents, chunks, duration]
