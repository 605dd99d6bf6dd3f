"""Index runs without an orchestrator: the plain loop, the answer for a source with nothing to do,
and a blue-green build; each drives its batches through :func:`citadel.indexing.pipeline.index_batches`
with steps called in place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import citadel.indexing.bluegreen as bluegreen
from citadel.documents import SourceGroup, SourceRoots
from citadel.indexing.bluegreen import live_collection
from citadel.indexing.consistency import check_store, reconcile
from citadel.indexing.lifecycle import HandOver, IndexRun, resolve_source
from citadel.indexing.pipeline import DirectSteps, index_batches
from citadel.indexing.planning import BatchPlan, SeenDocuments
from citadel.indexing.writing import Pruned, find_gone_documents, prepare_collection
from citadel.models import RunSummary
from citadel.registry import find_crashed_runs
from citadel.resources import Resources
from citadel.settings import Settings


async def index_source(
    resources: Resources,
    source: str | Sequence[dict[str, Any]],
    collection: str,
    full: bool = False,
    prune: bool | None = None,
    *,
    source_name: str = "inline",
    roots: SourceRoots | None = None,
) -> RunSummary:
    """Index ``source`` into ``collection`` one batch after another, without an orchestrator.

    The same steps as the index-corpus flow, in sequence: the workflow ``index`` step and the
    benchmark's plain loop use it. A blue-green collection is written through its live version.
    ``roots`` sandboxes the run (see :func:`resolve_source`). Returns the run summary.
    """
    settings = resources.settings
    resolved = resolve_source(
        source, prune=prune, source_name=source_name, exclude=[settings.data_dir], roots=roots, settings=settings
    )
    collection = await live_collection(resources, collection)
    await prepare_collection(resources, collection)
    async with IndexRun(resources, collection, resolved) as run:
        run.store = await reconcile(resources, collection)
        await index_batches(run, DirectSteps(resources), full)
    assert run.summary is not None
    return run.summary


class _NothingToDo(DirectSteps):
    """The steps of a run that only looks: it hands over at the first batch with anything to write
    or report, and at the first document gone or dead letter waiting."""

    async def plan(
        self, name: str, collection: str, groups: list[SourceGroup], source: str, seen: SeenDocuments, full: bool
    ) -> tuple[list[BatchPlan], SeenDocuments]:
        plans, added = await super().plan(name, collection, groups, source, seen, full)
        if any(plan.documents or plan.failures for plan in plans):
            raise HandOver
        return plans, added

    async def prune(self, name: str, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None) -> Pruned:
        registry = await self.resources.registry()
        if await find_gone_documents(registry, collection, source, seen, shard) or await registry.has_dead_letters(collection, source):
            raise HandOver
        return Pruned()

    async def resolve(self, name: str, collection: str, source: str, seen: SeenDocuments) -> int:
        return 0  # the prune found no dead letters


async def answer_unchanged(settings: Settings, source: str, collection: str) -> RunSummary | None:
    """The run of a source with nothing to do, done here without an orchestrator; None (and no
    record of it) as soon as there is anything to do, which the index-corpus flow then does.

    Nothing to do: the collection is known, no run has crashed unnoticed, every listed document
    is indexed as it is now, none failed to load, none indexed before is gone or waiting in the
    dead letters, and the store's cheap check finds no drift. Such a run embeds, writes and
    deletes nothing, so it needs neither Prefect nor the vector store's client; it is recorded in
    the registry like any other run, as a run without a flow run.
    """
    resources = Resources(settings)
    try:
        resolved = resolve_source(source, exclude=[settings.data_dir], settings=settings)
        collection = await live_collection(resources, collection)
        registry = await resources.registry()
        if await registry.collection(collection) is None or await find_crashed_runs(registry):
            return None  # a new collection is created, and crashed runs are marked in Prefect too, by the flow
        try:
            async with IndexRun(resources, collection, resolved) as run:
                if run.crashed:
                    raise HandOver  # one crashed since the look above: the flow reports it
                await index_batches(run, _NothingToDo(resources))  # an edited source is the usual hand-over: first
                run.store = await check_store(resources, collection)
                if run.store.drift:
                    raise HandOver
        except HandOver:
            return None
        return run.summary
    finally:
        await resources.aclose()


async def build_and_switch(
    resources: Resources, source: str | Sequence[dict[str, Any]], collection: str, prune: bool | None = None, *,
    source_name: str = "inline",
) -> RunSummary:
    """A blue-green build without an orchestrator (the workflow ``index`` step): index the whole
    source into the next version, then switch to it unless documents failed."""
    async with bluegreen.locked(resources, collection):
        target = await bluegreen.next_version(resources, collection)
        summary = await index_source(resources, source, target, True, prune, source_name=source_name)
        if summary.failed:
            return summary.model_copy(update={"warnings": [*summary.warnings, bluegreen.not_switched(collection, summary)]})
        return summary.model_copy(update={"switch": await bluegreen.switch(resources, collection, target)})
