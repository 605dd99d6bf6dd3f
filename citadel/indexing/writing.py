"""Writing a planned batch: its vectors (reused, cached or embedded), its points in the store,
its documents in the registry; and the prune of what a source no longer holds.

The order of writes makes a run killed at any point safe to run again: pending intents in the
registry, then points in the store, then the registry marks the documents indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

import citadel.indexing.bluegreen as bluegreen
from citadel.collections import check_collection_name, versioned
from citadel.documents import shard_of
from citadel.errors import EmbedderError
from citadel.indexing.planning import BatchPlan, SeenDocuments
from citadel.registry import DeadLetter, Registry
from citadel.resources import Resources

# Statuses that blame the configuration (bad key, unknown model), never one document.
_BACKEND_MISCONFIGURED = {401, 403, 404}


@dataclass
class EmbeddedBatch:
    """A plan with a vector for every chunk of every document that could be embedded."""

    plan: BatchPlan
    # One row per chunk of ``plan.documents``, in order: one buffer for the batch, written to the store as it is.
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    chunks_embedded: int = 0
    cache_hits: int = 0
    chunks_reused: int = 0

    @property
    def failed(self) -> int:
        """Documents of the batch that failed: could not be read or chunked, or could not be embedded."""
        return len(self.plan.failures)


@dataclass
class WriteResult:
    added: int = 0
    updated: int = 0
    repaired: int = 0
    chunks_written: int = 0
    points_deleted: int = 0


@dataclass(frozen=True)
class Pruned:
    """What deleting the documents a source no longer holds did."""

    documents: int = 0
    points: int = 0


async def _embed_texts(resources: Resources, texts: list[str]) -> tuple[np.ndarray, int, int]:
    result = await resources.cached_embedder.embed(texts)
    return result.vectors, result.embedded, result.cache_hits


async def embed_plan(resources: Resources, collection: str, plan: BatchPlan) -> EmbeddedBatch:
    """Vectors for every planned chunk: reused from the store when the same text was indexed, else
    through the cache. A document the embedder rejects goes to the dead letters, not the batch."""
    # A copy: isolating failed documents edits the plan, and a retried task gets the original again.
    plan = replace(plan, documents=list(plan.documents), failures=list(plan.failures))
    resources.open_store_in_background()  # the batch will be written: load the store while it is embedded
    reuse_ids = [pid for doc in plan.documents for pid in doc.reuse.values()]
    reused = await (await resources.open_store()).retrieve_vectors(collection, reuse_ids) if reuse_ids else {}
    starts = _row_starts(plan)
    batch = EmbeddedBatch(plan, np.zeros((starts[-1], resources.embedder.dimensions), dtype=np.float32))
    wanted: list[tuple[int, int]] = []  # (document index, chunk position) needing the embedder
    for d_index, doc in enumerate(plan.documents):
        batch.chunks_reused += doc.kept  # their vectors stay where they are
        for position in range(len(doc.texts)):
            old = doc.reuse.get(position)
            if old is not None and old in reused:
                batch.vectors[starts[d_index] + position] = reused[old]
                batch.chunks_reused += 1
            else:
                wanted.append((d_index, position))
    wanted = await _reuse_from_previous_version(resources, collection, batch, wanted)
    if not wanted:
        return batch
    try:
        matrix, embedded, hits = await _embed_texts(resources, [plan.documents[d].texts[p] for d, p in wanted])
    except EmbedderError as exc:
        if exc.transient or exc.backend or exc.status in _BACKEND_MISCONFIGURED:
            raise  # the backend is down or misconfigured: no document is at fault
        return await _embed_documents_one_by_one(resources, batch, wanted)
    if len(wanted) == starts[-1]:  # every row, in order (a first index): the embedder's matrix is the batch's
        batch.vectors = matrix
    else:
        batch.vectors[[starts[d] + p for d, p in wanted]] = matrix
    batch.chunks_embedded += embedded
    batch.cache_hits += hits
    return batch


def _row_starts(plan: BatchPlan) -> list[int]:
    """The row of each planned document's first chunk in the batch's vectors, then the rows in all."""
    starts = [0]
    for doc in plan.documents:
        starts.append(starts[-1] + len(doc.texts))
    return starts


async def previous_version(resources: Resources, collection: str) -> str | None:
    """The collection a blue-green version replaces (what its alias serves, or the plain collection
    of its name), when it holds vectors of the same model; None for any other collection."""
    base = versioned(collection)
    if base is None:
        return None
    previous = await bluegreen.serving(resources, base)
    if previous == collection:
        return None
    known = await (await resources.registry()).collection(previous)
    return previous if known is not None and known[0] == resources.embedder.model else None


async def _reuse_from_previous_version(
    resources: Resources, collection: str, batch: EmbeddedBatch, wanted: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Fill what a blue-green build needs from the version it replaces, by chunk text: a rebuild (to
    add lexical vectors, or after a settings change) embeds only what is new. Returns what is left."""
    previous = await previous_version(resources, collection) if wanted else None
    if previous is None:
        return wanted
    plan = batch.plan
    stored = await (await resources.registry()).get_chunks(previous, list({plan.documents[d].record.id for d, _ in wanted}))
    by_hash = {doc: {c.chunk_hash: c.point_id for c in found if c.state == "indexed"} for doc, found in stored.items()}
    sources = {
        (d, p): old for d, p in wanted
        if (old := by_hash.get(plan.documents[d].record.id, {}).get(plan.documents[d].payloads[p]["chunk_hash"]))
    }
    reused = await (await resources.open_store()).retrieve_vectors(previous, list(set(sources.values()))) if sources else {}
    starts = _row_starts(plan)
    left = []
    for d_index, position in wanted:
        old = sources.get((d_index, position))
        if old is not None and old in reused:
            batch.vectors[starts[d_index] + position] = reused[old]
            batch.chunks_reused += 1
        else:
            left.append((d_index, position))
    return left


async def _embed_documents_one_by_one(resources: Resources, batch: EmbeddedBatch, wanted: list[tuple[int, int]]) -> EmbeddedBatch:
    """Isolate the documents that make the embedder fail, so the rest of the batch goes through."""
    per_doc: dict[int, list[int]] = {}
    for d_index, position in wanted:
        per_doc.setdefault(d_index, []).append(position)
    failed: set[int] = set()
    starts = _row_starts(batch.plan)
    for d_index, positions in per_doc.items():
        doc = batch.plan.documents[d_index]
        try:
            matrix, embedded, hits = await _embed_texts(resources, [doc.texts[p] for p in positions])
        except EmbedderError as exc:
            if exc.transient or exc.backend or exc.status in _BACKEND_MISCONFIGURED:
                raise
            failed.add(d_index)
            batch.plan.failures.append(DeadLetter(doc.record.id, doc.record.source, "embed", exc.message))
            continue
        batch.vectors[[starts[d_index] + p for p in positions]] = matrix
        batch.chunks_embedded += embedded
        batch.cache_hits += hits
    if failed:
        kept = [i for i in range(len(batch.plan.documents)) if i not in failed]
        batch.vectors = batch.vectors[[row for i in kept for row in range(starts[i], starts[i + 1])]]
        batch.plan.documents = [batch.plan.documents[i] for i in kept]
    return batch


async def upsert_vectors(resources: Resources, collection: str, batch: EmbeddedBatch) -> int:
    """Record the intent, store the points, then delete the ones they replace; returns points written.

    The registry learns every point id before the store holds it, so no crash leaves a point
    the registry does not know.
    """
    plan = batch.plan
    if not plan.documents:
        return 0
    registry = await resources.registry()
    model = resources.embedder.model
    store = await resources.open_store()
    await store.ensure_collection(collection, resources.embedder.dimensions, model)
    await registry.write_intent(collection, model, [d.record for d in plan.documents])
    ids = [pid for d in plan.documents for pid in d.ids]
    payloads = [p for d in plan.documents for p in d.payloads]
    if ids:
        await store.upsert(collection, ids, batch.vectors, payloads)
    await store.delete(collection, [pid for d in plan.documents for pid in d.stale])
    return len(ids)


async def record_documents(resources: Resources, collection: str, batch: EmbeddedBatch) -> WriteResult:
    """After the store acknowledged a batch: mark its documents indexed and its failures dead-lettered."""
    registry = await resources.registry()
    plan = batch.plan
    await registry.commit_documents(collection, resources.embedder.model, [d.record for d in plan.documents])
    await registry.record_dead_letters(collection, plan.failures)
    written = sum(len(d.ids) for d in plan.documents)
    await registry.note_written(written)
    changes = [d.change for d in plan.documents]
    return WriteResult(
        added=changes.count("added"),
        updated=changes.count("updated"),
        repaired=changes.count("repaired"),
        chunks_written=written,
        points_deleted=sum(len(d.stale) for d in plan.documents),
    )


async def delete_documents(resources: Resources, collection: str, document_ids: Sequence[str]) -> Pruned:
    """Remove documents' points from the store, then from the registry (safe to repeat)."""
    if not document_ids:
        return Pruned()
    registry = await resources.registry()
    points = await registry.point_ids(collection, document_ids)
    await (await resources.open_store()).delete(collection, points)
    await registry.delete_documents(collection, document_ids)
    return Pruned(len(document_ids), len(points))


async def find_gone_documents(
    registry: Registry, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None = None
) -> list[str]:
    """Registered documents of ``source`` (of one ``(shard, shards)`` when given) that its
    complete listing no longer holds; records of files that failed to load whole are kept."""
    gone: list[str] = []
    async for page in registry.iter_documents(collection, source):
        for doc_id, origin in page:
            if doc_id in seen.ids or (origin and origin in seen.unreadable):
                continue
            if shard is not None and (not origin or shard_of(origin, shard[1]) != shard[0]):
                # Another shard's document: its own run decides. A row from before origins were
                # recorded (schema v1) cannot tell its shard; an unsharded run decides for it.
                continue
            gone.append(doc_id)
    return gone


async def prune_source(
    resources: Resources, collection: str, source: str, seen: SeenDocuments, shard: tuple[int, int] | None = None
) -> Pruned:
    """After a complete listing of ``source``: delete what it no longer holds, and say how many
    documents and points that was. Needs only what the listing saw, so it may run while the run still embeds."""
    gone = await find_gone_documents(await resources.registry(), collection, source, seen, shard)
    return await delete_documents(resources, collection, gone)


async def resolve_dead_letters(resources: Resources, collection: str, source: str, seen: SeenDocuments) -> int:
    """After a complete run of a whole source: remove the dead letters of its documents that did
    not fail again (fixed, deleted, or unchanged since). Needs every embedding of the run done,
    since ``seen.failed`` grows until then. A shard cannot tell another shard's dead letters from
    resolved ones, so it never calls this."""
    return await (await resources.registry()).resolve_dead_letters(collection, source, seen.failed)


async def prepare_collection(resources: Resources, collection: str) -> None:
    """Refuse a collection of another model or size before anything is written.

    The registry answers without opening the store; only a collection it has never seen is
    checked against (and created in) the store itself.
    """
    check_collection_name(collection)
    registry = await resources.registry()
    embedder = resources.embedder
    if await registry.collection(collection) is None:
        await (await resources.open_store()).ensure_collection(collection, embedder.dimensions, embedder.model)
    await registry.ensure_collection(collection, embedder.model, embedder.dimensions)


