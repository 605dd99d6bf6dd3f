"""An index run's steps as Prefect tasks: the runner the index-corpus flow hands the core's driver
(``citadel.indexing.index_batches``)."""

from __future__ import annotations

from citadel.documents import SourceGroup
from citadel.indexing import BatchPlan, EmbeddedBatch, SeenDocuments, WriteResult
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


class TaskSteps:
    """Each step a task run named after what it does, its heavy inputs passed as they are; writes
    overlap the planning and embedding of the next batches. Embedding holds one slot of the
    backend's global limit, asked for when a batch first has changes (an unchanged run never
    asks) and held until :meth:`aclose`, which the flow calls when the run ends."""

    overlap = True
    group_limit = GROUPS_PER_PLAN_STEP

    def __init__(self, settings: Settings, resources: Resources) -> None:
        self.settings = settings
        self.resources = resources
        self.slot = EarlySlot(settings)

    def embedding_ahead(self) -> None:
        self.slot.ask()

    async def aclose(self) -> None:
        """Give the embedding slot back (or stop asking for it)."""
        await self.slot.aclose()

    async def plan(
        self, name: str, collection: str, groups: list[SourceGroup], source: str, seen: SeenDocuments, full: bool
    ) -> tuple[list[BatchPlan], SeenDocuments]:
        step = plan_batch.with_options(task_run_name=name)
        return await step(self.settings, collection, as_is(groups), source, as_is(seen), full)

    async def embed(self, name: str, collection: str, plan: BatchPlan) -> EmbeddedBatch:
        await self.slot.wait()
        return await embed_chunks.with_options(task_run_name=name)(self.settings, collection, as_is(plan))

    async def upsert(self, name: str, collection: str, batch: EmbeddedBatch) -> int:
        return await upsert_vectors.with_options(task_run_name=name)(self.settings, collection, as_is(batch))

    async def record(self, name: str, collection: str, batch: EmbeddedBatch) -> WriteResult:
        return await record_documents.with_options(task_run_name=name)(self.settings, collection, as_is(batch))

    async def prune(self, name: str, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None) -> int:
        step = delete_stale_documents.with_options(task_run_name=name)
        return await step(self.settings, collection, source, as_is(seen), shard)

    async def resolve(self, name: str, collection: str, source: str, seen: SeenDocuments) -> int:
        """Only when the source has dead letters: a task run costs the Prefect server's time."""
        if not await (await self.resources.registry()).has_dead_letters(collection, source):
            return 0
        return await resolve_dead_letters.with_options(task_run_name=name)(self.settings, collection, source, as_is(seen))
