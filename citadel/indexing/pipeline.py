"""The one driver of an index run's batches: plan them, embed and write what changed, prune what is gone.

The plain loop, the answer for an unchanged source and the index-corpus flow run this same
sequence; they differ only in how each step runs, which the driver is given (:class:`Steps`): a
direct call here, a Prefect task named after its batches in the flow (``tasks.index_steps``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from citadel import progress
from citadel.documents import SourceGroup
from citadel.indexing.lifecycle import IndexRun
from citadel.indexing.planning import BatchPlan, SeenDocuments, WriteBatcher, batches_label, plan_groups
from citadel.indexing.writing import (
    EmbeddedBatch,
    Pruned,
    WriteResult,
    embed_plan,
    prune_source,
    record_documents,
    resolve_dead_letters,
    upsert_vectors,
)
from citadel.resources import Resources
from citadel.words import plural

# While the store is still opening (an embedded store loads every point, seconds at tens of
# thousands), an overlapping run plans and embeds ahead of the writes, up to this much in memory.
AHEAD_WHILE_OPENING_BATCHES = 8
AHEAD_WHILE_OPENING_CHUNKS = 10_000
# Batches an overlapping run embeds at once: the next batch's requests already wait at the
# embedding servers while this one's last answers come back, are cached and handed to its write,
# and the batch after it is planned meanwhile, so a server never waits for a batch boundary.
EMBEDDING_AT_ONCE = 2


class Steps(Protocol):
    """How each step of a run runs. ``name`` says what the step does (``upsert 40 points (batch 3)``),
    for a runner that shows it; the other arguments are those of the core function it runs."""

    @property
    def overlap(self) -> bool:
        """Whether a write runs while the next batch is planned and embedded (else before it)."""

    @property
    def group_limit(self) -> int:
        """Most groups one plan step reads after a step whose batches held less than a write's worth."""

    def embedding_ahead(self) -> None:
        """A batch has changed documents: the run will embed (a runner may ask for the backend now)."""

    async def plan(
        self, name: str, collection: str, groups: list[SourceGroup], source: str, seen: SeenDocuments, full: bool
    ) -> tuple[list[BatchPlan], SeenDocuments]: ...

    async def embed(self, name: str, collection: str, plan: BatchPlan) -> EmbeddedBatch: ...

    async def upsert(self, name: str, collection: str, batch: EmbeddedBatch) -> int: ...

    async def record(self, name: str, collection: str, batch: EmbeddedBatch) -> WriteResult: ...

    async def prune(self, name: str, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None) -> Pruned: ...

    async def resolve(self, name: str, collection: str, source: str, seen: SeenDocuments) -> int: ...


class DirectSteps:
    """Each step called in place, one after another, reading one batch a step: the plain loop."""

    overlap = False
    group_limit = 1

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def embedding_ahead(self) -> None:
        pass

    async def plan(
        self, name: str, collection: str, groups: list[SourceGroup], source: str, seen: SeenDocuments, full: bool
    ) -> tuple[list[BatchPlan], SeenDocuments]:
        return await plan_groups(self.resources, collection, groups, source, seen, full)

    async def embed(self, name: str, collection: str, plan: BatchPlan) -> EmbeddedBatch:
        return await embed_plan(self.resources, collection, plan)

    async def upsert(self, name: str, collection: str, batch: EmbeddedBatch) -> int:
        return await upsert_vectors(self.resources, collection, batch)

    async def record(self, name: str, collection: str, batch: EmbeddedBatch) -> WriteResult:
        return await record_documents(self.resources, collection, batch)

    async def prune(self, name: str, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None) -> Pruned:
        return await prune_source(self.resources, collection, source, seen, shard)

    async def resolve(self, name: str, collection: str, source: str, seen: SeenDocuments) -> int:
        return await resolve_dead_letters(self.resources, collection, source, seen)


async def index_batches(run: IndexRun, steps: Steps, full: bool = False) -> None:
    """Every batch of ``run``'s source through ``steps``, counted into the run; then the prune.

    The changed documents of consecutive batches are gathered into one write (an edited corpus
    has a few in each), and the store starts opening as soon as a batch has any. Writes run one
    after another, in batch order. With an overlapping runner, batch n + 1 is planned and embedded
    while batch n is written: once the store is open the driver waits for the write of batch n
    before starting that of n + 1; while it is opening, up to a bound of batches wait for it
    already embedded, so the time an embedded store takes to load is spent embedding. The prune
    needs only the complete listing: with an overlapping runner it takes its turn among the writes
    as soon as the last batch is planned; a direct runner prunes after its last write. Dead
    letters are resolved once every embedding is done (a failed embedding keeps its document's).
    """
    await _Driver(run, steps, full).drive()


class _Driver:
    """One run of :func:`index_batches`: the batcher, the writes started and the prune."""

    def __init__(self, run: IndexRun, steps: Steps, full: bool) -> None:
        self.run, self.steps, self.full = run, steps, full
        self.collection = run.collection
        settings = run.resources.settings
        self.batcher = WriteBatcher(settings.document_batch_size, settings.document_batch_bytes)
        self.pending: deque[tuple[asyncio.Task[WriteResult], int]] = deque()  # (the write, its chunks)
        self.embedding: list[asyncio.Task[EmbeddedBatch]] = []  # batches being embedded, oldest first
        self.tail: asyncio.Task[Any] | None = None  # the last write or prune started: the next one waits for it
        self.pruning: asyncio.Task[Pruned] | None = None

    async def drive(self) -> None:
        resolved, counts = self.run.resolved, self.run.counts
        try:
            await self._plan_every_batch()
            if resolved.prune and self.steps.overlap:  # among the writes; a direct run prunes after its last
                self.pruning = self.tail = asyncio.create_task(self._prune(self.tail))
            gathered = self.batcher.take()
            if gathered:
                await self._embed_and_write(*gathered)
            while self.pending:
                counts.add_written(await self.pending.popleft()[0])
            if resolved.prune and not self.steps.overlap:
                self.pruning = self.tail = asyncio.create_task(self._prune(self.tail))
            if self.pruning is not None:
                pruned = await self.pruning
                counts.deleted = pruned.documents
                counts.points_deleted += pruned.points
                if resolved.shard is None:
                    name = f"resolve the dead letters of {resolved.key[-80:]}"
                    await self.steps.resolve(name, self.collection, resolved.key, self.run.seen)
        except Exception:
            # Let the batches already embedded finish writing, so the next run re-embeds less.
            await asyncio.gather(*self._started(), return_exceptions=True)
            self.pending.clear()
            raise
        finally:
            started = [task for task in self._started() if not task.done()]
            for task in started:  # cancelled or interrupted: stop at once, the next run repairs
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

    def _started(self) -> list[asyncio.Task[Any]]:
        return [*self.embedding, *(write for write, _ in self.pending), *([self.pruning] if self.pruning else [])]

    async def _plan_every_batch(self) -> None:
        """Plan the source's groups, one a step after a step that filled a write, else up to the
        runner's limit, and hand each write's worth of changes to :meth:`_embed_and_write`."""
        run, resolved = self.run, self.run.resolved
        source, first, size = iter(resolved.groups(run.resources.settings)), 1, 1
        while groups := list(itertools.islice(source, size)):
            name = f"plan {plan_label(first, groups)}"
            plans, added = await self.steps.plan(name, self.collection, groups, resolved.key, run.seen, self.full)
            run.seen.merge(added)
            for number, (group, plan) in enumerate(zip(groups, plans, strict=True), start=first):
                run.counts.unchanged += plan.unchanged
                if plan.documents:  # the store opens and the backend is asked for while later batches are planned
                    run.resources.open_store_in_background()
                    self.steps.embedding_ahead()
                gathered = self.batcher.add(plan, number)
                if gathered:
                    await self._embed_and_write(*gathered)
                progress.report(group.done, group.total, "indexing")
            first += len(groups)
            size = 1 if any(self.batcher.fills(plan) for plan in plans) else self.steps.group_limit

    async def _embed_and_write(self, plan: BatchPlan, label: str) -> None:
        """Embed a gathered batch and start its write after the ones before it. An overlapping runner
        starts it once fewer than :data:`EMBEDDING_AT_ONCE` batches embed and returns at once, so the
        next batch is planned while this one embeds; a direct runner waits for both."""
        if not self.steps.overlap:
            embedding = asyncio.create_task(self._embed(plan, label))
            await embedding
            self.run.counts.add_written(await self._write(embedding, label, self.tail))
            return
        # This batch is planned: it starts the moment an embedding ends, and the next is planned meanwhile.
        while len(self.embedding) >= EMBEDDING_AT_ONCE:
            await asyncio.wait(self.embedding, return_when=asyncio.FIRST_COMPLETED)
            for done in [task for task in self.embedding if task.done()]:
                self.embedding.remove(done)
                done.result()  # a failed embedding stops the run here, not at its write
        embedding = asyncio.create_task(self._embed(plan, label))
        self.embedding.append(embedding)
        write = asyncio.create_task(self._write(embedding, label, self.tail))
        self.pending.append((write, plan.chunk_count))
        self.tail = write
        # Writes run while later batches embed; once the store is open, at most one waits behind them.
        while self.pending and (self.pending[0][0].done() or self._waiting_too_much()):
            self.run.counts.add_written(await self.pending.popleft()[0])

    async def _embed(self, plan: BatchPlan, label: str) -> EmbeddedBatch:
        """Vectors for a batch with changed documents (none to make for the others), counted into the run."""
        if plan.documents:
            name = f"embed {plural(plan.chunk_count, 'chunk')} of {plural(len(plan.documents), 'document')} ({label})"
            embedded = await self.steps.embed(name, self.collection, plan)
        else:
            embedded = EmbeddedBatch(plan)
        self.run.count_embedded(embedded)
        return embedded

    def _waiting_too_much(self) -> bool:
        """Whether more batches wait to be written than the run keeps: once the store is open, the
        ones embedding and one more; while it opens, up to a bound of batches and chunks."""
        if self.run.resources.store_opened:
            return len(self.pending) > EMBEDDING_AT_ONCE
        chunks = sum(size for _, size in self.pending)
        return len(self.pending) >= AHEAD_WHILE_OPENING_BATCHES or chunks >= AHEAD_WHILE_OPENING_CHUNKS

    async def _write(self, embedding: asyncio.Task[EmbeddedBatch], label: str, after: asyncio.Task[Any] | None) -> WriteResult:
        """The two write steps of a batch once it is embedded, in order: the points, then the registry;
        after the write (or prune) before it (a store takes one writer at a time, and a failed write
        stops the ones after). A batch with nothing changed and no failure writes nothing."""
        batch = await embedding
        if after is not None:
            await after
        if not batch.plan.documents and not batch.plan.failures:
            return WriteResult()
        points = sum(len(d.ids) for d in batch.plan.documents)
        await self.steps.upsert(f"upsert {plural(points, 'point')} ({label})", self.collection, batch)
        return await self.steps.record(f"record {plural(len(batch.plan.documents), 'document')} ({label})", self.collection, batch)

    async def _prune(self, after: asyncio.Task[Any] | None) -> Pruned:
        """Delete what the source no longer holds, after the write before it (one writer at a time)."""
        if after is not None:
            await after
        resolved = self.run.resolved
        name = f"delete what {resolved.key[-80:]} no longer holds"
        return await self.steps.prune(name, self.collection, resolved.key, self.run.seen, resolved.shard)


def plan_label(first: int, groups: Sequence[SourceGroup]) -> str:
    """What a plan step reads, for its task run's name: ``1,024 files (batches 1-4)``."""
    files = sum(len(group.paths) for group in groups)
    objects = sum(len(group.objects) for group in groups)
    records = sum(len(group.records) for group in groups)
    what = f"{objects:,} objects" if objects else f"{files:,} files" if files or not records else f"{records:,} records"
    return f"{what} ({batches_label(first, first + len(groups) - 1)})"
