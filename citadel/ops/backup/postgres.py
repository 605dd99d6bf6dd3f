"""A Postgres registry in a backup: ``pg_dump`` of the ``citadel_*`` tables with the counts of the
very snapshot it dumps, its table of contents checked, and ``pg_restore`` back."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa

from citadel.errors import ConfigurationError
from citadel.ops.backup.manifest import Backend, BackupError, CollectionCounts, registry_counts
from citadel.registry import Registry, metadata
from citadel.settings import Settings, masked_url


def libpq_env(registry_url: str) -> tuple[dict[str, str], str]:
    """The environment that points pg_dump/pg_restore at the registry's database (the password in
    ``PGPASSWORD``, never on a command line), and the database name."""
    url = sa.engine.make_url(registry_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    for key, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username), ("PGPASSWORD", url.password)):
        if value:
            env[key] = str(value)
    mode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(mode, str) and mode:
        env["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(mode.lower(), mode)
    return env, url.database or ""


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(f"{name} is not on PATH: install the PostgreSQL client tools (apt-get install postgresql-client)")
    return found


def run_tool(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a PostgreSQL client tool; its first error line (never its environment) on failure."""
    done = subprocess.run(list(args), env=dict(env) if env is not None else None, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = " / ".join(lines[:2]) or f"exit status {done.returncode}"
        raise BackupError(f"{Path(args[0]).name} failed: {reason}")
    return done.stdout


async def dump_postgres(settings: Settings, registry: Registry, target: Path) -> tuple[int, dict[str, CollectionCounts], Backend]:
    """``pg_dump`` of the ``citadel_*`` tables, and their counts from the very snapshot it dumps
    (exported from a repeatable-read transaction held open while pg_dump runs); and the backend."""
    tool = pg_tool("pg_dump")
    env, database = libpq_env(settings.registry_url)
    async with registry.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            snapshot = (await conn.execute(sa.text("SELECT pg_export_snapshot()"))).scalar_one()
            version, counts = await conn.run_sync(registry_counts)
            args = [tool, "--format=custom", "--no-password", f"--snapshot={snapshot}", "--table=citadel_*", f"--file={target}", database]
            await asyncio.to_thread(run_tool, args, env)
    version_line = run_tool([pg_tool("pg_dump"), "--version"]).strip()
    return version, counts, Backend(kind="postgres", location=masked_url(settings.registry_url), version=version_line)


def dump_problem(dump: Path) -> str | None:
    """Why the dump file ``dump`` is not a registry's dump (its table of contents), or None."""
    try:
        listing = run_tool([pg_tool("pg_restore"), "--list", str(dump)])
    except BackupError as exc:
        return str(exc)
    return None if "TABLE DATA public citadel_documents" in listing else "the dump holds no data of citadel_documents"


def restore_postgres(settings: Settings, dump: Path) -> None:
    env, database = libpq_env(settings.registry_url)
    restore = pg_tool("pg_restore")
    in_dump = set(re.findall(r" TABLE \S+ (citadel_\w+) ", run_tool([restore, "--list", str(dump)])))
    run_tool(
        [restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
         "--exit-on-error", "--no-password", f"--dbname={database}", str(dump)],
        env,
    )
    # --clean drops only the tables the dump holds. A table newer than the backup's schema would
    # keep the target's rows; dropped, it is created again by the schema upgrade that follows, and
    # filled from the restored rows where it derives from them (the run totals).
    newer = sorted(name for name in metadata.tables if name not in in_dump)
    if newer:
        drop = "DROP TABLE IF EXISTS " + ", ".join(f'"{name}"' for name in newer) + " CASCADE"
        run_tool([pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", f"--dbname={database}", "-c", drop], env)
