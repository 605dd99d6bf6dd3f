"""Indexing metrics from the registry: durable totals that count each run once, whoever ran it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from citadel.ops import registry_families
from citadel.registry import Registry, index_runs, mark_crashed_runs, schema_version


def samples(families: list, collection: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of ``collection`` as (name, sorted labels without the collection) -> value."""
    found = {}
    for family in families:
        for sample in family.samples:
            if sample.labels.get("collection") == collection:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "collection"))
                found[sample.name, labels] = sample.value
    return found


@pytest.fixture(params=["sqlite", "postgres"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str):
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}" if request.param == "sqlite" else postgres_url
    opened = Registry(url)
    await opened.init()
    yield opened
    await opened.aclose()


async def test_runs_add_up_per_collection_and_count_once(registry: Registry) -> None:
    collection = f"m_{uuid.uuid4().hex[:10]}"
    first = await registry.start_run(collection, "/docs", None)
    await registry.finish_run(first, "completed", {"added": 3, "unchanged": 1, "chunks_embedded": 7, "chunks_written": 7,
                                                   "cache_hits": 2, "duration_s": 1.5})
    second = await registry.start_run(collection, "/docs", None)
    await registry.finish_run(second, "failed", {"failed": 2, "duration_s": 0.5})
    await registry.finish_run(second, "failed", {"failed": 2, "duration_s": 0.5})  # ended twice: counted once
    gone = await registry.start_run(collection, "/other", None)
    async with registry.engine.begin() as conn:  # a run whose process is gone (no such pid)
        await conn.execute(index_runs.update().where(index_runs.c.id == gone).values(pid=2**22 + 12345))
    assert [run.id for run in await mark_crashed_runs(registry) if run.collection == collection] == [gone]
    await registry.start_run(collection, "/docs", None)  # still running: not counted

    found = samples(await registry_families(registry), collection)

    assert found["citadel_index_runs_total", (("status", "completed"),)] == 1
    assert found["citadel_index_runs_total", (("status", "failed"),)] == 1
    assert found["citadel_index_runs_total", (("status", "crashed"),)] == 1
    assert found["citadel_index_documents_total", (("outcome", "added"),)] == 3
    assert found["citadel_index_documents_total", (("outcome", "failed"),)] == 2
    assert found["citadel_index_chunks_total", (("outcome", "embedded"),)] == 7
    assert found["citadel_index_chunks_total", (("outcome", "cache_hit"),)] == 2
    assert found["citadel_index_run_duration_seconds_count", ()] == 3
    assert found["citadel_index_run_duration_seconds_sum", ()] == pytest.approx(2.0)
    # The staleness alert's figure: only a completed run counts as a success, per source.
    assert ("citadel_index_last_success_timestamp_seconds", (("source", "/docs"),)) in found
    assert ("citadel_index_last_success_timestamp_seconds", (("source", "/other"),)) not in found
    assert found["citadel_dead_letters", ()] == 0


async def test_an_upgraded_registry_starts_from_the_runs_it_holds(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v5.db'}"
    old = Registry(url)
    await old.init()
    for status, added in (("completed", 4), ("completed", 1), ("failed", 0)):
        run_id = await old.start_run("c", "s", None)
        await old.finish_run(run_id, status, {"added": added, "duration_s": 1.0})
    async with old.engine.begin() as conn:  # as a version 5 registry: runs, no totals
        await conn.execute(sa.text("DROP TABLE citadel_run_totals"))
        await conn.execute(schema_version.delete())
        await conn.execute(sa.text("INSERT INTO citadel_schema_version (version, applied_at) VALUES (5, CURRENT_TIMESTAMP)"))
    await old.aclose()

    upgraded = Registry(url)
    await upgraded.init()
    found = samples(await registry_families(upgraded), "c")
    await upgraded.aclose()
    assert found["citadel_index_runs_total", (("status", "completed"),)] == 2
    assert found["citadel_index_runs_total", (("status", "failed"),)] == 1
    assert found["citadel_index_documents_total", (("outcome", "added"),)] == 5
    assert found["citadel_index_run_duration_seconds_count", ()] == 3
