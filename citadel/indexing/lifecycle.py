"""What an index run indexes, and its life in the registry, shared by every way of running it.

A run resolves what it indexes, waits for the lock of its collection and source, records itself
in the registry with a heartbeat, counts what its batches did, and finishes with a summary that
says what it did and what the user should know (an empty source, a store that lost points).
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
from citadel.allocator import fix_mmap_threshold
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
from citadel.indexing.bluegreen import live_collection
from citadel.indexing.planning import SeenDocuments
from citadel.indexing.writing import EmbeddedBatch
from citadel.models import IndexRunRecord, RunCounts, RunSummary, StoreCheck
from citadel.registry import DeadLetter, Holder, RunLock, check_collection_model, lock_key, mark_crashed_runs
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
    settings: Settings | None = None,
) -> ResolvedSource:
    """A path, glob, ``s3://`` prefix or list of documents as a run sees it, restricted to one
    shard when asked (an object store is reached with the endpoint of ``settings``).

    Directories and globs are listed completely, so they prune by default; inline lists only when
    ``prune`` says so. Folders in ``exclude`` (Citadel's data folder) are never listed. A sandboxed
    run (``roots``) lists and reads only what lies inside its roots, and files inline records
    only under an inline name or a path inside them, so it never prunes another source.
    """
    check_shard(shard, shards)
    sharding = (shard, shards) if shard is not None and shards is not None else None
    if isinstance(source, str):
        listing = list_source(source, exclude, roots, settings)
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
        fix_mmap_threshold(self.resources.settings.index_mmap_threshold_kb)  # before the run's first big buffer
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
