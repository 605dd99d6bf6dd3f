"""Planning a batch against the registry: what is unchanged, failed, or to be written, and the
screening of the documents a run lists (one id, one document).

Unchanged documents are skipped by content hash without touching the store; a changed one is
chunked, and only its chunks the store does not already hold as they are now are written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from citadel.documents import (
    CHUNKER_VERSION,
    Chunk,
    Document,
    LoadFailure,
    SourceGroup,
    chunk_sections,
    chunk_text,
    has_rich_files,
    load_group,
)
from citadel.hashing import point_id, sha256_text
from citadel.registry import ChunkRow, DeadLetter, DocumentRecord, Registry, StoredDocument
from citadel.resources import Resources

if TYPE_CHECKING:
    from citadel.documents import ParserPool
    from citadel.settings import Settings

Change = Literal["added", "updated", "repaired"]


class OldChunk(Protocol):
    """A chunk the registry holds for a document (``Registry.get_chunks``)."""

    @property
    def point_id(self) -> str: ...
    @property
    def chunk_hash(self) -> str: ...
    @property
    def state(self) -> str: ...


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
    changed, unrecorded, refetched = _sort_out(plan, docs, stored, chunking, full)
    if unrecorded:
        await registry.record_chunking(collection, unrecorded, chunking)
    if refetched:
        await registry.record_fingerprints(collection, refetched)
    if not changed:
        return plan
    old_chunks = await registry.get_chunks(collection, [d.id for d, _ in changed])
    indexed_at = _now()
    for doc, content_hash in changed:
        plan.documents.append(_plan_document(
            collection, model, doc, content_hash, stored.get(doc.id), old_chunks.get(doc.id, []),
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, chunking=chunking, indexed_at=indexed_at, full=full,
        ))
    return plan


def _sort_out(
    plan: BatchPlan, docs: list[Document], stored: dict[str, StoredDocument], chunking: str, full: bool
) -> tuple[list[tuple[Document, str]], list[str], dict[str, str]]:
    """Count the unchanged documents and refuse another source's ids (into ``plan``); returns the
    changed documents with their content hashes, the unchanged ones whose chunking the registry
    has not noted yet, and the unchanged ones read from an object whose fingerprint changed."""
    changed: list[tuple[Document, str]] = []
    unrecorded: list[str] = []
    refetched: dict[str, str] = {}
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
            if doc.fingerprint and known.fingerprint != doc.fingerprint:
                refetched[doc.id] = doc.fingerprint
            if known.chunking == chunking:
                plan.unchanged += 1
                continue
            if not known.chunking:  # indexed before the registry kept the chunk settings
                plan.unchanged += 1
                unrecorded.append(doc.id)
                continue
        changed.append((doc, content_hash))
    return changed, unrecorded, refetched


def _plan_document(
    collection: str, model: str, doc: Document, content_hash: str, known: StoredDocument | None, old: Sequence[OldChunk],
    *, chunk_size: int, chunk_overlap: int, chunking: str, indexed_at: str, full: bool,
) -> PlannedDocument:
    """A changed document's chunks, and which of them to write, reuse, keep or delete."""
    pieces, metadata = _chunks(doc, chunk_size, chunk_overlap)
    # The point id covers all a payload says but when it was written: a point whose id is
    # stored already holds this chunk as it is now.
    keys = {id(m): sha256_text(doc.source + "\x00" + json.dumps(m, sort_keys=True, default=str))[:16] for m in metadata}
    rows = [
        ChunkRow(point_id(collection, doc.id, c.index, f"{c.hash}\x1f{keys[id(m)]}"), c.index, c.hash)
        for c, m in zip(pieces, metadata, strict=True)
    ]
    new_ids = {row.point_id for row in rows}
    indexed = [c for c in old if c.state == "indexed"]
    # Only a document whose points the store holds (not one awaiting repair or half-written) keeps any in place.
    in_place = {c.point_id for c in indexed} if not full and known is not None and known.status == "indexed" else set()
    written = [(c, row, m) for c, row, m in zip(pieces, rows, metadata, strict=True) if row.point_id not in in_place]
    by_hash = {c.chunk_hash: c.point_id for c in indexed}
    return PlannedDocument(
        record=DocumentRecord(
            doc.id, doc.source, content_hash, rows, origin=doc.origin or doc.id, chunking=chunking, fingerprint=doc.fingerprint
        ),
        change=_change(known, content_hash),
        texts=[c.text for c, _, _ in written],
        payloads=[
            {
                "document_id": doc.id,
                "source": doc.source,
                "chunk_index": c.index,
                "text": c.text,
                "chunk_hash": c.hash,
                "model": model,
                "indexed_at": indexed_at,
                "metadata": m,
            }
            for c, _, m in written
        ],
        ids=[row.point_id for _, row, _ in written],
        reuse={} if full else {i: by_hash[c.hash] for i, (c, _, _) in enumerate(written) if c.hash in by_hash},
        stale=[c.point_id for c in old if c.point_id not in new_ids],
        kept=len(rows) - len(written),
    )


def _chunks(doc: Document, size: int, overlap: int) -> tuple[list[Chunk], list[dict[str, Any]]]:
    """A document's chunks and each one's metadata: the document's, and for a parsed file also
    where the chunk was found (its page, its section's headings)."""
    if not doc.sections:
        pieces = chunk_text(doc.text, size, overlap)
        return pieces, [doc.metadata] * len(pieces)
    placed = chunk_sections(doc.sections, size, overlap)
    located: dict[int, dict[str, Any]] = {}  # one metadata object per section: chunks share it
    for _, section in placed:
        located.setdefault(id(section), {**doc.metadata, **section.location()})
    return [c for c, _ in placed], [located[id(section)] for _, section in placed]


def _change(known: StoredDocument | None, content_hash: str) -> Change:
    """How a re-written document counts: new (or never confirmed in the store), changed, or only
    repaired (the store lost its points; its content is what the registry has)."""
    if known is None or known.status == "pending":
        return "added"
    if known.status == "repair" and known.content_hash == content_hash:
        return "repaired"
    return "updated"


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


def _parsers(settings: Settings) -> ParserPool:
    """The process's parser pool: pebble and the pool are imported only by a source that parses."""
    from citadel.documents import shared_pool

    return shared_pool(settings)


async def plan_groups(
    resources: Resources, collection: str, groups: Sequence[SourceGroup], source: str, seen: SeenDocuments,
    full: bool = False,
) -> tuple[list[BatchPlan], SeenDocuments]:
    """Read groups of the source one at a time and plan each (what is unchanged, failed or to be
    written), with the documents they add to ``seen``; the caller notes them once the plans are
    kept, so planning the same groups again (a retried step) screens them against the same run."""
    settings = resources.settings
    registry = await resources.registry()
    chunking = chunking_key(settings.chunk_size, settings.chunk_overlap)
    plans: list[BatchPlan] = []
    added = SeenDocuments()
    for group in groups:
        skipped: dict[str, list[str]] = {}
        if group.objects and not full:  # an object listed as it was read last is not fetched again
            fingerprints = {entry.uri: entry.fingerprint for entry in group.objects}
            skipped = await registry.unchanged_objects(collection, source, fingerprints, chunking)
        if group.store is not None:
            from citadel.documents import load_objects  # obstore, only for a source in object storage

            todo = [entry for entry in group.objects if entry.uri not in skipped]
            loaded = await asyncio.to_thread(
                load_objects, todo, group.store, source, settings.max_file_bytes, partial(_parsers, settings)
            )
        elif has_rich_files(group):  # parsing takes seconds: the event loop goes on embedding meanwhile
            loaded = await asyncio.to_thread(load_group, group, source, settings.max_file_bytes, partial(_parsers, settings))
        else:
            loaded = load_group(group, source, settings.max_file_bytes)
        items, added = seen.screen(loaded, added)
        plan = await plan_batch(
            registry, collection, resources.embedder.model, items,
            chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap, full=full,
        )
        for ids in skipped.values():
            plan.unchanged += len(ids)
            added.ids.update(ids)
        plans.append(plan)
    return plans, added
