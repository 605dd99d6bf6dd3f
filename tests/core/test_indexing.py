"""Pruning decisions of the core indexing steps, against a real registry."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from citadel.documents import shard_of
from citadel.hashing import point_id, sha256_text
from citadel.indexing import SeenDocuments, find_gone_documents
from citadel.registry import ChunkRow, DocumentRecord, Registry, documents

MODEL = "m"


async def test_sharded_pruning_leaves_rows_without_an_origin_to_a_whole_run(tmp_path: Path) -> None:
    """Rows from before origins were recorded cannot say their shard; no shard may delete them."""
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
    await registry.init()
    try:
        ids = [f"/corpus/records.jsonl#{n}" for n in range(8)]
        records = [
            DocumentRecord(i, "/corpus", sha256_text(i), [ChunkRow(point_id("c", i, 0, sha256_text(i)), 0, sha256_text(i))])
            for i in ids
        ]
        await registry.write_intent("c", MODEL, records)
        await registry.commit_documents("c", MODEL, records)
        async with registry.engine.begin() as conn:  # as the schema v1 -> v2 upgrade leaves them
            await conn.execute(sa.update(documents).values(origin=""))
        for shard in range(2):
            assert await find_gone_documents(registry, "c", "/corpus", SeenDocuments(), (shard, 2)) == []
        assert sorted(await find_gone_documents(registry, "c", "/corpus", SeenDocuments())) == sorted(ids)
        assert {shard_of(i, 2) for i in ids} == {0, 1}, "the ids alone would have split them over both shards"
    finally:
        await registry.aclose()
