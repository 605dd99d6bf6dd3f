"""One indexing run from start to summary, shared by the index-corpus flow and the plain loop.

A run resolves what it indexes, waits for the lock of its collection and source, records itself
in the registry with a heartbeat, counts what its batches did, and finishes with a summary that
says what it did and what the user should know (an empty source, a store that lost points).
The flow adds only its tasks and the overlap of embedding with writing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from citadel import progress
from citadel.collections import check_collection_name
from citadel.documents import (
    SUPPORTED_SUFFIXES,
    SourceListing,
    SourceRoots,
    check_shard,
    iter_groups,
    list_source,
    shard_listing,
    shard_of,
    source_name_problem,
)
from citadel.errors import ConfigurationError
from citadel.indexing import bluegreen
from citadel.indexing.batches import (
    BatchPlan,
    EmbeddedBatch,
    SeenDocuments,
    WriteBatcher,
    embed_plan,
    find_gone_documents,
    plan_groups,
    prepare_collection,
    prune_source,
    record_documents,
    resolve_dead_letters,
    upsert_vectors,
)
from citadel.indexing.bluegreen import live_collection
from citadel.indexing.consistency import check_store, reconcile
from citadel.models import IndexRunRecord, RunCounts, RunSummary, StoreCheck
from citadel.registry import DeadLetter, Holder, RunLock, check_collection_model, find_crashed_runs, lock_key, mark_crashed_runs
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.store import embedded_store_holder, store_in_use

log = logging.getLogger(__name__)

MAX_FAILURES_KEPT = 100
"""Dead letters a run keeps for its report; every one is in the registry (``citadel status``)."""


@dataclass
class ResolvedSource:
    """What a run indexes: files of a listing or inline records, under one source key."""

    listing: SourceListing | None
    records: list[dict[str, Any]] | None
    key: str
    prune: bool
    shard: tuple[int, int] | None = None

    def groups(self, settings: Any) -> Any:
        """Groups to load one at a time, bounded by the settings' batch limits."""
        return iter_groups(
            self.listing, self.records,
            max_documents=settings.document_batch_size, max_bytes=settings.document_batch_bytes,
        )


def resolve_source(
    source: str | Sequence[dict[str, Any]],
    *,
    prune: bool | None = None,
    source_name: str = "inline",
    shard: int | None = None,
    shards: int | None = None,
    exclude: Sequence[str | os.PathLike[str]] = (),
    roots: SourceRoots | None = None,
) -> ResolvedSource:
    """A path, glob or list of documents as a run sees it, restricted to one shard when asked.

    Directories and globs are listed completely, so they prune by default; inline lists only when
    ``prune`` says so. Folders in ``exclude`` (Citadel's data folder) are never listed. A sandboxed
    run (``roots``) lists and reads only what lies inside its roots, and files inline records
    only under an inline name or a path inside them, so it never prunes another source.
    """
    check_shard(shard, shards)
    sharding = (shard, shards) if shard is not None and shards is not None else None
    if isinstance(source, str):
        listing = list_source(source, exclude, roots)
        key = listing.key
        if sharding:
            listing = shard_listing(listing, *sharding)
        # A listing that missed an unreadable folder never prunes, whatever was asked.
        return ResolvedSource(listing, None, key, listing.complete and (prune is None or prune), sharding)
    problem = source_name_problem(source_name, roots) if roots is not None else None
    if problem:
        raise ConfigurationError(problem)
    records = list(source)
    if sharding:
        records = [r for r in records if shard_of(str(r.get("id", "")) if isinstance(r, dict) else "", sharding[1]) == sharding[0]]
    return ResolvedSource(None, records, source_name, bool(prune), sharding)


class HandOver(Exception):
    """A run found work it does not do itself (see :func:`answer_unchanged`); it leaves no record."""


class IndexRun:
    """The life of one run in the registry: lock, run row, heartbeat, counts, summary.

    ``async with IndexRun(...) as run:`` waits for the lock of the run's collection, source and
    shard (saying which run holds it), marks runs whose process is gone as crashed, and records
    the run; leaving it records how the run ended (completed, failed or cancelled) with its
    summary, and lets the next run in. A run left by :class:`HandOver` removes its record instead.
    """

    def __init__(self, resources: Resources, collection: str, resolved: ResolvedSource, *, flow_run_id: str | None = None) -> None:
        self.resources = resources
        self.collection = collection
        self.resolved = resolved
        self.flow_run_id = flow_run_id
        self.run_id = str(uuid.uuid4())
        self.counts = RunCounts()
        self.seen = SeenDocuments()
        self.store: StoreCheck | None = None
        self.failures: list[DeadLetter] = []  # this run's dead letters, the first MAX_FAILURES_KEPT
        self.crashed: list[IndexRunRecord] = []
        self.summary: RunSummary | None = None
        self.key = lock_key(collection, resolved.key, resolved.shard)
        self._started = time.perf_counter()
        self._lock: RunLock | None = None

    async def __aenter__(self) -> IndexRun:
        registry = await self.resources.registry()
        self.crashed = await mark_crashed_runs(registry)
        self._lock = RunLock(registry, self.key, self.run_id)
        await self._lock.acquire(on_wait=self._waiting)
        try:
            await registry.start_run(self.collection, self.resolved.key, self.flow_run_id, run_id=self.run_id, lock_key=self.key)
        except BaseException:
            await self._lock.release()
            raise
        self._lock.start_heartbeat()
        self._started = time.perf_counter()  # the run's own time, not its wait for the lock
        return self

    async def plan(self, group: Any, full: bool = False) -> BatchPlan:
        """Load one group of the source and plan it: what is unchanged, failed or to be written."""
        (plan,), added = await plan_groups(self.resources, self.collection, [group], self.resolved.key, self.seen, full)
        self.seen.merge(added)
        return plan

    def count_embedded(self, batch: EmbeddedBatch) -> None:
        """Count what embedding a batch did, and keep its failures for the run's report."""
        self.counts.add_embedded(batch)
        self.seen.note_failures(batch.plan)
        room = MAX_FAILURES_KEPT - len(self.failures)
        if room > 0:
            self.failures.extend(batch.plan.failures[:room])

    def _waiting(self, holder: Holder | None) -> None:
        who = holder.describe() if holder else "another run"
        message = f"waiting for {who}, which is indexing {self.resolved.key} into {self.collection}"
        log.warning(message)
        progress.report(0, 0, message)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None and issubclass(exc_type, HandOver):
            assert self._lock is not None
            try:
                await (await self.resources.registry()).discard_run(self.run_id)
            finally:
                await self._lock.release()
            return
        if exc_type is None:
            status = "completed"
        elif issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt)):
            status = "cancelled"
        else:
            status = "failed"
        self.summary = self._summarize()
        try:
            await (await self.resources.registry()).finish_run(self.run_id, status, self.summary)
        finally:
            assert self._lock is not None
            await self._lock.release()

    def _summarize(self) -> RunSummary:
        """The summary a run returns and records: its counts, what it touched, how long it took,
        and what the user should know."""
        return RunSummary(
            **self.counts.model_dump(),
            documents_seen=len(self.seen.ids),
            duration_s=round(time.perf_counter() - self._started, 3),
            collection=self.collection,
            model=self.resources.embedder.model,
            source=self.resolved.key,
            vector_store_opened=self.resources.store_opened,
            run_id=self.run_id,
            flow_run_id=self.flow_run_id,
            store=self.store,
            warnings=self.warnings(),
        )

    def warnings(self) -> list[str]:
        """What the user should know about this run besides its counts."""
        found: list[str] = []
        listing = self.resolved.listing
        for problem in listing.problems if listing else []:
            found.append(f"cannot read {problem}; documents under it are kept and nothing was deleted")
        if listing is not None and listing.outside:
            shown = ", ".join(listing.outside[:5]) + (f" and {len(listing.outside) - 5} more" if len(listing.outside) > 5 else "")
            found.append(f"skipped {len(listing.outside)} entries that lead outside the folders this service may index "
                         f"(CITADEL_API_SOURCE_ROOTS), through a symlink or '..'; they were not read: {shown}")
        if not self.seen.ids:
            if listing is not None and not listing.problems:
                found.append(
                    f"found no documents in {self.resolved.key}: Citadel reads {' '.join(SUPPORTED_SUFFIXES)} files, "
                    "and skips hidden files and folders and its own data folder"
                )
            elif listing is None:
                found.append(f"source {self.resolved.key!r} gave no documents")
        check = self.store
        if check is not None:
            others = [s for s in check.sources_to_repair if s != self.resolved.key]
            if check.missing:
                found.append(
                    f"the vector store had lost {check.missing} of the {check.expected} points of {self.collection}; "
                    f"{check.documents_to_repair} documents were marked for repair"
                    + (f" (this run writes those of its own source; `citadel index` of {', '.join(others)} writes the rest)"
                       if others else "")
                )
            if check.stray:
                found.append(
                    f"the vector store holds {check.stray} points of {self.collection} that the registry does not know; "
                    f"`citadel verify --repair --collection {self.collection}` removes them"
                )
        return found


async def check_before_run(settings: Settings, collection: str, *, new_version: bool = False) -> None:
    """What would fail a run, found before it starts: the collection name, the embedded store held
    by another process, the registry database, and a collection indexed with another model (not
    asked of a ``new_version``, which a blue-green build starts empty)."""
    check_collection_name(collection)
    if not settings.qdrant_url:
        holder = embedded_store_holder(settings.qdrant_path)
        if holder:
            raise ConfigurationError(store_in_use(settings.qdrant_path, holder))
    resources = Resources(settings)
    try:
        registry = await resources.registry()
        known = None if new_version else await registry.collection(await live_collection(resources, collection))
        if known is not None:
            check_collection_model(collection, known, resources.embedder.model, resources.embedder.dimensions)
    finally:
        await resources.aclose()


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
    resolved = resolve_source(source, prune=prune, source_name=source_name, exclude=[settings.data_dir], roots=roots)
    collection = await live_collection(resources, collection)
    await prepare_collection(resources, collection)
    async with IndexRun(resources, collection, resolved) as run:
        run.store = await reconcile(resources, collection)
        batcher = WriteBatcher(settings.document_batch_size, settings.document_batch_bytes)

        async def embed_and_write(plan: BatchPlan) -> None:
            batch = await embed_plan(resources, collection, plan) if plan.documents else EmbeddedBatch(plan, [])
            run.count_embedded(batch)
            if batch.plan.documents or batch.plan.failures:
                await upsert_vectors(resources, collection, batch)
                run.counts.add_written(await record_documents(resources, collection, batch))

        for number, group in enumerate(resolved.groups(settings), start=1):
            plan = await run.plan(group, full)
            run.counts.unchanged += plan.unchanged
            if plan.documents:
                resources.open_store_in_background()  # it loads while later batches are planned
            gathered = batcher.add(plan, number)
            if gathered:
                await embed_and_write(gathered[0])
        gathered = batcher.take()
        if gathered:
            await embed_and_write(gathered[0])
        if resolved.prune:
            run.counts.deleted = await prune_source(resources, collection, resolved.key, run.seen, resolved.shard)
            if resolved.shard is None:
                await resolve_dead_letters(resources, collection, resolved.key, run.seen)
    assert run.summary is not None
    return run.summary


async def answer_unchanged(settings: Settings, source: str, collection: str) -> RunSummary | None:
    """The run of a source with nothing to do, done here without an orchestrator; None (and no
    record of it) as soon as there is anything to do, which the index-corpus flow then does.

    Nothing to do: the collection is known, no run has crashed unnoticed, the store's cheap check
    finds no drift, every listed document is indexed as it is now, none failed to load, and none
    indexed before is gone or waiting in the dead letters. Such a run embeds, writes and deletes
    nothing, so it needs neither Prefect nor the vector store's client; it is recorded in the
    registry like any other run, as a run without a flow run.
    """
    resources = Resources(settings)
    try:
        resolved = resolve_source(source, exclude=[settings.data_dir])
        collection = await live_collection(resources, collection)
        registry = await resources.registry()
        if await registry.collection(collection) is None or await find_crashed_runs(registry):
            return None  # a new collection is created, and crashed runs are marked in Prefect too, by the flow
        try:
            async with IndexRun(resources, collection, resolved) as run:
                if run.crashed:
                    raise HandOver  # one crashed since the look above: the flow reports it
                for group in resolved.groups(settings):  # an edited source is the usual hand-over: first
                    plan = await run.plan(group)
                    if plan.documents or plan.failures:
                        raise HandOver
                    run.counts.unchanged += plan.unchanged
                run.store = await check_store(resources, collection)
                if run.store.drift:
                    raise HandOver
                if resolved.prune and (
                    await find_gone_documents(registry, collection, resolved.key, run.seen)
                    or await registry.has_dead_letters(collection, resolved.key)
                ):
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
