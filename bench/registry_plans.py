"""Benchmark: the registry's queries on a large collection, each timed, the slowest explained.

After a first index of tens of thousands of documents (``bench.saturation_bench --files 30000``
with ``--set CITADEL_DATABASE_URL=...``), this runs on that registry the queries an unchanged
re-run makes (the collection, the run lock and crashed runs, a batch's documents and chunks, the
store check's counts and sample, the prune's walk over the source, the dead letters), times each
and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the slowest: they must stay index scans as the
registry grows. Usage:

    .venv/bin/python -m bench.registry_plans postgresql+asyncpg://postgres@127.0.0.1:5432/citadel_scale
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from citadel.indexing import SeenDocuments
from citadel.indexing.consistency import registry_counts, sample_point_ids
from citadel.indexing.writing import find_gone_documents
from citadel.registry import Registry, documents, find_crashed_runs


async def capture(registry: Registry, collection: str) -> list[dict[str, Any]]:
    """Run an unchanged re-run's registry calls on ``collection``; each statement with its time."""
    seen: list[dict[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        context._bench_started = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append({"sql": statement, "parameters": parameters, "ms": (time.perf_counter() - context._bench_started) * 1000})

    event.listen(registry.engine.sync_engine, "before_cursor_execute", before)
    event.listen(registry.engine.sync_engine, "after_cursor_execute", after)
    async with registry.engine.connect() as conn:
        source = (await conn.execute(sa.select(documents.c.source).where(documents.c.collection == collection).limit(1))).scalar_one()
        ids = (await conn.execute(sa.select(documents.c.id).where(documents.c.collection == collection))).scalars().all()
    seen.clear()
    await registry.collection(collection)
    await find_crashed_runs(registry)
    for start in (0, len(ids) // 2, len(ids) - 256):  # three batches of a re-run's 256 documents
        batch = list(ids[start : start + 256])
        await registry.get_documents(collection, batch)
        await registry.get_chunks(collection, batch)
    await registry_counts(registry, collection)
    await sample_point_ids(registry, collection)
    gone = await find_gone_documents(registry, collection, source, SeenDocuments(ids=set(ids)))
    assert gone == []
    await registry.has_dead_letters(collection, source)
    return seen


async def explain(registry: Registry, statement: dict[str, Any]) -> str:
    async with registry.engine.connect() as conn:
        rows = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement["sql"], statement["parameters"])
        return "\n".join(row[0] for row in rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the registry (a Postgres URL)")
    parser.add_argument("--collection", help="default: the registry's largest collection")
    args = parser.parse_args()
    registry = Registry(args.url)
    await registry.init()
    try:
        async with registry.engine.connect() as conn:
            sizes = (await conn.execute(sa.select(documents.c.collection, sa.func.count()).group_by(documents.c.collection))).all()
        collection = args.collection or max(sizes, key=lambda row: row[1])[0]
        statements = await capture(registry, collection)
        slowest = sorted(statements, key=lambda s: -s["ms"])
        report = {"collection": collection, "documents": dict(sizes)[collection], "statements": len(statements),
                  "total_ms": round(sum(s["ms"] for s in statements), 1),
                  "slowest": [{"ms": round(s["ms"], 2), "sql": " ".join(s["sql"].split())[:300]} for s in slowest[:5]]}
        print(json.dumps(report, indent=2))
        print(await explain(registry, slowest[0]))
    finally:
        await registry.aclose()


if __name__ == "__main__":
    asyncio.run(main())
