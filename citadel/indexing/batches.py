"""Incremental, idempotent indexing of document batches: plan, embed, write, prune.

Each step takes a whole batch. The order of writes makes a run killed at any point safe to run
again: pending intents in the registry, then points in the store, then the registry marks the
documents indexed. Unchanged documents are skipped by content hash without touching the store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from citadel.collections import check_collection_name
from citadel.documents import CHUNKER_VERSION, Document, LoadFailure, SourceGroup, chunk_text, load_group, shard_of
from citadel.errors import EmbedderError
from citadel.hashing import point_id, sha256_text
from citadel.registry import ChunkRow, DeadLetter, DocumentRecord, Registry, StoredDocument
from citadel.resources import Resources

# Statuses that blame the configuration (bad key, unknown model), never one document.
_BACKEND_MISCONFIGURED = {401, 403, 404}


Change = Literal["added", "updated", "repaired"]


def chunking_key(chunk_size: int, chunk_overlap: int) -> str:
    """What a document was split with; another key makes it changed, so new settings re-chunk it."""
    return f"{CHUNKER_VERSION}:{chunk_size}/{chunk_overlap}"


@dataclass
class PlannedDocument:
    """A new, changed or repaired document: all its chunks (for the registry), and the ones to write.

    An edited document writes only its difference: a chunk whose point id is already stored (same
    document, position, text, source and metadata) stays as it is, neither read nor written.
    """

    record: DocumentRecord
    change: Change
    texts: list[str]  # of the chunks to write, in the order of ``ids``
    payloads: list[dict[str, Any]]
    ids: list[str] = field(default_factory=list)  # point ids of the chunks to write
    reuse: dict[int, str] = field(default_factory=dict)  # index into ``texts`` -> old point id with the same text
    stale: list[str] = field(default_factory=list)  # point ids to delete once the new ones are stored
    kept: int = 0  # chunks left in place


@dataclass
class BatchPlan:
    """What one batch of documents needs."""

    documents: list[PlannedDocument] = field(default_factory=list)
    unchanged: int = 0
    failures: list[DeadLetter] = field(default_factory=list)

    @property
    def chunk_count(self) -> int:
        return sum(len(d.texts) for d in self.documents)

    @property
    def text_chars(self) -> int:
        return sum(len(text) for d in self.documents for text in d.texts)


def batches_label(first: int, last: int) -> str:
    """Which batches a step covers, for its task run's name: ``batch 3`` or ``batches 3-12``."""
    return f"batch {first}" if first == last else f"batches {first}-{last}"


class WriteBatcher:
    """Changed documents of consecutive batches, gathered into one write.

    An edited corpus has a few changed documents in each batch; writing each batch on its own
    pays the embedder's, the store's and the registry's round trips once per batch. A gathered
    batch is written once it has a batch's worth of documents, or half a batch's bytes of text
    (a batch cut by its files' bytes holds less text than that after parsing, and is written alone).
    """

    def __init__(self, max_documents: int, max_bytes: int) -> None:
        self.max_documents = max_documents
        self.max_chars = max(1, max_bytes // 2)
        self._plan = BatchPlan()
        self._chars = 0
        self._numbers: list[int] = []

    def add(self, plan: BatchPlan, number: int) -> tuple[BatchPlan, str] | None:
        """Gather ``plan`` (batch ``number``); when the gathered batch is full enough to write, it
        and which batches it holds (``batches 3-12``, for its steps' names)."""
        if not plan.documents and not plan.failures:
            return None
        self._plan.documents.extend(plan.documents)
        self._plan.failures.extend(plan.failures)
        self._chars += plan.text_chars
        self._numbers.append(number)
        if len(self._plan.documents) >= self.max_documents or self._chars >= self.max_chars:
            return self.take()
        return None

    def fills(self, plan: BatchPlan) -> bool:
        """Whether ``plan`` alone holds a write's worth (every batch of a first index does)."""
        return len(plan.documents) >= self.max_documents or plan.text_chars >= self.max_chars

    def take(self) -> tuple[BatchPlan, str] | None:
        """What is gathered and which batches it holds (None when nothing is), emptying the batcher."""
        if not self._numbers:
            return None
        gathered = (self._plan, batches_label(self._numbers[0], self._numbers[-1]))
        self._plan, self._chars, self._numbers = BatchPlan(), 0, []
        return gathered


@dataclass
class EmbeddedBatch:
    """A plan with a vector for every chunk of every document that could be embedded."""

    plan: BatchPlan
    vectors: list[np.ndarray]
    chunks_embedded: int = 0
    cache_hits: int = 0
    chunks_reused: int = 0

    @property
    def failed(self) -> int:
        """Documents of the batch that could not be embedded."""
        return len(self.plan.failures)


@dataclass
class WriteResult:
    added: int = 0
    updated: int = 0
    repaired: int = 0
    chunks_written: int = 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def plan_batch(
    registry: Registry,
    collection: str,
    model: str,
    items: Sequence[Document | LoadFailure],
    *,
    chunk_size: int,
    chunk_overlap: int,
    full: bool = False,
) -> BatchPlan:
    """Split a batch into unchanged, failed and to-index documents, chunking only what changed."""
    plan = BatchPlan()
    docs: list[Document] = []
    for item in items:
        if isinstance(item, LoadFailure):
            plan.failures.append(DeadLetter(item.id, item.source, item.stage, item.reason))
        else:
            docs.append(item)
    stored = await registry.get_documents(collection, [d.id for d in docs])
    chunking = chunking_key(chunk_size, chunk_overlap)
    changed: list[tuple[Document, str]] = []
    unrecorded: list[str] = []
    for doc in docs:
        content_hash = doc.content_hash
        known = stored.get(doc.id)
        if doc.inline and known is not None and known.source not in ("", doc.source):
            # Another source's document: replacing it would delete that source's points.
            plan.failures.append(DeadLetter(
                doc.id, doc.source, "load",
                f"the id {doc.id!r} is already indexed in this collection from source {known.source!r}; "
                "ids are unique within a collection, so give this document another id or use another collection",
            ))
            continue
        if not full and known is not None and known.status == "indexed" and known.content_hash == content_hash:
            if known.chunking == chunking:
                plan.unchanged += 1
                continue
            if not known.chunking:  # indexed before the registry kept the chunk settings
                plan.unchanged += 1
                unrecorded.append(doc.id)
                continue
        changed.append((doc, content_hash))
    if unrecorded:
        await registry.record_chunking(collection, unrecorded, chunking)
    if not changed:
        return plan
    old_chunks = await registry.get_chunks(collection, [d.id for d, _ in changed])
    indexed_at = _now()
    for doc, content_hash in changed:
        pieces = chunk_text(doc.text, chunk_size, chunk_overlap)
        # The point id covers all a payload says but when it was written: a point whose id is
        # stored already holds this chunk as it is now.
        payload_key = sha256_text(doc.source + "\x00" + json.dumps(doc.metadata, sort_keys=True, default=str))[:16]
        rows = [ChunkRow(point_id(collection, doc.id, c.index, f"{c.hash}\x1f{payload_key}"), c.index, c.hash) for c in pieces]
        old = old_chunks.get(doc.id, [])
        new_ids = {row.point_id for row in rows}
        indexed = [c for c in old if c.state == "indexed"]
        known = stored.get(doc.id)
        # Only a document whose points the store holds (not one awaiting repair or half-written) keeps any in place.
        in_place = {c.point_id for c in indexed} if not full and known is not None and known.status == "indexed" else set()
        written = [(c, row) for c, row in zip(pieces, rows, strict=True) if row.point_id not in in_place]
        by_hash = {c.chunk_hash: c.point_id for c in indexed}
        planned = PlannedDocument(
            record=DocumentRecord(doc.id, doc.source, content_hash, rows, origin=doc.origin or doc.id, chunking=chunking),
            change=_change(known, content_hash),
            texts=[c.text for c, _ in written],
            payloads=[
                {
                    "document_id": doc.id,
                    "source": doc.source,
                    "chunk_index": c.index,
                    "text": c.text,
                    "chunk_hash": c.hash,
                    "model": model,
                    "indexed_at": indexed_at,
                    "metadata": doc.metadata,
                }
                for c, _ in written
            ],
            ids=[row.point_id for _, row in written],
            reuse={} if full else {i: by_hash[c.hash] for i, (c, _) in enumerate(written) if c.hash in by_hash},
            stale=[c.point_id for c in old if c.point_id not in new_ids],
            kept=len(rows) - len(written),
        )
        plan.documents.append(planned)
    return plan


def _change(known: StoredDocument | None, content_hash: str) -> Change:
    """How a re-written document counts: new (or never confirmed in the store), changed, or only
    repaired (the store lost its points; its content is what the registry has)."""
    if known is None or known.status == "pending":
        return "added"
    if known.status == "repair" and known.content_hash == content_hash:
        return "repaired"
    return "updated"


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
    batch = EmbeddedBatch(plan, [])
    wanted: list[tuple[int, int]] = []  # (document index, chunk position) needing the embedder
    for d_index, doc in enumerate(plan.documents):
        batch.chunks_reused += doc.kept  # their vectors stay where they are
        vectors = np.zeros((len(doc.texts), resources.embedder.dimensions), dtype=np.float32)
        for position in range(len(doc.texts)):
            old = doc.reuse.get(position)
            if old is not None and old in reused:
                vectors[position] = reused[old]
                batch.chunks_reused += 1
            else:
                wanted.append((d_index, position))
        batch.vectors.append(vectors)
    if not wanted:
        return batch
    try:
        matrix, embedded, hits = await _embed_texts(resources, [plan.documents[d].texts[p] for d, p in wanted])
    except EmbedderError as exc:
        if exc.transient or exc.backend or exc.status in _BACKEND_MISCONFIGURED:
            raise  # the backend is down or misconfigured: no document is at fault
        return await _embed_documents_one_by_one(resources, batch, wanted)
    for (d_index, position), vector in zip(wanted, matrix, strict=True):
        batch.vectors[d_index][position] = vector
    batch.chunks_embedded += embedded
    batch.cache_hits += hits
    return batch


async def _embed_documents_one_by_one(resources: Resources, batch: EmbeddedBatch, wanted: list[tuple[int, int]]) -> EmbeddedBatch:
    """Isolate the documents that make the embedder fail, so the rest of the batch goes through."""
    per_doc: dict[int, list[int]] = {}
    for d_index, position in wanted:
        per_doc.setdefault(d_index, []).append(position)
    failed: set[int] = set()
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
        for position, vector in zip(positions, matrix, strict=True):
            batch.vectors[d_index][position] = vector
        batch.chunks_embedded += embedded
        batch.cache_hits += hits
    if failed:
        batch.plan.documents = [d for i, d in enumerate(batch.plan.documents) if i not in failed]
        batch.vectors = [v for i, v in enumerate(batch.vectors) if i not in failed]
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
        await store.upsert(collection, ids, np.vstack(batch.vectors), payloads)
    await store.delete(collection, [pid for d in plan.documents for pid in d.stale])
    return len(ids)


async def record_documents(resources: Resources, collection: str, batch: EmbeddedBatch) -> WriteResult:
    """After the store acknowledged a batch: mark its documents indexed and its failures dead-lettered."""
    registry = await resources.registry()
    plan = batch.plan
    await registry.commit_documents(collection, resources.embedder.model, [d.record for d in plan.documents])
    await registry.record_dead_letters(collection, plan.failures)
    changes = [d.change for d in plan.documents]
    return WriteResult(
        added=changes.count("added"),
        updated=changes.count("updated"),
        repaired=changes.count("repaired"),
        chunks_written=sum(len(d.ids) for d in plan.documents),
    )


async def delete_documents(resources: Resources, collection: str, document_ids: Sequence[str]) -> int:
    """Remove documents' points from the store, then from the registry (safe to repeat)."""
    if not document_ids:
        return 0
    registry = await resources.registry()
    await (await resources.open_store()).delete(collection, await registry.point_ids(collection, document_ids))
    await registry.delete_documents(collection, document_ids)
    return len(document_ids)


@dataclass
class SeenDocuments:
    """What a run has listed so far: document ids, and files that failed to load as a whole."""

    ids: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)

    def note_failures(self, plan: BatchPlan) -> None:
        """Remember which documents failed in this run (their dead letters stay)."""
        self.failed.update(f.document_id for f in plan.failures)

    def screen(
        self, items: Sequence[Document | LoadFailure], batch: SeenDocuments | None = None
    ) -> tuple[list[Document | LoadFailure], SeenDocuments]:
        """``items``, and what they add to what the run has seen (to ``batch``: what the same step
        screened before them), without noting it (a retried step screens its batches again). A
        document whose id the run or the step has already seen becomes a dead letter instead,
        since two documents sharing an id would overwrite each other's points."""
        out: list[Document | LoadFailure] = []
        batch = batch if batch is not None else SeenDocuments()
        for item in items:
            if isinstance(item, Document) and (item.id in self.ids or item.id in batch.ids):
                out.append(LoadFailure(
                    f"{item.id[:1000]} (duplicate)", item.source,
                    f"another document of this run already has the id {item.id!r}; give each document its own id",
                ))
                continue
            batch.ids.add(item.id)
            if isinstance(item, LoadFailure) and item.origin:
                batch.unreadable.add(item.origin)
            out.append(item)
        return out, batch

    def merge(self, other: SeenDocuments) -> None:
        """Note what ``other`` saw."""
        self.ids |= other.ids
        self.unreadable |= other.unreadable
        self.failed |= other.failed


async def plan_groups(
    resources: Resources, collection: str, groups: Sequence[SourceGroup], source: str, seen: SeenDocuments,
    full: bool = False,
) -> tuple[list[BatchPlan], SeenDocuments]:
    """Read groups of the source one at a time and plan each (what is unchanged, failed or to be
    written), with the documents they add to ``seen``; the caller notes them once the plans are
    kept, so planning the same groups again (a retried step) screens them against the same run."""
    settings = resources.settings
    plans: list[BatchPlan] = []
    added = SeenDocuments()
    for group in groups:
        items, added = seen.screen(load_group(group, source, settings.max_file_bytes), added)
        plans.append(await plan_batch(
            await resources.registry(), collection, resources.embedder.model, items,
            chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap, full=full,
        ))
    return plans, added


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
) -> int:
    """After a complete listing of ``source``: delete what it no longer holds. Returns the
    documents deleted. Needs only what the listing saw, so it may run while the run still embeds."""
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


