"""Runs that know of each other: the run lock and crashed runs, on SQLite and on the real Postgres."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from citadel.registry import Registry, RunLock, holder, index_runs, lock_key, locks, mark_crashed_runs, process_alive, utcnow

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    reg = Registry(registry_url)
    await reg.init()
    yield reg
    await reg.aclose()


def dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not process_alive(proc.pid)
    return proc.pid


async def _set_run(registry: Registry, run_id: str, **values: object) -> None:
    async with registry.engine.begin() as conn:
        await conn.execute(index_runs.update().where(index_runs.c.id == run_id).values(**values))


async def _status(registry: Registry, run_id: str) -> str:
    async with registry.engine.connect() as conn:
        return (await conn.execute(sa.select(index_runs.c.status).where(index_runs.c.id == run_id))).scalar_one()


async def test_one_run_at_a_time_per_collection_and_source(registry: Registry, collection_name: str) -> None:
    key = lock_key(collection_name, "/corpus")
    first = RunLock(registry, key, str(uuid.uuid4()))
    run_id = await registry.start_run(collection_name, "/corpus", "flow-1", run_id=first.run_id, lock_key=key)
    assert await first.try_acquire()
    second = RunLock(registry, key, str(uuid.uuid4()))
    assert not await second.try_acquire(), "the same collection and source are taken"
    other = RunLock(registry, lock_key(collection_name, "/elsewhere"), str(uuid.uuid4()))
    assert await other.try_acquire(), "another source of the same collection is not"
    shard = RunLock(registry, lock_key(collection_name, "/corpus", (0, 2)), str(uuid.uuid4()))
    assert await shard.try_acquire(), "nor is one shard of it: shards run side by side"
    await shard.release()

    held_by = await holder(registry, key)
    assert held_by is not None and held_by.run_id == run_id
    assert f"pid {os.getpid()} on {socket.gethostname()}" in held_by.describe() and "flow run flow-1" in held_by.describe()

    heard: list[object] = []
    waiting = asyncio.create_task(second.acquire(on_wait=heard.append))
    await asyncio.sleep(0.3)
    assert not waiting.done() and [h.run_id for h in heard] == [run_id]  # type: ignore[attr-defined]
    await first.release()
    await asyncio.wait_for(waiting, timeout=10)
    await second.release()
    await other.release()


async def test_the_lock_of_a_process_that_is_gone_is_free(registry: Registry, collection_name: str) -> None:
    """A killed run must not block the next one: Postgres drops its session lock with its connection,
    SQLite's lock row names a process that no longer runs."""
    key = lock_key(collection_name, "/corpus")
    if registry.dialect == "postgresql":
        other_process = Registry(registry.url)
        held = RunLock(other_process, key, str(uuid.uuid4()))
        assert await held.try_acquire()
        refused = RunLock(registry, key, str(uuid.uuid4()))
        assert not await refused.try_acquire()
        await refused.release()
        assert held._conn is not None
        await held._conn.invalidate()  # its connection drops, as when its process is killed
        await other_process.aclose()
    else:
        async with registry.engine.begin() as conn:
            row = dict(key=key, run_id="killed", host=socket.gethostname(), pid=dead_pid(), heartbeat_at=utcnow())
            await conn.execute(locks.insert().values(**row))
    taker = RunLock(registry, key, str(uuid.uuid4()))
    assert await taker.try_acquire()
    await taker.release()


async def test_sqlite_lock_of_a_silent_run_on_another_host_is_taken_over(tmp_path: Path, collection_name: str) -> None:
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
    await registry.init()
    key = lock_key(collection_name, "/corpus")
    try:
        async with registry.engine.begin() as conn:
            await conn.execute(locks.insert().values(key=key, run_id="alive", host="elsewhere", pid=1, heartbeat_at=utcnow()))
        assert not await RunLock(registry, key, "mine").try_acquire(), "another host's run with a fresh heartbeat holds it"
        async with registry.engine.begin() as conn:
            await conn.execute(locks.update().values(heartbeat_at=utcnow() - dt.timedelta(hours=1)))
        taker = RunLock(registry, key, "mine")
        assert await taker.try_acquire(), "a heartbeat an hour old is a crashed run"
        await taker.release()
    finally:
        await registry.aclose()


async def test_runs_whose_process_is_gone_are_marked_crashed(registry: Registry, collection_name: str) -> None:
    now = utcnow()
    killed = await registry.start_run(collection_name, "s", "flow-killed")
    await _set_run(registry, killed, pid=dead_pid())
    silent = await registry.start_run(collection_name, "s", None)
    await _set_run(registry, silent, host="elsewhere", heartbeat_at=now - dt.timedelta(minutes=10))
    remote = await registry.start_run(collection_name, "s", None)
    await _set_run(registry, remote, host="elsewhere", pid=1, heartbeat_at=now)
    alive = await registry.start_run(collection_name, "s", None)  # this very process

    crashed = await mark_crashed_runs(registry)
    ours = {run["id"]: run for run in crashed if run["collection"] == collection_name}
    assert set(ours) == {killed, silent}
    assert ours[killed]["flow_run_id"] == "flow-killed" and ours[killed]["status"] == "crashed"
    assert [await _status(registry, run_id) for run_id in (killed, silent, remote, alive)] == ["crashed", "crashed", "running", "running"]
    assert not [run for run in await mark_crashed_runs(registry) if run["collection"] == collection_name], "marked once"
    for run_id in (remote, alive):
        await registry.finish_run(run_id, "completed", {})


async def test_a_heartbeat_keeps_a_run_alive(registry: Registry, collection_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = lock_key(collection_name, "/corpus")
    lock = RunLock(registry, key, str(uuid.uuid4()))
    run_id = await registry.start_run(collection_name, "/corpus", None, run_id=lock.run_id, lock_key=key)
    await _set_run(registry, run_id, host="elsewhere", heartbeat_at=utcnow() - dt.timedelta(minutes=10))
    assert await lock.try_acquire()
    monkeypatch.setattr("citadel.registry.runlock.HEARTBEAT_S", 0.05)
    lock.start_heartbeat()
    await asyncio.sleep(0.3)
    assert not [run for run in await mark_crashed_runs(registry) if run["id"] == run_id], "its heartbeat is fresh"
    await lock.release()
    await registry.finish_run(run_id, "completed", {})
