"""Index a corpus incrementally: stream documents in batches, embed only what changed, prune what is gone."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from contextlib import AsyncExitStack
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run

from citadel import progress
from citadel.documents import SourceGroup, SourceRoots
from citadel.indexing import (
    BatchPlan,
    EmbeddedBatch,
    IndexRun,
    ResolvedSource,
    WriteBatcher,
    WriteResult,
    batches_label,
    bluegreen,
    resolve_source,
)
from citadel.models import RunSummary
from citadel.resources import open_resources
from citadel.settings import EmbedderConfig, Settings, settings_for
from tasks.crashed import mark_flow_runs_crashed
from tasks.indexing import (
    check_store,
    delete_stale_documents,
    embed_chunks,
    plan_batch,
    prepare_collection,
    record_documents,
    resolve_dead_letters,
    switch_collection,
    upsert_vectors,
)
from tasks.limits import EarlySlot
from tasks.passing import as_is
from tasks.reporting import default_collection, report_index_run, run_name, run_tags, tag_flow_run


@flow(
    name="index-corpus",
    flow_run_name=run_name("index", "collection", default_collection),
    validate_parameters=True,
    # The summary is kept as JSON (never pickle) in the result storage, so run_deployment and
    # `citadel` read it back; a table artifact shows it in the UI and over the REST API.
    persist_result=True,
    result_serializer="json",
)
async def index_corpus(
    source: str | list[dict[str, Any]],
    collection: str | None = None,
    embedder: EmbedderConfig | None = None,
    full: bool = False,
    source_name: str = "inline",
    prune: bool | None = None,
    shard: int | None = None,
    shards: int | None = None,
    blue_green: bool = False,
    source_roots: list[str] | None = None,
) -> dict[str, Any]:
    """Index ``source`` (a directory, glob, file, or a list of ``{"id", "text", "metadata"}``) into
    ``collection``; returns the run summary (citadel.models.RunSummary as JSON): documents added,
    updated, unchanged, deleted, failed and repaired, chunks embedded, cache hits, duration.

    ``prune`` deletes documents of this source that it no longer holds; it defaults to true for
    directories and globs (listed completely) and false for inline lists. ``shard`` of ``shards``
    indexes (and prunes) only the files of one shard, for sub-runs of ``index-sharded``.

    A collection that is a blue-green alias is written through its live version. ``blue_green``
    builds the next version instead, from the whole source, and switches the alias to it once it
    passes its check; searches read the old version until then (citadel.indexing.bluegreen).

    ``source_roots`` sandboxes the run (the HTTP API's workflows): it reads only files inside
    those folders and files inline records only under an inline name (citadel.documents.sources).
    """
    logger = get_run_logger()
    settings = settings_for(embedder)
    collection = collection or settings.collection
    resolved = resolve_source(
        source, prune=prune, source_name=source_name, shard=shard, shards=shards, exclude=[settings.data_dir],
        roots=SourceRoots.of(source_roots) if source_roots is not None else None,
    )
    labels = run_tags(settings, collection)
    await tag_flow_run(labels)
    alias = collection
    async with open_resources(settings) as resources, AsyncExitStack() as slot:
        if blue_green:  # held from the choice of the version to the switch
            await slot.enter_async_context(bluegreen.locked(resources, alias))
        collection = await (bluegreen.next_version if blue_green else bluegreen.live_collection)(resources, alias)
        full = full or blue_green
        with tags(*labels):
            await prepare_collection.with_options(task_run_name=f"prepare {collection}")(settings, collection)
            async with IndexRun(resources, collection, resolved, flow_run_id=str(flow_run.id) if flow_run.id else None) as run:
                await mark_flow_runs_crashed(run.crashed)
                run.store = await check_store.with_options(task_run_name=f"check the store of {collection}")(settings, collection)
                await _index_batches(settings, collection, resolved, full, run, slot)
            summary = run.summary
            assert summary is not None
            if blue_green:
                summary = await _switch(settings, alias, summary)
    logger.info(
        "indexed %s: %d added, %d updated, %d unchanged, %d deleted, %d failed, %d repaired, %d chunks embedded in %.2fs",
        collection, summary.added, summary.updated, summary.unchanged, summary.deleted, summary.failed, summary.repaired,
        summary.chunks_embedded, summary.duration_s,
    )
    for warning in summary.warnings:
        logger.warning(warning)
    await report_index_run(summary, run.failures)
    return summary.to_json()


# Batches read and planned by one step while they hold less than a write's worth of changes (an
# edited corpus). Each task run costs the Prefect server about 35 ms of CPU: 0.3 s less per edited
# run of 3,000 documents, measured. A step after one that filled a write reads a single batch, so
# a first index holds no more planned chunks than with a step per batch.
GROUPS_PER_PLAN_STEP = 4

# While the store is still opening (an embedded store loads every point, seconds at tens of
# thousands), planning and embedding go on ahead of the writes, up to this much in memory.
AHEAD_WHILE_OPENING_BATCHES = 8
AHEAD_WHILE_OPENING_CHUNKS = 10_000


async def _index_batches(
    settings: Settings, collection: str, resolved: ResolvedSource, full: bool, run: IndexRun, slot: AsyncExitStack
) -> None:
    """Every batch of the source, embedding batch n + 1 while batch n is written; then the prune.

    The changed documents of consecutive batches are gathered into one write (an edited corpus
    has a few in each), and the store starts opening as soon as a batch has any.

    Writes run one after another, in batch order. Once the store is open the loop waits for the
    write of batch n before starting that of n + 1; while it is opening, up to a bound of batches
    wait for it already embedded, so the time an embedded store takes to load is spent embedding.
    The prune needs only the complete listing: it takes its turn among the writes as soon as the
    last batch is planned, while that batch embeds. Dead letters are resolved once every
    embedding is done (a failed embedding keeps its document's).
    """
    pending: deque[tuple[asyncio.Task[WriteResult], int]] = deque()  # (the write, its chunks)
    tail: asyncio.Task[Any] | None = None  # the last write or prune started: the next one waits for it
    prune: asyncio.Task[int] | None = None

    def waiting_too_much() -> bool:
        if run.resources.store_opened:
            return True
        chunks = sum(size for _, size in pending)
        return len(pending) >= AHEAD_WHILE_OPENING_BATCHES or chunks >= AHEAD_WHILE_OPENING_CHUNKS

    # One slot of the backend's global limit, asked for when a batch first has changes (an
    # unchanged run never asks) and held until the run ends.
    embedding = EarlySlot(settings)
    slot.push_async_callback(embedding.aclose)
    batcher = WriteBatcher(settings.document_batch_size, settings.document_batch_bytes)

    async def embed_and_write(gathered: tuple[BatchPlan, str]) -> None:
        nonlocal tail
        plan, label = gathered
        if plan.documents:
            await embedding.wait()
            name = f"embed {plan.chunk_count} chunks of {len(plan.documents)} documents ({label})"
            embedded = await embed_chunks.with_options(task_run_name=name)(settings, collection, as_is(plan))
        else:
            embedded = EmbeddedBatch(plan, [])
        run.count_embedded(embedded)
        # Embedding this batch overlapped with writing the ones before it.
        while pending and (pending[0][0].done() or waiting_too_much()):
            run.counts.add_written(await pending.popleft()[0])
        if embedded.plan.documents or embedded.plan.failures:
            write = asyncio.create_task(_write(settings, collection, embedded, label, tail))
            pending.append((write, embedded.plan.chunk_count))
            tail = write

    try:
        source, first, size = iter(resolved.groups(settings)), 1, 1
        while groups := list(itertools.islice(source, size)):
            plans, added = await plan_batch.with_options(task_run_name=f"plan {_plan_label(first, groups)}")(
                settings, collection, as_is(groups), resolved.key, as_is(run.seen), full
            )
            run.seen.merge(added)
            for number, (group, plan) in enumerate(zip(groups, plans, strict=True), start=first):
                run.counts.unchanged += plan.unchanged
                if plan.documents:  # the store opens and the slot is asked for while later batches are planned
                    run.resources.open_store_in_background()
                    embedding.ask()
                gathered = batcher.add(plan, number)
                if gathered:
                    await embed_and_write(gathered)
                progress.report(group.done, group.total, "indexing")
            first += len(groups)
            size = 1 if any(batcher.fills(plan) for plan in plans) else GROUPS_PER_PLAN_STEP
        if resolved.prune:
            prune = tail = asyncio.create_task(_prune(settings, collection, resolved, run, tail))
        gathered = batcher.take()
        if gathered:
            await embed_and_write(gathered)
        while pending:
            run.counts.add_written(await pending.popleft()[0])
        if prune is not None:
            run.counts.deleted = await prune
            if resolved.shard is None and await (await run.resources.registry()).has_dead_letters(collection, resolved.key):
                resolve = resolve_dead_letters.with_options(task_run_name=f"resolve the dead letters of {resolved.key[-80:]}")
                await resolve(settings, collection, resolved.key, as_is(run.seen))
    except Exception:
        # Let the batches already embedded finish writing, so the next run re-embeds less.
        await asyncio.gather(*(write for write, _ in pending), *([prune] if prune else []), return_exceptions=True)
        pending.clear()
        raise
    finally:
        started = [write for write, _ in pending] + ([prune] if prune and not prune.done() else [])
        for write in started:  # cancelled or interrupted: stop at once, the next run repairs
            write.cancel()
        await asyncio.gather(*started, return_exceptions=True)


def _plan_label(first: int, groups: list[SourceGroup]) -> str:
    """What a plan step reads, for its task run's name: ``1,024 files (batches 1-4)``."""
    files = sum(len(group.paths) for group in groups)
    records = sum(len(group.records) for group in groups)
    what = f"{files:,} files" if files or not records else f"{records:,} records"
    return f"{what} ({batches_label(first, first + len(groups) - 1)})"


async def _switch(settings: Settings, alias: str, summary: RunSummary) -> RunSummary:
    """Switch ``alias`` to the version just built, unless documents failed (it would lack them)."""
    if summary.failed:
        return summary.model_copy(update={"warnings": [*summary.warnings, bluegreen.not_switched(alias, summary)]})
    step = switch_collection.with_options(task_run_name=f"switch {alias} to {summary.collection}")
    report = await step(settings, alias, summary.collection)
    return summary.model_copy(update={"switch": report})


async def _prune(settings: Settings, collection: str, resolved: ResolvedSource, run: IndexRun, after: asyncio.Task[Any] | None) -> int:
    """Delete what the source no longer holds, after the write before it (one writer at a time)."""
    if after is not None:
        await after
    step = delete_stale_documents.with_options(task_run_name=f"delete what {resolved.key[-80:]} no longer holds")
    deleted: int = await step(settings, collection, resolved.key, as_is(run.seen), resolved.shard)
    return deleted


async def _write(
    settings: Settings, collection: str, batch: EmbeddedBatch, label: str, after: asyncio.Task[Any] | None
) -> WriteResult:
    """The two write steps of a batch, in order: the points, then the registry; after the write (or
    prune) before it (a store takes one writer at a time, and a failed write stops the ones after)."""
    if after is not None:
        await after
    points = sum(len(d.ids) for d in batch.plan.documents)
    await upsert_vectors.with_options(task_run_name=f"upsert {points} points ({label})")(settings, collection, as_is(batch))
    record = record_documents.with_options(task_run_name=f"record {len(batch.plan.documents)} documents ({label})")
    written: WriteResult = await record(settings, collection, as_is(batch))
    return written
