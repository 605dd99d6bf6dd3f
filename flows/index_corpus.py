"""Index a corpus incrementally: stream documents in batches, embed only what changed, prune what is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from logging import Logger, LoggerAdapter
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run

from citadel.documents import SourceRoots
from citadel.indexing import IndexRun, bluegreen, index_batches, resolve_source
from citadel.models import RunSummary
from citadel.registry import DeadLetter
from citadel.resources import open_resources
from citadel.settings import Settings
from flows.parameters import BlueGreen, Collection, Embedder, Folders, Full, IndexSource, Prune, Shard, Shards, SourceName
from tasks.crashed import mark_flow_runs_crashed
from tasks.events import emit_index_events, index_failed_hook
from tasks.index_steps import TaskSteps
from tasks.indexing import check_store, prepare_collection, switch_collection
from tasks.reporting import completed, report_index_run, run_tags, tag_flow_run
from tasks.run_names import flow_run_namer
from tasks.runsettings import run_settings


@flow(
    name="index-corpus",
    flow_run_name=flow_run_namer("index-corpus"),
    validate_parameters=True,
    # The summary is kept as JSON (never pickle) in the result storage, so run_deployment and
    # `citadel` read it back; a table artifact shows it in the UI and over the REST API.
    persist_result=True,
    result_serializer="json",
    on_failure=[index_failed_hook],  # citadel.index.failed, for the operator's automations
    on_crashed=[index_failed_hook],
)
async def index_corpus(
    source: IndexSource,
    collection: Collection = None,
    embedder: Embedder = None,
    full: Full = False,
    source_name: SourceName = "inline",
    prune: Prune = None,
    shard: Shard = None,
    shards: Shards = None,
    blue_green: BlueGreen = False,
    source_roots: Folders = None,
) -> dict[str, Any]:
    """Index a source into a collection incrementally; returns what it did (RunSummary as JSON).

    Args:
        source: A directory, glob or file on the worker, an s3://bucket/prefix (an object whose ETag
            and size did not change is not fetched), or a list of {"id", "text", "metadata"} records.
        collection: The collection to write (an alias: its live version); default CITADEL_COLLECTION.
        embedder: The embedder to use instead of the worker's configured one (its kind, model, ...).
        full: Re-process every document, changed or not.
        source_name: The name inline records are filed under (what a prune of them deletes).
        prune: Delete the documents of this source it no longer holds; default true for directories,
            globs and s3:// prefixes (listed completely), false for inline records.
        shard: Index (and prune) only this shard of the files or objects, for index-sharded's runs.
        shards: How many shards the source is split into (with shard).
        blue_green: Build the next version of the collection from the whole source and switch its
            alias to it once it passes its check; searches read the old version until then.
        source_roots: The sandbox of a run started over HTTP: the folders and s3:// prefixes it may
            read (inline records only under an inline name). Set by the service, never by a request.
    """
    settings = await run_settings(embedder)
    collection = collection or settings.collection
    resolved = resolve_source(
        source, prune=prune, source_name=source_name, shard=shard if shards or shard else None, shards=shards, exclude=[settings.data_dir],
        roots=SourceRoots.of(source_roots) if source_roots is not None else None, settings=settings,
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
            async with IndexRun(resources, collection, resolved, flow_run_id=str(flow_run.id) if flow_run.id else None) as run:
                await mark_flow_runs_crashed(run.crashed)
                run.store = await check_store.with_options(task_run_name=f"check the store of {collection}")(settings, collection)
                # A new collection is created (and a store opened) while the first batches are
                # planned and embedded: only the writes wait for it.
                prepare = prepare_collection.with_options(task_run_name=f"prepare {collection}")
                steps = TaskSteps(settings, resources, before_writes=asyncio.ensure_future(prepare(settings, collection)))
                slot.push_async_callback(steps.aclose)  # the embedding slot is held until the run ends
                await index_batches(run, steps, full)
                await steps.prepared()
            summary = run.summary
            assert summary is not None
            if blue_green:
                summary = await _switch(settings, alias, summary)
    return await _finish(collection, alias, summary, run.failures)


async def _finish(collection: str, alias: str, summary: RunSummary, failures: Sequence[DeadLetter]) -> dict[str, Any]:
    """Say what the run did (log, artifacts, events) and end it in a state named for it."""
    _log_summary(get_run_logger(), collection, summary)
    await report_index_run(summary, failures)
    emit_index_events(summary, alias, failures)
    return completed(summary.to_json(), summary.failed)


def _log_summary(logger: Logger | LoggerAdapter[Any], collection: str, summary: RunSummary) -> None:
    """What the run did, and its warnings, in the flow run's log."""
    logger.info(
        "indexed %s: %d added, %d updated, %d unchanged, %d deleted, %d failed, %d repaired, %d chunks embedded in %.2fs",
        collection, summary.added, summary.updated, summary.unchanged, summary.deleted, summary.failed, summary.repaired,
        summary.chunks_embedded, summary.duration_s,
    )
    for warning in summary.warnings:
        logger.warning(warning)


async def _switch(settings: Settings, alias: str, summary: RunSummary) -> RunSummary:
    """Switch ``alias`` to the version just built, unless documents failed (it would lack them)."""
    if summary.failed:
        return summary.model_copy(update={"warnings": [*summary.warnings, bluegreen.not_switched(alias, summary)]})
    step = switch_collection.with_options(task_run_name=f"switch {alias} to {summary.collection}")
    report = await step(settings, alias, summary.collection)
    return summary.model_copy(update={"switch": report})
