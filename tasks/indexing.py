"""Indexing tasks, one per step, each over a whole batch of documents.

None of them caches across runs (``NO_CACHE`` on purpose): they read or change external state,
and per-text reuse is the embedding cache's job, which is finer grained than a task cache.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from citadel import indexing
from citadel.documents import SourceGroup
from citadel.indexing import bluegreen
from citadel.models import StoreCheck, SwitchReport
from citadel.resources import get_resources
from citadel.settings import Settings
from tasks.events import emit_switched
from tasks.passing import Held
from tasks.retry import RETRYING


@task(name="prepare-collection", cache_policy=NO_CACHE, **RETRYING)
async def prepare_collection(settings: Settings, collection: str) -> None:
    """Create the collection or refuse it when it holds another model's vectors."""
    await indexing.prepare_collection(get_resources(settings), collection)


@task(name="check-store", cache_policy=NO_CACHE, **RETRYING)
async def check_store(settings: Settings, collection: str) -> StoreCheck:
    """Check that the vector store still holds what the registry says, cheaply, and mark the
    documents whose points it lost for repair (this run writes them again)."""
    return await indexing.reconcile(get_resources(settings), collection)


@task(name="plan-batch", cache_policy=NO_CACHE, **RETRYING)
async def plan_batch(
    settings: Settings, collection: str, groups: list[SourceGroup], source: str, seen: indexing.SeenDocuments,
    full: bool = False,
) -> Held[tuple[list[indexing.BatchPlan], indexing.SeenDocuments]]:
    """Read groups of files (or validate inline records), chunk their new and changed documents
    and count the unchanged ones. Returns a plan per group and the documents they add to ``seen``,
    which the flow notes once the step succeeded (a retry screens them against the same run)."""
    return Held(await indexing.plan_groups(get_resources(settings), collection, groups, source, seen, full))


@task(name="embed-chunks", cache_policy=NO_CACHE, **RETRYING)
async def embed_chunks(settings: Settings, collection: str, plan: indexing.BatchPlan) -> Held[indexing.EmbeddedBatch]:
    """Vectors for a batch's chunks through the embedding cache (the flow holds the backend's slot)."""
    return Held(await indexing.embed_plan(get_resources(settings), collection, plan))


@task(name="upsert-vectors", cache_policy=NO_CACHE, **RETRYING)
async def upsert_vectors(settings: Settings, collection: str, batch: indexing.EmbeddedBatch) -> Held[int]:
    """Register the point ids as pending, upsert the points, delete the ones they replace."""
    return Held(await indexing.upsert_vectors(get_resources(settings), collection, batch))


@task(name="record-documents", cache_policy=NO_CACHE, **RETRYING)
async def record_documents(settings: Settings, collection: str, batch: indexing.EmbeddedBatch) -> Held[indexing.WriteResult]:
    """Mark the batch's documents indexed (after the store acknowledged them) and record failures."""
    return Held(await indexing.record_documents(get_resources(settings), collection, batch))


@task(name="delete-stale-documents", cache_policy=NO_CACHE, **RETRYING)
async def delete_stale_documents(
    settings: Settings, collection: str, source: str, seen: indexing.SeenDocuments, shard: tuple[int, int] | None = None
) -> indexing.Pruned:
    """Delete the vectors and records of documents gone from a completely listed source (or shard of
    it), keeping the records of files that failed to load whole."""
    return await indexing.prune_source(get_resources(settings), collection, source, seen, shard)


@task(name="resolve-dead-letters", cache_policy=NO_CACHE, **RETRYING)
async def resolve_dead_letters(settings: Settings, collection: str, source: str, seen: indexing.SeenDocuments) -> int:
    """Clear the dead letters of a whole source's documents that this run did not see fail again."""
    return await indexing.resolve_dead_letters(get_resources(settings), collection, source, seen)


@task(name="switch-collection", cache_policy=NO_CACHE, **RETRYING)
async def switch_collection(settings: Settings, alias: str, version: str) -> SwitchReport:
    """Check a version built by a blue-green run and point the alias that searches read at it,
    atomically; ``citadel.collection.switched`` tells the operator's automations."""
    run_id = flow_run.get_id()
    actor = f"flow-run:{run_id}" if run_id else bluegreen.SYSTEM_ACTOR  # the trail names the run that switched
    report = await bluegreen.switch(get_resources(settings), alias, version, actor=actor)
    emit_switched(report)
    return report
