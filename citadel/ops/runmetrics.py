"""Indexing metrics derived at scrape time from the registry: durable counters that every process
reports alike, whichever process ran the work and whether it still exists.

A scrape reads the run totals (one row per collection, source and end status) and the dead letters
per collection: a few rows, never every run recorded.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from citadel.registry import Registry

END_STATUSES = ("completed", "failed", "cancelled", "crashed")
DOCUMENT_OUTCOMES = ("added", "updated", "unchanged", "deleted", "failed", "repaired")
CHUNK_OUTCOMES = {"embedded": "chunks_embedded", "written": "chunks_written", "reused": "chunks_reused", "cache_hit": "cache_hits"}


async def registry_families(registry: Registry) -> list[Metric]:
    """The indexing runs, documents, chunks, durations, last successes and dead letters."""
    totals = await registry.run_totals()
    waiting = await registry.dead_letter_counts()
    runs = CounterMetricFamily("citadel_index_runs", "Indexing runs that ended, by end status.", labels=["collection", "status"])
    documents = CounterMetricFamily("citadel_index_documents", "Documents indexing runs handled, by outcome.",
                                    labels=["collection", "outcome"])
    chunks = CounterMetricFamily("citadel_index_chunks", "Chunks indexing runs handled, by outcome.", labels=["collection", "outcome"])
    duration = SummaryMetricFamily("citadel_index_run_duration_seconds", "Time indexing runs took.", labels=["collection"])
    last_success = GaugeMetricFamily("citadel_index_last_success_timestamp_seconds",
                                     "When the last completed run of a collection and source ended (Unix time).",
                                     labels=["collection", "source"])
    by_status: dict[tuple[str, str], int] = defaultdict(int)
    by_document: dict[tuple[str, str], int] = defaultdict(int)
    by_chunk: dict[tuple[str, str], int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for row in totals:
        by_status[row.collection, row.status] += row.runs
        for outcome in DOCUMENT_OUTCOMES:
            by_document[row.collection, outcome] += getattr(row, outcome)
        for outcome, column in CHUNK_OUTCOMES.items():
            by_chunk[row.collection, outcome] += getattr(row, column)
        seconds[row.collection] += row.duration_s
        if row.status == "completed":
            last_success.add_metric([row.collection, row.source], row.last_finished_at.timestamp())
    # Every end status of every collection, zeros included: increase() then sees a collection's
    # first failed or crashed run, which a series born at 1 would hide from the alerts.
    known = {(collection, status): 0 for collection in {row.collection for row in totals} | set(waiting) for status in END_STATUSES}
    for (collection, status), count in sorted({**known, **by_status}.items()):
        runs.add_metric([collection, status], count)
    for (collection, outcome), count in sorted(by_document.items()):
        documents.add_metric([collection, outcome], count)
    for (collection, outcome), count in sorted(by_chunk.items()):
        chunks.add_metric([collection, outcome], count)
    for collection, spent in sorted(seconds.items()):
        ended = sum(count for (name, _), count in by_status.items() if name == collection)
        duration.add_metric([collection], count_value=ended, sum_value=spent)
    dead = GaugeMetricFamily("citadel_dead_letters", "Documents waiting in the dead letters.", labels=["collection"])
    for collection in sorted({row.collection for row in totals} | set(waiting)):
        dead.add_metric([collection], waiting.get(collection, 0))
    return [runs, documents, chunks, duration, last_success, dead]
