"""Several uvicorn workers behind one port: whichever worker answers a scrape reports them all."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import psutil
import pytest

from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process
from tests.api.conftest import base_env, create_keys
from tests.conftest import POSTGRES_URL, REDIS_URL

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


def served(exposition: str, route: str) -> float:
    pattern = re.compile(r'^citadel_http_requests_total\{(?=[^}]*route="' + re.escape(route) + r'")[^}]*\} (\S+)$', re.M)
    return sum(float(found) for found in pattern.findall(exposition))


def test_one_scrape_sees_every_worker(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    qdrant, qdrant_url = start_qdrant_process(tmp_path / "qdrant")
    env = base_env(tmp_path / "data", CITADEL_QDRANT_URL=qdrant_url, CITADEL_REDIS_URL=REDIS_URL, CITADEL_DATABASE_URL=POSTGRES_URL)
    keys = asyncio.run(create_keys(Settings(data_dir=tmp_path / "data", database_url=POSTGRES_URL)))
    try:
        with ApiProcess(env, tmp_path, args=["--workers", "2"]) as api:
            assert api.proc is not None
            workers = [child for child in psutil.Process(api.proc.pid).children() if "spawn_main" in " ".join(child.cmdline())]
            assert len(workers) == 2, [child.cmdline() for child in workers]
            for _ in range(40):  # a new connection each: the kernel spreads them over the workers
                with httpx.Client(base_url=api.url, timeout=30) as client:
                    assert client.get("/api/v1/health").status_code == 200
            scrapes = []
            for _ in range(6):
                with httpx.Client(base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {keys['reader']}"}) as client:
                    scrapes.append(client.get("/metrics").text)
    finally:
        stop_qdrant_process(qdrant)
    assert {served(text, "/api/v1/health") for text in scrapes} == {40.0}  # every scrape, whichever worker: all 40
    for text in scrapes:  # the scrape-time families once each, beside the summed live ones
        assert text.count("# TYPE citadel_index_runs_total counter") == 1
        assert text.count("# TYPE citadel_dependency_up gauge") == 1


# A worker process (uvicorn spawns them) that takes 8 s to start, as on a loaded machine.
SLOW_WORKER_START = "import sys, time\nif '--multiprocessing-fork' in sys.argv:\n    time.sleep(8)\n"


def test_workers_slower_to_start_than_uvicorns_default_ping_still_serve(tmp_path: Path) -> None:
    """uvicorn replaces a worker that has not answered its ping in time (5 s by default); a worker
    that started more slowly than that would be replaced forever and the API would never serve."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_WORKER_START)
    qdrant, qdrant_url = start_qdrant_process(tmp_path / "qdrant")
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = base_env(tmp_path / "data", CITADEL_QDRANT_URL=qdrant_url, PYTHONPATH=pythonpath)
    api = ApiProcess(env, tmp_path, args=["--workers", "2"])
    try:
        api.start(timeout=90)
        with httpx.Client(base_url=api.url, timeout=30) as client:
            assert client.get("/api/v1/health").status_code == 200
        assert "died" not in api.log(), api.log()
    finally:
        api.stop()
        stop_qdrant_process(qdrant)
