"""What each worker of a parallel test run (pytest-xdist) has to itself.

The workers run at once against the same Redis and Postgres. A test that counts keys, runs or API
keys must not see another worker's, so each worker gets its own Redis database number and its own
Postgres database (made at the start of its session, dropped at the end), and its own Prefect home.
Without xdist every function returns the single-process defaults.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

WORKER: str | None = os.environ.get("PYTEST_XDIST_WORKER")
"""``gw0``, ``gw1``, ... in a worker of a parallel run; None otherwise."""
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:10]
"""The same for every worker of one run, different for another run at the same time."""
FIRST_REDIS_DB = 8
"""Worker gwN uses Redis database 8 + N unless CITADEL_TEST_REDIS_URL names a first one: 8 to 14 for
up to seven workers, leaving 15 to a single-process run."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
LAST_REDIS_DB = 15
"""Redis has databases 0 to 15 unless its configuration says otherwise."""


def index() -> int:
    """The worker's number N of ``gwN``."""
    assert WORKER is not None
    return int(WORKER.removeprefix("gw"))


def redis_url(configured: str | None) -> str:
    """The Redis URL of this process: database 15 (or CITADEL_TEST_REDIS_URL's) alone; in a worker,
    the first database number (8, or CITADEL_TEST_REDIS_URL's) plus the worker's number."""
    url = configured or DEFAULT_REDIS_URL
    if WORKER is None:
        return url
    match = re.fullmatch(r"(redis://[^/]+)(?:/(\d+))?", url)
    if match is None:
        raise ValueError(f"CITADEL_TEST_REDIS_URL={url!r}: a parallel run needs redis://HOST:PORT/DB to number its workers' databases")
    first = int(match[2]) if configured and match[2] else FIRST_REDIS_DB
    if first + index() > LAST_REDIS_DB:
        raise ValueError(
            f"CITADEL_TEST_REDIS_URL={url!r}: worker {WORKER} would use Redis database {first + index()}, past the last "
            f"one ({LAST_REDIS_DB}); name a first database with room for every worker (e.g. /{FIRST_REDIS_DB})"
        )
    return f"{match[1]}/{first + index()}"


def postgres_url(base: str) -> str:
    """The Postgres URL of this process: ``base`` alone; in a worker, a database of its own on the same server."""
    if WORKER is None:
        return base
    from sqlalchemy.engine import make_url

    own = make_url(base).set(database=f"citadel_test_{WORKER}_{RUN_ID}")  # keeps the query (sslmode=...)
    return own.render_as_string(hide_password=False)


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name, f"{url} names no database"
    return name


def create_database(admin_url: str, url: str) -> None:
    """A fresh, empty database named by ``url`` (the registry makes its tables on first use)."""
    from citadel.testing.postgres import fresh_database

    asyncio.run(fresh_database(database_name(url), admin_url))


def drop_database(admin_url: str, url: str) -> None:
    from citadel.testing.postgres import admin_execute

    try:
        asyncio.run(admin_execute(f"DROP DATABASE IF EXISTS {database_name(url)} WITH (FORCE)", admin_url))
    except Exception:  # noqa: BLE001 - Postgres gone at the end: nothing left to drop
        pass


def prefect_home() -> Path | None:
    """A worker's own PREFECT_HOME (None outside a parallel run: Prefect's default stays)."""
    if WORKER is None:
        return None
    home = Path(tempfile.gettempdir()) / f"citadel-prefect-{RUN_ID}-{WORKER}"
    home.mkdir(parents=True, exist_ok=True)
    return home
