"""Ids bound as one list parameter select what ``IN`` and ``NOT IN`` would, on SQLite and Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from citadel.registry import among, not_among


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}" if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def table(url: str) -> AsyncIterator[tuple[AsyncEngine, sa.Table]]:
    engine = create_async_engine(url)
    metadata = sa.MetaData()
    rows = sa.Table(f"ids_{uuid.uuid4().hex[:8]}", metadata, sa.Column("id", sa.String, primary_key=True), sa.Column("kind", sa.String))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(rows.insert(), [{"id": f"id-{n}", "kind": "odd" if n % 2 else "even"} for n in range(10)])
    yield engine, rows
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await engine.dispose()


@pytest.mark.parametrize("ids", [[], ["id-1"], ["id-1", "id-2", "missing", "it's \"quoted\""], [f"id-{n}" for n in range(40_000)]],
                         ids=["none", "one", "some", "more than a statement binds"])
async def test_among_and_not_among_select_what_in_and_not_in_would(table: tuple[AsyncEngine, sa.Table], ids: list[str]) -> None:
    engine, rows = table
    everything = {f"id-{n}" for n in range(10)}
    async with engine.begin() as conn:
        inside = set((await conn.execute(sa.select(rows.c.id).where(among(rows.c.id, ids)))).scalars())
        outside = set((await conn.execute(sa.select(rows.c.id).where(not_among(rows.c.id, ids)))).scalars())
        odd_inside = set((await conn.execute(sa.select(rows.c.id).where(among(rows.c.id, ids), rows.c.kind == "odd"))).scalars())
    assert inside == everything & set(ids)
    assert outside == everything - set(ids)
    assert odd_inside == {i for i in inside if int(i.split("-")[1]) % 2}


async def test_deletes_and_updates_take_the_lists_too(table: tuple[AsyncEngine, sa.Table]) -> None:
    engine, rows = table
    async with engine.begin() as conn:
        deleted = await conn.execute(rows.delete().where(not_among(rows.c.id, ["id-0", "id-1", "id-2"]), rows.c.kind == "even"))
        await conn.execute(rows.update().where(among(rows.c.id, ["id-1", "id-2"])).values(kind="kept"))
        left = dict((await conn.execute(sa.select(rows.c.id, rows.c.kind))).all())
    assert deleted.rowcount == 3  # the even ids but id-0 and id-2
    assert left == {"id-0": "even", "id-1": "kept", "id-2": "kept", "id-3": "odd", "id-5": "odd", "id-7": "odd", "id-9": "odd"}


async def test_not_among_stays_one_hashed_lookup_in_a_generic_plan(postgres_url: str) -> None:
    """The ids are hashed once, as a NOT IN subquery, whatever plan Postgres picks. From a prepared
    statement's sixth run Postgres may plan it generically, and ``!= ALL`` of a parameter then
    compared every row with every id: a batch's commit took 195 ms instead of 6."""
    engine = create_async_engine(postgres_url)
    metadata = sa.MetaData()
    rows = sa.Table(f"ids_{uuid.uuid4().hex[:8]}", metadata, sa.Column("id", sa.String, primary_key=True))
    query = sa.select(rows.c.id).where(not_among(rows.c.id, [f"id-{n}" for n in range(1000)])).compile(dialect=engine.dialect)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            values = [query.construct_params()[name] for name in query.positiontup or []]
            plan = "\n".join(row[0] for row in await driver.fetch(f"EXPLAIN {query}", *values))
            await conn.run_sync(metadata.drop_all)
    finally:
        await engine.dispose()
    assert "hashed SubPlan" in plan, plan[:300]
