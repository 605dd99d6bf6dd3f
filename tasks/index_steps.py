"""An index run's steps as Prefect tasks: the runner the index-corpus flow hands the core's driver
(``citadel.indexing.index_batches``)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from prefect.client.schemas.objects import State

from citadel.documents import SourceGroup
from citadel.indexing import BatchPlan, EmbeddedBatch, Pruned, SeenDocuments, WriteResult
from citadel.resources import Resources
from citadel.settings import Settings
from tasks.indexing import delete_stale_documents, embed_chunks, plan_batch, record_documents, resolve_dead_letters, upsert_vectors
from tasks.limits import EarlySlot
from tasks.passing import as_is

# Batches read and planned by one step while they hold less than a write's worth of changes (an
# edited corpus). Each task run costs the Prefect server about 35 ms of CPU: 0.3 s less per edited
# run of 3,000 documents, measured. A step after one that filled a write reads a single batch, so
# a first index holds no more planned chunks than with a step per batch.
GROUPS_PER_PLAN_STEP = 4
PLAN_STEPS_SHOWN = 4
"""An embed step's graph edges go to at most this many of the plan steps that fed it."""


class TaskSteps:
    """Each step a task run named after what it does, its heavy inputs passed as they are; writes
    overlap the planning and embedding of the next batches. Embedding holds one slot of the
    backend's global limit, asked for when a batch first has changes (an unchanged run never
    asks) and held until :meth:`aclose`, which the flow calls when the run ends."""

    overlap = True
    group_limit = GROUPS_PER_PLAN_STEP

    def __init__(self, settings: Settings, resources: Resources, before_writes: asyncio.Future[Any] | None = None) -> None:
        self.settings = settings
        self.resources = resources
        self.slot = EarlySlot(settings)
        self.before_writes = before_writes  # what the first write waits for (the collection's creation)
        # The graph's edges: the plan steps not yet followed by an embed (and the last that was),
        # and each batch in flight with the state of the step that last handled it.
        self.planned: list[State[Any]] = []
        self.planned_before: list[State[Any]] = []
        self.upstream: dict[int, tuple[EmbeddedBatch, State[Any]]] = {}

    def embedding_ahead(self) -> None:
        self.slot.ask()

    async def prepared(self) -> None:
        """Wait for what the writes wait for (a run with nothing to write never did): its failure fails the run."""
        if self.before_writes is not None:
            await self.before_writes

    async def aclose(self) -> None:
        """Give the embedding slot back (or stop asking for it); stop what writes would have waited for."""
        await self.slot.aclose()
        if self.before_writes is not None and not self.before_writes.done():
            self.before_writes.cancel()
            await asyncio.gather(self.before_writes, return_exceptions=True)

    async def plan(
        self, name: str, collection: str, groups: list[SourceGroup], source: str, seen: SeenDocuments, full: bool
    ) -> tuple[list[BatchPlan], SeenDocuments]:
        step = plan_batch.with_options(task_run_name=name)
        result, state = await _run(step(self.settings, as_is(collection), as_is(groups), source, as_is(seen), full, return_state=True))
        self.planned.append(state)
        return cast(tuple[list[BatchPlan], SeenDocuments], result)

    async def embed(self, name: str, collection: str, plan: BatchPlan) -> EmbeddedBatch:
        # Fed by the plan steps since the last batch (their plans are gathered into this one): taken
        # before anything is awaited, as the driver starts the next batch's embedding while this one's runs.
        upstream = self.planned[-PLAN_STEPS_SHOWN:] or self.planned_before
        self.planned, self.planned_before = [], upstream[-1:]
        await self.slot.wait()
        step = embed_chunks.with_options(task_run_name=name)
        batch, state = await _run(step(self.settings, as_is(collection), as_is(plan), wait_for=upstream, return_state=True))
        self.upstream[id(batch)] = (batch, state)
        return cast(EmbeddedBatch, batch)

    async def upsert(self, name: str, collection: str, batch: EmbeddedBatch) -> int:
        if self.before_writes is not None:
            await self.before_writes
        step = upsert_vectors.with_options(task_run_name=name)
        points, state = await _run(step(self.settings, as_is(collection), as_is(batch), wait_for=self._made(batch), return_state=True))
        self.upstream[id(batch)] = (batch, state)
        return cast(int, points)

    async def record(self, name: str, collection: str, batch: EmbeddedBatch) -> WriteResult:
        step = record_documents.with_options(task_run_name=name)
        upstream = self._made(batch)
        self.upstream.pop(id(batch), None)
        result, _ = await _run(step(self.settings, as_is(collection), as_is(batch), wait_for=upstream, return_state=True))
        return cast(WriteResult, result)

    def _made(self, batch: EmbeddedBatch) -> list[State[Any]]:
        """The state of the step that last handled ``batch`` (embed, then upsert), for the graph."""
        kept = self.upstream.get(id(batch))
        return [kept[1]] if kept is not None and kept[0] is batch else []

    async def prune(self, name: str, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None) -> Pruned:
        step = delete_stale_documents.with_options(task_run_name=name)
        return await step(self.settings, as_is(collection), as_is(source), as_is(seen), shard)

    async def resolve(self, name: str, collection: str, source: str, seen: SeenDocuments) -> int:
        """Only when the source has dead letters: a task run costs the Prefect server's time."""
        if not await (await self.resources.registry()).has_dead_letters(collection, source):
            return 0
        return await resolve_dead_letters.with_options(task_run_name=name)(self.settings, as_is(collection), as_is(source), as_is(seen))


async def _run(call: Any) -> tuple[Any, State[Any]]:
    """A task call's result and its state: the state is handed to the steps the result feeds as
    ``wait_for`` (already complete, so nothing waits), and the UI's graph then shows the data flow
    plan -> embed -> upsert -> record. The result is passed as it is (quoted), which Prefect
    cannot trace on its own."""
    state = await call
    result = await state.aresult()  # raises the task's own error, as awaiting the task does
    # Only the run's identity goes on, with a token for its result: Prefect reads and walks the
    # result of every state in ``wait_for``, and this one's is the whole batch (a first index of
    # 10,581 chunks took twice as long with it).
    return result.value, state.model_copy(update={"data": True})
