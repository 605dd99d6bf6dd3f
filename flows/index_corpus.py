"""Index a corpus incrementally: stream documents in batches, embed only what changed, prune what is gone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from citadel import progress
from citadel.documents import iter_groups, list_source
from citadel.indexing import EmbeddedBatch, RunCounts, WriteResult
from citadel.settings import EmbedderConfig, settings_for
from citadel.settings import Settings
from tasks.indexing import (
    delete_stale_documents,
    embed_chunks,
    load_documents,
    plan_batch,
    prepare_collection,
    record_documents,
    upsert_vectors,
)
from tasks.resources import open_resources


@flow(name="index-corpus", validate_parameters=True)
async def index_corpus(
    source: str | list[dict[str, Any]],
    collection: str | None = None,
    embedder: EmbedderConfig | None = None,
    full: bool = False,
    source_name: str = "inline",
    prune: bool | None = None,
) -> dict[str, Any]:
    """Index ``source`` (a directory, glob, file, or a list of ``{"id", "text", "metadata"}``) into
    ``collection``; returns counts of added, updated, unchanged, deleted and failed documents.

    ``prune`` deletes documents of this source that it no longer holds; it defaults to true for
    directories and globs (listed completely) and false for inline lists.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    settings = settings_for(embedder)
    collection = collection or settings.collection
    if isinstance(source, str):
        listing, records, source_key = list_source(source), None, ""
        source_key = listing.key
        complete = listing.complete if prune is None else prune
    else:
        listing, records, source_key = None, source, source_name
        complete = bool(prune)
    counts = RunCounts()
    seen: set[str] = set()
    async with open_resources(settings) as resources:
        registry = await resources.registry()
        await prepare_collection(settings, collection)
        run_id = await registry.start_run(collection, source_key, str(flow_run.id) if flow_run.id else None)
        writer: asyncio.Task | None = None
        status = "failed"
        try:
            groups = iter_groups(
                listing, records, max_documents=settings.document_batch_size, max_bytes=settings.document_batch_bytes
            )
            for group in groups:
                items = await load_documents(settings, quote(group), source_key)
                seen.update(item.id for item in items)
                # quote(): Prefect would otherwise walk every document and payload looking for futures.
                plan = await plan_batch(settings, collection, quote(items), full)
                counts.unchanged += plan.unchanged
                if plan.documents:
                    # Embedding this batch overlaps with writing the previous one.
                    embedded = await embed_chunks(settings, collection, quote(plan))
                else:
                    embedded = EmbeddedBatch(plan, [])
                counts.chunks_embedded += embedded.chunks_embedded
                counts.cache_hits += embedded.cache_hits
                counts.chunks_reused += embedded.chunks_reused
                counts.failed += len(embedded.plan.failures)
                if writer is not None:
                    _collect(counts, await writer)
                    writer = None
                if embedded.plan.documents or embedded.plan.failures:
                    writer = asyncio.create_task(_write(settings, collection, embedded))
                progress.report(group.done, group.total, "indexing")
            if writer is not None:
                _collect(counts, await writer)
                writer = None
            if complete:
                counts.deleted = await delete_stale_documents(settings, collection, source_key, quote(seen))
            status = "completed"
        finally:
            if writer is not None:
                writer.cancel()
            summary = {
                **counts.as_dict(),
                "documents_seen": len(seen),
                "duration_s": round(time.perf_counter() - started, 3),
                "collection": collection,
                "model": resources.embedder.model,
                "source": source_key,
                "vector_store_opened": resources.store_opened,
                "run_id": run_id,
                "flow_run_id": str(flow_run.id) if flow_run.id else None,
            }
            await registry.finish_run(run_id, status, summary)
    logger.info(
        "indexed %s: %d added, %d updated, %d unchanged, %d deleted, %d failed, %d chunks embedded in %.2fs",
        collection, counts.added, counts.updated, counts.unchanged, counts.deleted, counts.failed,
        counts.chunks_embedded, summary["duration_s"],
    )
    return summary


async def _write(settings: Settings, collection: str, batch: EmbeddedBatch) -> WriteResult:
    """The two write steps of a batch, in order: the points, then the registry."""
    await upsert_vectors(settings, collection, quote(batch))
    return await record_documents(settings, collection, quote(batch))


def _collect(counts: RunCounts, written: WriteResult) -> None:
    counts.add_written(written)
    counts.chunks_written += written.chunks_written
