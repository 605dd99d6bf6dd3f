"""One administrative statement on a Postgres server (create or drop a database) for tests and benchmarks."""

from __future__ import annotations


def plain_url(url: str) -> str:
    """The URL asyncpg accepts: SQLAlchemy's ``postgresql+asyncpg://`` scheme written as ``postgresql://``."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def admin_execute(sql: str, admin_url: str) -> None:
    """Run one statement on its own connection; CREATE/DROP DATABASE cannot run inside a transaction or pool."""
    import asyncpg

    conn = await asyncpg.connect(plain_url(admin_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_database(name: str, admin_url: str) -> None:
    """An empty database ``name``, whatever an earlier run left under that name."""
    await admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", admin_url)
    await admin_execute(f"CREATE DATABASE {name}", admin_url)
