"""Index a corpus incrementally: stream documents in batches, embed only what changed, prune what is gone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from citadel import progress
from citadel.documents import iter_batches, list_source
from citadel.indexing import EmbeddedBatch, RunCounts
from citadel.settings import EmbedderConfig, settings_for
from tasks.indexing import delete_stale_documents, embed_chunks, plan_batch, prepare_collection, write_batch
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
            batches = iter_batches(
                listing, records, source_key,
                max_documents=settings.document_batch_size,
                max_chars=settings.document_batch_chars,
                max_file_bytes=settings.max_file_bytes,
            )
            for batch in batches:
                items = batch.items
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
                    writer = asyncio.create_task(write_batch(settings, collection, quote(embedded)))
                progress.report(batch.done, batch.total, "indexing")
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


def _collect(counts: RunCounts, written: Any) -> None:
    counts.add_written(written)
    counts.chunks_written += written.chunks_written
