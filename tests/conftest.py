"""Shared fixtures: the real services of this machine, and a private data directory per test.

Services come from the environment with the local defaults; a service that is down is a test
failure (with the reason), never a skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.support import leaks, workers

pytest_plugins = ["tests.support.s3"]  # the object-storage fixtures: an S3 server, the test keys

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A worker of a parallel run (pytest-xdist) marks its own processes, so that its leak check at the
# end can neither report nor kill what another worker's tests are still running.
leaks.mark_session(fresh=workers.WORKER is not None)
# A temporary local Prefect server (a command run without PREFECT_API_URL) keeps its SQLite
# database in PREFECT_HOME: one per worker, so that workers do not lock or migrate each other's.
PREFECT_HOME = workers.prefect_home()
if PREFECT_HOME is not None:
    os.environ["PREFECT_HOME"] = str(PREFECT_HOME)

REDIS_URL = workers.redis_url(os.environ.get("CITADEL_TEST_REDIS_URL"))
BASE_POSTGRES_URL = os.environ.get("CITADEL_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
POSTGRES_URL = workers.postgres_url(BASE_POSTGRES_URL)

LEVELS = ("unit", "service", "system")
"""What a test needs, each level including the ones before it: nothing but Python; Postgres, Redis or
a Prefect server; processes it starts (an API, a Prefect server of its own, nginx, Prometheus, podman)."""
SERVICE_FIXTURES = frozenset({"prefect_server", "prefect_api_url", "redis_url", "postgres_url"})
SYSTEM_FIXTURES = frozenset({"embedded_api", "shared_api", "api"})
"""The real ``citadel api`` processes of tests/api/conftest.py."""


def level_of(item: pytest.Item) -> str:
    """The highest level of a test: its explicit mark (a module's ``pytestmark``), and the fixtures it uses."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    found = {mark.name for mark in item.iter_markers() if mark.name in LEVELS}
    if names & SYSTEM_FIXTURES:
        found.add("system")
    # A fixture parametrized over the registries (sqlite, postgres) asks for Postgres by its parameter.
    on_postgres = callspec is not None and any(isinstance(value, str) and value == "postgres" for value in callspec.params.values())
    if names & SERVICE_FIXTURES or on_postgres:
        found.add("service")
    return max(found, key=LEVELS.index, default="unit")


def shares_a_fixture(item: pytest.Item) -> bool:
    """Whether this test shares a module (or class) fixture with its neighbours: a server, a built image."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        definition.scope in ("module", "class", "package")
        for name in info.names_closure
        for definition in info.name2fixturedefs.get(name, ())
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its level (``-m unit`` is the fast loop), and put the longest modules first.

    Runs first, so that ``-m`` sees the marks. A parallel run keeps each module whole on one worker
    (``--dist loadfile`` in scripts/test): spread over the workers, a module's server or image would
    be started again on each."""
    for item in items:
        level = level_of(item)
        if not item.get_closest_marker(level):
            item.add_marker(getattr(pytest.mark, level))
    # The longest first, each module in its order: the modules that hold a worker for minutes (a
    # shared server or image), then those that start processes, then the rest, so that the short
    # tests fill the workers at the end instead of one long module finishing alone.
    rank: dict[str, tuple[bool, int]] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        weight = (shares_a_fixture(item), LEVELS.index(level_of(item)))
        rank[module] = max(rank.get(module, (False, 0)), weight)
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]], reverse=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A worker of a parallel run makes its own Postgres database, when one of its tests may need it."""
    if workers.WORKER is not None and any(not item.get_closest_marker("unit") for item in session.items):
        workers.create_database(BASE_POSTGRES_URL, POSTGRES_URL)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a process it started outlived it (after killing it); drop a worker's own
    database and Prefect home."""
    left = leaks.reap()
    if left:
        lines = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in left.items())
        session.config.get_terminal_writer().line(f"processes started by the tests were left running (killed now):\n{lines}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if workers.WORKER is not None:
        workers.drop_database(BASE_POSTGRES_URL, POSTGRES_URL)
    if PREFECT_HOME is not None:
        shutil.rmtree(PREFECT_HOME, ignore_errors=True)



@pytest.fixture
def redis_url() -> str:
    """URL of the real Redis (database 15; a worker of a parallel run has its own, see tests/support/workers.py)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - only when the machine lacks Redis
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); start it or set CITADEL_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def postgres_url() -> str:
    """URL of the real Postgres; tests isolate themselves with unique collection names."""
    import asyncio

    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # noqa: BLE001  # pragma: no cover - any failure to connect: the machine lacks Postgres
        pytest.fail(f"Postgres at {POSTGRES_URL} is not reachable ({exc}); start it or set CITADEL_TEST_DATABASE_URL")
    return POSTGRES_URL


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CITADEL_DATA_DIR with every other CITADEL_ setting cleared (embedded defaults)."""
    for key in list(os.environ):
        if key.startswith("CITADEL_") and not key.startswith("CITADEL_TEST_"):
            monkeypatch.delenv(key)
    directory = tmp_path / "data"
    monkeypatch.setenv("CITADEL_DATA_DIR", str(directory))
    monkeypatch.chdir(tmp_path)
    return directory


@pytest.fixture(params=["sqlite", "postgres"])
def registry_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> str:
    """Run a test once on the embedded SQLite registry and once on the real Postgres."""
    if request.param == "postgres":
        monkeypatch.setenv("CITADEL_DATABASE_URL", request.getfixturevalue("postgres_url"))
    return request.param


@pytest.fixture
def collection_name() -> str:
    """A collection name no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect server for the whole session (it takes seconds to start), on this machine's Postgres.

    Prefect's own test harness keeps its server on SQLite, whose single writer lock stalls the suite's
    concurrent flow runs and API processes: a locked write answers 503, and Prefect's client backs off
    for up to a minute before it gives up.
    """
    import asyncio
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    from citadel.testing.postgres import admin_execute, plain_url
    from citadel.testing.prefect_server import create_prefect_database, free_port

    name = f"citadel_test_prefect_{os.getpid()}"
    database = asyncio.run(create_prefect_database(BASE_POSTGRES_URL, name))

    async def drain() -> None:
        """Send the logs and events still queued in this process before the server goes."""
        try:
            drained = APILogWorker.instance().drain()
            if inspect.isawaitable(drained):
                await drained
        except RuntimeError:  # the worker never started
            pass
        drained_all = EventsWorker.drain_all()
        if inspect.isawaitable(drained_all):
            await drained_all

    with temporary_settings(updates={PREFECT_API_DATABASE_CONNECTION_URL: database}):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=120)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield
                run_coro_as_sync(drain())
        finally:
            server.stop()
    asyncio.run(admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", plain_url(BASE_POSTGRES_URL)))


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server: None) -> str:
    """The session Prefect server's API URL."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test server did not set PREFECT_API_URL"
    return str(url)


@pytest.fixture(scope="session", autouse=True)
def _close_embedded_stores():
    yield
    from citadel.store import close_local_clients

    close_local_clients()
