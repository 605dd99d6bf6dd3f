"""A deployment's run that fails before it records an indexing run, as Prometheus sees it: the API
exports Prefect's failed run under its ``flow/deployment`` label and the committed rules raise
CitadelFlowRunsFailed, while CitadelIndexRunsFailing (the registry's) has nothing to go on."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from citadel.testing.prefect_server import free_port
from tests.api.conftest import start_api
from tests.monitoring.test_end_to_end import Prometheus, prometheus_binary, prometheus_config, spawn, stop, wait_for
from tests.monitoring.test_index_counters import answers

pytestmark = pytest.mark.system  # starts an API and Prometheus (see tests/conftest.py)


def test_a_failed_deployment_run_fires_citadel_flow_runs_failed(tmp_path: Path, prefect_api_url: str) -> None:
    flow = f"index-corpus-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=prefect_api_url.rstrip("/") + "/", timeout=30) as prefect:
        flow_id = prefect.post("flows/", json={"name": flow}).json()["id"]
        deployment_id = prefect.post("deployments/", json={"name": "on-demand", "flow_id": flow_id}).json()["id"]
        api = start_api("flow-alerts", tmp_path / "api", prefect_api_url)
        prom_port = free_port()
        process = spawn([
            prometheus_binary(), f"--config.file={prometheus_config(tmp_path, api, free_port(), prom_port)}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log")
        try:
            prometheus = Prometheus(prom_port)
            series = f'citadel_prefect_flow_runs_finished_total{{deployment="{flow}/on-demand",state="Failed"}}'
            wait_for("the deployment's zero in Prometheus", lambda: answers(prometheus, f"{series} == 0"), every=1)
            # What a worker reports when the run fails at once: the source path does not exist.
            run = prefect.post(f"deployments/{deployment_id}/create_flow_run", json={"parameters": {"source": "/no/such/path"}}).json()
            for state in ("PENDING", "RUNNING", "FAILED"):
                answer = prefect.post(f"flow_runs/{run['id']}/set_state",
                                      json={"state": {"type": state, "message": "source /no/such/path does not exist"}, "force": True})
                assert answer.json()["status"] == "ACCEPT", answer.text
            wait_for("CitadelFlowRunsFailed firing", lambda: prometheus.firing("CitadelFlowRunsFailed", deployment=f"{flow}/on-demand"))
            assert not prometheus.firing("CitadelIndexRunsFailing")
        finally:
            stop(process)
            api.process.stop()
