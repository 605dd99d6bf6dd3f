"""The registry's collections, documents and chunks: which model fills a collection, what each
document was indexed as, and the write-ahead intent and commit around every write to the store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from citadel.errors import CollectionMismatchError
from citadel.registry.base import RegistryBase, utcnow
from citadel.registry.idlists import among, not_among
from citadel.registry.schema import chunks, collections, dead_letters, documents


@dataclass(frozen=True)
class StoredDocument:
    id: str
    content_hash: str
    status: str
    chunk_count: int
    source: str = ""
    chunking: str = ""  # the chunk settings it was split with; "" for rows older than schema v3
    fingerprint: str = ""  # its object's "ETag:size" when it was read; "" for files


@dataclass(frozen=True)
class StoredChunk:
    point_id: str
    position: int
    chunk_hash: str
    state: str


@dataclass(frozen=True)
class ChunkRow:
    point_id: str
    position: int
    chunk_hash: str


@dataclass
class DocumentRecord:
    """What the registry keeps of one document once its vectors are stored."""

    id: str
    source: str
    content_hash: str
    chunks: list[ChunkRow] = field(default_factory=list)
    origin: str = ""
    chunking: str = ""
    fingerprint: str = ""


@dataclass
class DeadLetter:
    document_id: str
    source: str
    stage: str
    error: str


def chunked(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_collection_model(name: str, known: tuple[str, int], model: str, dimensions: int) -> None:
    """Refuse to mix models: ``known`` is the (model, dimensions) a collection was indexed with."""
    if known != (model, dimensions):
        raise CollectionMismatchError(
            f"collection {name!r} is indexed with {known[0]} ({known[1]} dimensions), not {model} "
            f"({dimensions} dimensions); choose another collection or the same embedder"
        )

def _ends(letter: str) -> list[int]:
    """Where the object URI in a dead letter's id may end: at each "#", or at its end."""
    return [index for index, char in enumerate(letter) if char == "#"] + [len(letter)]


class DocumentRows(RegistryBase):
    """The collections, documents and chunks of a registry."""

    # collections -------------------------------------------------------------------------
    async def collection(self, name: str) -> tuple[str, int] | None:
        """The (model, dimensions) of collection ``name``, or None when unknown."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(collections.c.model, collections.c.dimensions).where(collections.c.name == name))).first()
        return (row.model, row.dimensions) if row else None

    async def collection_models(self) -> dict[str, str]:
        """Every collection the registry knows, with its model."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(collections.c.name, collections.c.model).order_by(collections.c.name))
        return {row.name: row.model for row in rows}

    async def ensure_collection(self, name: str, model: str, dimensions: int) -> None:
        """Remember which model fills ``name``; another model or size is refused before any write."""
        known = await self.collection(name)
        if known is None:
            async with self.engine.begin() as conn:
                stmt = self.insert_statement(collections).values(name=name, model=model, dimensions=dimensions, created_at=utcnow())
                await conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
            known = await self.collection(name)
        assert known is not None
        check_collection_model(name, known, model, dimensions)

    async def forget_collection(self, name: str) -> None:
        """Drop every registry row of a collection (used by ``--full``)."""
        async with self.engine.begin() as conn:
            for table in (chunks, documents, dead_letters):
                await conn.execute(table.delete().where(table.c.collection == name))
            await conn.execute(collections.delete().where(collections.c.name == name))

    # documents ---------------------------------------------------------------------------
    async def get_documents(self, collection: str, ids: Sequence[str]) -> dict[str, StoredDocument]:
        found: dict[str, StoredDocument] = {}
        async with self.engine.connect() as conn:
            for part in chunked(list(ids)):
                query = sa.select(
                    documents.c.id, documents.c.content_hash, documents.c.status, documents.c.chunk_count,
                    documents.c.source, documents.c.chunking, documents.c.fingerprint,
                ).where(documents.c.collection == collection, among(documents.c.id, part))
                for row in await conn.execute(query):
                    found[row.id] = StoredDocument(
                        row.id, row.content_hash, row.status, row.chunk_count, row.source, row.chunking, row.fingerprint
                    )
        return found

    async def get_chunks(self, collection: str, document_ids: Sequence[str]) -> dict[str, list[StoredChunk]]:
        found: dict[str, list[StoredChunk]] = {doc_id: [] for doc_id in document_ids}
        async with self.engine.connect() as conn:
            for part in chunked(list(document_ids)):
                query = sa.select(chunks).where(chunks.c.collection == collection, among(chunks.c.document_id, part))
                for row in await conn.execute(query):
                    found[row.document_id].append(StoredChunk(row.point_id, row.position, row.chunk_hash, row.state))
        return found

    async def write_intent(self, collection: str, model: str, records: Sequence[DocumentRecord]) -> None:
        """Before writing points: mark the documents pending and remember every point id about to exist."""
        if not records:
            return
        now = utcnow()
        async with self.engine.begin() as conn:
            doc_rows = [
                dict(collection=collection, id=r.id, source=r.source, origin=r.origin or r.id, content_hash="",
                     chunk_count=0, model=model, status="pending", created_at=now, updated_at=now)
                for r in records
            ]
            stmt = self.insert_statement(documents)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["collection", "id"], set_={"status": "pending", "updated_at": stmt.excluded.updated_at}
                ),
                doc_rows,
            )
            chunk_rows = [
                dict(collection=collection, point_id=c.point_id, document_id=r.id, position=c.position,
                     chunk_hash=c.chunk_hash, state="pending")
                for r in records
                for c in r.chunks
            ]
            if chunk_rows:
                await conn.execute(
                    self.insert_statement(chunks).on_conflict_do_nothing(index_elements=["collection", "point_id"]), chunk_rows
                )

    async def commit_documents(self, collection: str, model: str, records: Sequence[DocumentRecord]) -> None:
        """After the store acknowledged the points: keep exactly these chunks and mark the documents indexed."""
        if not records:
            return
        now = utcnow()
        document_ids = [r.id for r in records]
        async with self.engine.begin() as conn:
            # One statement for the batch (a point id belongs to one document): an edited corpus
            # commits hundreds of documents, each keeping most of its chunks.
            keep_all = [c.point_id for r in records for c in r.chunks]
            mine = (chunks.c.collection == collection, among(chunks.c.document_id, document_ids))
            await conn.execute(chunks.delete().where(*mine, not_among(chunks.c.point_id, keep_all)))
            await conn.execute(
                chunks.update()
                .where(chunks.c.collection == collection, among(chunks.c.document_id, document_ids), chunks.c.state != "indexed")
                .values(state="indexed")
            )
            stmt = self.insert_statement(documents)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["collection", "id"],
                    set_={
                        "source": stmt.excluded.source,
                        "origin": stmt.excluded.origin,
                        "content_hash": stmt.excluded.content_hash,
                        "chunking": stmt.excluded.chunking,
                        "fingerprint": stmt.excluded.fingerprint,
                        "chunk_count": stmt.excluded.chunk_count,
                        "model": stmt.excluded.model,
                        "status": "indexed",
                        "updated_at": stmt.excluded.updated_at,
                    },
                ),
                [
                    dict(collection=collection, id=r.id, source=r.source, origin=r.origin or r.id,
                         content_hash=r.content_hash, chunking=r.chunking, fingerprint=r.fingerprint, chunk_count=len(r.chunks),
                         model=model, status="indexed",
                         created_at=now, updated_at=now)
                    for r in records
                ],
            )
            await conn.execute(
                dead_letters.delete().where(dead_letters.c.collection == collection, among(dead_letters.c.document_id, document_ids))
            )

    async def record_chunking(self, collection: str, document_ids: Sequence[str], chunking: str) -> None:
        """Note the chunk settings of unchanged documents indexed before the registry kept them."""
        async with self.engine.begin() as conn:
            for part in chunked(list(document_ids)):
                await conn.execute(
                    documents.update()
                    .where(documents.c.collection == collection, among(documents.c.id, part), documents.c.chunking == "")
                    .values(chunking=chunking)
                )

    async def record_fingerprints(self, collection: str, fingerprints: dict[str, str]) -> None:
        """Note the fingerprints of objects read again whose documents came out unchanged (an
        object written again as it was): the next run skips them without fetching."""
        async with self.engine.begin() as conn:
            for doc_id, fingerprint in fingerprints.items():
                await conn.execute(
                    documents.update().where(documents.c.collection == collection, documents.c.id == doc_id).values(fingerprint=fingerprint)
                )

    async def unchanged_objects(
        self, collection: str, source: str, fingerprints: dict[str, str], chunking: str
    ) -> dict[str, list[str]]:
        """The objects of ``fingerprints`` (URI: "ETag:size" as listed) that need not be fetched, with
        their document ids: every document read from one is indexed, from the same fingerprint and
        with the same chunking, and none of them waits in the dead letters (those are read again)."""
        rows: dict[str, list[tuple[str, bool]]] = {}
        async with self.engine.connect() as conn:
            for part in chunked(list(fingerprints)):
                query = sa.select(
                    documents.c.id, documents.c.origin, documents.c.fingerprint, documents.c.status, documents.c.chunking
                ).where(documents.c.collection == collection, among(documents.c.origin, part))
                for row in await conn.execute(query):
                    current = row.status == "indexed" and row.chunking == chunking and row.fingerprint == fingerprints[row.origin]
                    rows.setdefault(row.origin, []).append((row.id, current))
            letters = sa.select(dead_letters.c.document_id).where(dead_letters.c.collection == collection, dead_letters.c.source == source)
            # A dead letter's id is its object's URI, or the URI and "#" and a record's number.
            failing = {letter[:end] for letter in (await conn.execute(letters)).scalars() for end in _ends(letter)}
        return {
            origin: [doc_id for doc_id, _ in found]
            for origin, found in rows.items()
            if origin not in failing and all(current for _, current in found)
        }

    async def iter_documents(
        self, collection: str, source: str, page: int = 5000
    ) -> AsyncIterator[list[tuple[str, str]]]:
        """(id, origin) of the documents registered from ``source``, a page at a time."""
        last = ""
        while True:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(documents.c.id, documents.c.origin)
                        .where(documents.c.collection == collection, documents.c.source == source, documents.c.id > last)
                        .order_by(documents.c.id)
                        .limit(page)
                    )
                ).all()
            if not rows:
                return
            yield [(row.id, row.origin) for row in rows]
            last = rows[-1].id

    async def point_ids(self, collection: str, document_ids: Sequence[str]) -> list[str]:
        stored = await self.get_chunks(collection, document_ids)
        return [c.point_id for doc in stored.values() for c in doc]

    async def delete_documents(self, collection: str, document_ids: Sequence[str]) -> None:
        """Forget documents whose points are already deleted from the store."""
        async with self.engine.begin() as conn:
            for part in chunked(list(document_ids)):
                for table in (chunks, documents, dead_letters):
                    column = table.c.document_id if "document_id" in table.c else table.c.id
                    await conn.execute(table.delete().where(table.c.collection == collection, among(column, part)))

