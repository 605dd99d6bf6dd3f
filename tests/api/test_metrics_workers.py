"""Several uvicorn workers behind one port: whichever worker answers a scrape reports them all."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import psutil

from citadel.settings import Settings
from citadel.testing.api_process import ApiProcess
from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process
from tests.api.conftest import base_env, create_keys
from tests.conftest import POSTGRES_URL, REDIS_URL


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
