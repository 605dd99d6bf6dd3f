"""Index a corpus too large for one worker: one sub-run of the indexing deployment per shard.

Every file or object belongs to exactly one shard (a stable hash of its path or s3:// URI), and
each shard's sub-run prunes only its own, so N workers on one work pool share the corpus, and the
registry and the vector store end as if one worker had done it all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.flow_runs import arun_deployment
from prefect.runtime import flow_run

from citadel.documents import list_source
from citadel.models import RunCounts, ShardedRunSummary
from citadel.resources import open_resources
from flows.parameters import Collection, Deployment, Embedder, Full, ShardCount, ShardedSource, TimeoutS
from tasks.events import index_failed_hook
from tasks.reporting import completed, report_sharded_run, run_tags, tag_flow_run
from tasks.run_names import final_run_name, flow_run_namer
from tasks.runsettings import run_settings


async def _run_shards(deployment: str, parameters: dict[str, Any], shards: int, timeout_s: float | None) -> list[FlowRun]:
    """One run of ``deployment`` per shard, each under its final name, waited for together."""
    # A shard's run is created once per attempt of this run: the Prefect client retries a create
    # whose answer was lost (under load), and without a key each retry made another run of that shard.
    attempt = f"{flow_run.get_id()}-{flow_run.get_run_count()}"
    each = [{**parameters, "shard": shard} for shard in range(shards)]
    return list(await asyncio.gather(
        *(
            arun_deployment(
                deployment, parameters=own, timeout=timeout_s, poll_interval=1, flow_run_name=final_run_name(deployment, own),
                idempotency_key=f"{attempt}-shard-{own['shard']}-of-{shards}",
            )
            for own in each
        )
    ))


@flow(
    name="index-sharded", flow_run_name=flow_run_namer("index-sharded"), on_failure=[index_failed_hook], on_crashed=[index_failed_hook],
    persist_result=True, result_serializer="json",  # the summary, read back by run_deployment's callers
)
async def index_sharded(
    source: ShardedSource,
    collection: Collection = None,
    shards: ShardCount = 2,
    deployment: Deployment = "index-corpus/on-demand",
    embedder: Embedder = None,
    full: Full = False,
    timeout_s: TimeoutS = None,
) -> dict[str, Any]:
    """Run a deployment once per shard of a source, on whichever workers take them, and add up what
    the shards did.

    Args:
        source: A directory every worker reaches at the same path, or an s3://bucket/prefix of object
            storage (each worker fetches only its shard's objects, and only those that changed).
        collection: The collection to write; default CITADEL_COLLECTION.
        shards: How many runs share the source (each file or object belongs to exactly one).
        deployment: The indexing deployment each shard runs as.
        embedder: The embedder to use instead of the workers' configured one.
        full: Re-process every document, changed or not.
        timeout_s: How long to wait for the shards; default without end.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    started = time.perf_counter()
    logger = get_run_logger()
    settings = await run_settings(embedder)
    collection = collection or settings.collection
    await tag_flow_run([*run_tags(settings, collection), "sharded"])
    listing = list_source(source, settings=settings)  # fail here, once, on a missing path or bucket
    parameters = {"source": listing.key, "collection": collection, "full": full, "shards": shards}
    if embedder is not None:
        parameters["embedder"] = embedder.model_dump(exclude_none=True)
    runs = await _run_shards(deployment, parameters, shards, timeout_s)
    failed = [run for run in runs if run.state is None or not run.state.is_completed()]
    async with open_resources(settings) as resources:
        registry = await resources.registry()
        recorded = await registry.runs_of_flow_runs([str(run.id) for run in runs])
    total = sum((run.counts() for run in recorded), RunCounts())
    summary = ShardedRunSummary(
        **total.model_dump(),
        collection=collection,
        source=listing.key,
        shards=shards,
        files=listing.count,
        flow_run_ids=[str(run.id) for run in runs],
        failed_shards=[str(run.id) for run in failed],
        duration_s=round(time.perf_counter() - started, 3),
    )
    logger.info("indexed %s in %d shards: %s", collection, shards, total.to_json())
    await report_sharded_run(summary, runs, recorded)
    if failed:
        states = ", ".join(f"{run.name}: {run.state.name if run.state else 'unknown'}" for run in failed)
        raise RuntimeError(f"{len(failed)} of {shards} shards did not complete ({states}); run again to finish them")
    return completed(summary.to_json(), summary.failed)
