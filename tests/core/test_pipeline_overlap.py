"""The driver of an overlapping run keeps the embedder busy: the next batch is planned while two
embed, writes stay in batch order, and the counts are exact (the embedding servers let the older
batch's requests go first: tests/core/test_ollama_embedder.py)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from citadel.documents import SourceGroup
from citadel.indexing import (
    BatchPlan,
    EmbeddedBatch,
    IndexRun,
    SeenDocuments,
    WriteResult,
    index_batches,
    prepare_collection,
    resolve_source,
)
from citadel.indexing.pipeline import EMBEDDING_AT_ONCE, DirectSteps
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.testing.corpus import index_state, write_corpus


class Overlapping(DirectSteps):
    """The core's own steps, run as the flow's runner runs them (overlapping), recording what runs when."""

    overlap = True
    group_limit = 1

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        self.events: list[str] = []
        self.embedding = 0
        self.most_embedding = 0
        self.planned_while_embedding = 0
        self.plans = 0

    async def plan(
        self, name: str, collection: str, groups: list[SourceGroup], source: str, seen: SeenDocuments, full: bool
    ) -> tuple[list[BatchPlan], SeenDocuments]:
        # An embedding the driver has just started runs its first step at the loop's next turn: let
        # it, so what is counted is whether one embeds, not whether its task has had a turn yet.
        await asyncio.sleep(0)
        self.planned_while_embedding += self.embedding > 0
        self.plans += 1
        return await super().plan(name, collection, groups, source, seen, full)

    async def embed(self, name: str, collection: str, plan: BatchPlan) -> EmbeddedBatch:
        self.embedding += 1
        self.most_embedding = max(self.most_embedding, self.embedding)
        self.events.append(f"embed start {name.rsplit('(', 1)[1]}")
        try:
            # The embedding server at work until the driver starts planning a later batch, which an
            # overlapping driver does at once; a driver that waited would be seen planning nothing
            # meanwhile (the last batches, with none after them, end after a second). A fixed 50 ms
            # here failed under CI's load, when planning a batch took longer than that.
            planned = self.plans
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_planned(planned), 1.0)
            return await super().embed(name, collection, plan)
        finally:
            self.embedding -= 1
            self.events.append(f"embed end {name.rsplit('(', 1)[1]}")

    async def _until_planned(self, plans: int) -> None:
        while self.plans <= plans:
            await asyncio.sleep(0.005)

    async def upsert(self, name: str, collection: str, batch: EmbeddedBatch) -> int:
        self.events.append(f"upsert {name.rsplit('(', 1)[1]}")
        return await super().upsert(name, collection, batch)

    async def record(self, name: str, collection: str, batch: EmbeddedBatch) -> WriteResult:
        self.events.append(f"record {name.rsplit('(', 1)[1]}")
        return await super().record(name, collection, batch)


async def test_the_next_batches_are_planned_and_embedded_while_one_is_written(
    data_dir: Path, tmp_path: Path, collection_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITADEL_DOCUMENT_BATCH_SIZE", "4")
    corpus = tmp_path / "corpus"
    write_corpus(corpus, files=22, paragraphs=3)  # six batches
    resources = Resources(Settings())
    try:
        await prepare_collection(resources, collection_name)
        steps = Overlapping(resources)
        async with IndexRun(resources, collection_name, resolve_source(str(corpus), settings=resources.settings)) as run:
            await index_batches(run, steps)
        summary = run.summary
    finally:
        await resources.aclose()
    assert summary is not None and summary.added == 22 and summary.chunks_embedded == summary.chunks_written
    assert steps.most_embedding == EMBEDDING_AT_ONCE, "two batches embed at once: the server always has the next"
    assert steps.planned_while_embedding >= 4, "batches are planned while others embed"
    upserts = [event for event in steps.events if event.startswith("upsert")]
    assert upserts == sorted(upserts, key=lambda event: int(event.split()[-1].rstrip(")"))), "writes keep batch order"
    vectors, chunks = await index_state(Settings(), collection_name)
    assert vectors == chunks == summary.chunks_written
