"""Indexing counters as Prometheus sees them when another process indexes (a worker, here the CLI's
own flow run): the runs' counters start at zero, so the dashboard's increase() counts a new
collection's first run, and the points a run wrote reach the dashboard from the registry."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from citadel.registry import Registry
from citadel.testing.prefect_server import free_port
from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process
from tests.api.conftest import start_api
from tests.conftest import POSTGRES_URL
from tests.monitoring.test_end_to_end import Prometheus, prometheus_binary, prometheus_config, spawn, stop, wait_for
from tests.support.monitoring import MONITORING, REPO, panel_queries

pytestmark = pytest.mark.system  # starts an API, Qdrant and Prometheus (see tests/conftest.py)


def panel(title: str, collection: str) -> list[str]:
    """The Engine dashboard's queries of a panel, for one collection, over the last 10 minutes."""
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "citadel-engine.json").read_text())
    return [expr.replace('collection=~".*"', f'collection=~"{collection}"').replace("[1h]", "[10m]")
            for name, expr in panel_queries(dashboard) if name == title]


def index(corpus: Path, collection: str, env: dict[str, str]) -> None:
    """``citadel index`` in a process of its own, as a worker runs it: its live counters never reach the API."""
    result = subprocess.run([sys.executable, "-m", "cli", "index", str(corpus), "--collection", collection, "--json"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def answers(prometheus: Prometheus, expr: str) -> list[dict[str, object]]:
    """The query's result, empty while Prometheus is not listening or not ready yet (it answers 503 then)."""
    try:
        response = prometheus.http.get("query", params={"query": expr})
    except httpx.TransportError:
        return []
    return list(response.json()["data"]["result"]) if response.status_code == 200 else []


async def create_collection(name: str) -> None:
    registry = Registry(POSTGRES_URL)
    await registry.init()
    try:
        await registry.ensure_collection(name, "hashing", 256)
    finally:
        await registry.aclose()


def test_a_new_collections_runs_and_points_are_counted_from_zero(
    tmp_path: Path, prefect_api_url: str, postgres_url: str
) -> None:
    created, collection = f"pre_{uuid.uuid4().hex[:8]}", f"new_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_collection(created))  # in the registry before the API starts, no run yet
    qdrant, qdrant_url = start_qdrant_process(tmp_path / "qdrant")
    api = start_api("counted", tmp_path / "api", prefect_api_url, CITADEL_DATABASE_URL=POSTGRES_URL, CITADEL_QDRANT_URL=qdrant_url)
    prom_port = free_port()
    prometheus_process = spawn([
        prometheus_binary(), f"--config.file={prometheus_config(tmp_path, api, free_port(), prom_port)}",
        f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
    ], tmp_path / "prometheus.log")
    try:
        prometheus = Prometheus(prom_port)
        wait_for("Prometheus to scrape the API", lambda: answers(prometheus, 'up{job="citadel-api"} == 1'), every=1)
        wait_for("the registry's collection at zero",
                 lambda: prometheus.query(f'citadel_index_runs_total{{collection="{created}",status="completed"}} == 0'), every=1)
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        for i in range(3):
            (corpus / f"doc-{i}.txt").write_text(f"Document {i} about counters that start at zero and scrapes that see them.")
        env = {**api.env, "PREFECT_API_URL": prefect_api_url, "CITADEL_DATA_DIR": str(tmp_path / "worker")}
        index(corpus, collection, env)
        (corpus / "doc-0.txt").write_text("Document 0, changed: its points are written again.")
        (corpus / "doc-2.txt").unlink()  # its points are deleted, by a process the API never sees
        index(corpus, collection, env)

        wait_for("both runs in Prometheus",
                 lambda: prometheus.query(f'citadel_index_runs_total{{collection="{collection}",status="completed"}} == 2'), every=1)
        assert prometheus.query(f'min_over_time(citadel_index_runs_total{{collection="{collection}",status="completed"}}[10m]) == 0')
        (runs_query,) = panel("Index runs by status", collection)
        by_status = {row["metric"]["status"]: float(row["value"][1]) for row in prometheus.query(runs_query)}
        assert round(by_status["completed"]) == 2, by_status  # both runs, the first one included

        written, deleted = panel("Points upserted and deleted", collection)
        points = wait_for("points written in the panel", lambda: [r for r in prometheus.query(written) if float(r["value"][1]) > 0])
        assert points[0]["metric"]["collection"] == collection
        gone = wait_for("points deleted in the panel", lambda: [r for r in prometheus.query(deleted) if float(r["value"][1]) > 0])
        assert gone[0]["metric"]["collection"] == collection
    finally:
        stop(prometheus_process)
        api.process.stop()
        stop_qdrant_process(qdrant)
