"""A lost connection is named by the dependency it was lost to, whatever error type the driver raised."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from citadel.outages import cause, lost_dependency, registry_lost
from citadel.testing.prefect_server import free_port


async def _failure(make: object) -> BaseException:
    try:
        await make()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the failure is what is tested
        return exc
    raise AssertionError("no failure")


async def test_a_registry_that_refuses_connections_is_named_with_its_first_cause() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://nobody:hunter2@127.0.0.1:{free_port()}/none")

    async def query() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    try:
        exc = await _failure(query)
    finally:
        await engine.dispose()
    assert lost_dependency(exc) == "the registry (Postgres)" and registry_lost(exc)
    assert "hunter2" not in cause(exc)
    assert cause(exc).startswith("ConnectionRefusedError: "), cause(exc)


async def test_redis_refusing_connections_is_named_redis() -> None:
    import redis.asyncio as redis

    client = redis.Redis(port=free_port(), socket_connect_timeout=2)
    try:
        exc = await _failure(client.ping)
    finally:
        await client.aclose()
    assert lost_dependency(exc) == "Redis" and not registry_lost(exc)


@pytest.mark.parametrize("exc", [ValueError("bad input"), KeyError("k"), RuntimeError("a bug")])
def test_errors_that_are_no_lost_connection_name_nothing(exc: Exception) -> None:
    assert lost_dependency(exc) is None and not registry_lost(exc)
