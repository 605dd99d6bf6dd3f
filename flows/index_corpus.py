"""Index a corpus incrementally: stream documents in batches, embed only what changed, prune what is gone."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from citadel import progress
from citadel.indexing import EmbeddedBatch, WriteResult
from citadel.indexrun import IndexRun, resolve_source
from citadel.settings import EmbedderConfig, Settings, settings_for
from tasks.crashed import mark_flow_runs_crashed
from tasks.indexing import (
    check_store,
    delete_stale_documents,
    embed_chunks,
    load_documents,
    plan_batch,
    prepare_collection,
    record_documents,
    upsert_vectors,
)
from tasks.limits import embedding_slot
from tasks.resources import open_resources


@flow(name="index-corpus", validate_parameters=True)
async def index_corpus(
    source: str | list[dict[str, Any]],
    collection: str | None = None,
    embedder: EmbedderConfig | None = None,
    full: bool = False,
    source_name: str = "inline",
    prune: bool | None = None,
    shard: int | None = None,
    shards: int | None = None,
) -> dict[str, Any]:
    """Index ``source`` (a directory, glob, file, or a list of ``{"id", "text", "metadata"}``) into
    ``collection``; returns counts of added, updated, unchanged, deleted and failed documents.

    ``prune`` deletes documents of this source that it no longer holds; it defaults to true for
    directories and globs (listed completely) and false for inline lists. ``shard`` of ``shards``
    indexes (and prunes) only the files of one shard, for sub-runs of ``index-sharded``.
    """
    logger = get_run_logger()
    settings = settings_for(embedder)
    collection = collection or settings.collection
    resolved = resolve_source(
        source, prune=prune, source_name=source_name, shard=shard, shards=shards, exclude=[settings.data_dir]
    )
    async with open_resources(settings) as resources, AsyncExitStack() as slot:
        await prepare_collection(settings, collection)
        async with IndexRun(resources, collection, resolved, flow_run_id=str(flow_run.id) if flow_run.id else None) as run:
            await mark_flow_runs_crashed(run.crashed)
            run.store = await check_store(settings, collection)
            writer: asyncio.Task | None = None
            holding_slot = False
            try:
                for group in resolved.groups(settings):
                    # quote(): Prefect would otherwise walk every document and payload looking for futures.
                    items = run.seen.admit(await load_documents(settings, quote(group), resolved.key))
                    plan = await plan_batch(settings, collection, quote(items), full)
                    run.counts.unchanged += plan.unchanged
                    if plan.documents and not holding_slot:
                        # One slot of the backend's global limit, taken when the run first needs the
                        # embedder (an unchanged run never does) and held until the run ends.
                        await slot.enter_async_context(embedding_slot(settings))
                        holding_slot = True
                    # Embedding this batch overlaps with writing the previous one.
                    embedded = await embed_chunks(settings, collection, quote(plan)) if plan.documents else EmbeddedBatch(plan, [])
                    run.seen.note_failures(embedded.plan)
                    run.counts.add_embedded(embedded)
                    if writer is not None:
                        run.counts.add_written(await writer)
                        writer = None
                    if embedded.plan.documents or embedded.plan.failures:
                        writer = asyncio.create_task(_write(settings, collection, embedded))
                    progress.report(group.done, group.total, "indexing")
                if writer is not None:
                    run.counts.add_written(await writer)
                    writer = None
                if resolved.prune:
                    run.counts.deleted = await delete_stale_documents(settings, collection, resolved.key, quote(run.seen), resolved.shard)
            except Exception:
                if writer is not None:
                    # Let the batch already embedded finish writing, so the next run re-embeds less.
                    await asyncio.gather(writer, return_exceptions=True)
                    writer = None
                raise
            finally:
                if writer is not None:  # cancelled or interrupted: stop at once, the next run repairs
                    writer.cancel()
                    await asyncio.gather(writer, return_exceptions=True)
    summary = run.summary
    assert summary is not None
    logger.info(
        "indexed %s: %d added, %d updated, %d unchanged, %d deleted, %d failed, %d repaired, %d chunks embedded in %.2fs",
        collection, summary.added, summary.updated, summary.unchanged, summary.deleted, summary.failed, summary.repaired,
        summary.chunks_embedded, summary.duration_s,
    )
    for warning in summary.warnings:
        logger.warning(warning)
    return summary.to_json()


async def _write(settings: Settings, collection: str, batch: EmbeddedBatch) -> WriteResult:
    """The two write steps of a batch, in order: the points, then the registry."""
    await upsert_vectors(settings, collection, quote(batch))
    return await record_documents(settings, collection, quote(batch))
