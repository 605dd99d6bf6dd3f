"""Flow runs with ``CITADEL_LOG_FORMAT=json``: JSON lines with the run's id on stderr, and Prefect's
run logs still reach its API (and so the UI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging
import flows  # noqa: F401 - configures run logging as a flow module's import does
from prefect import flow, get_run_logger

@flow(name="json-logging-probe")
def probe() -> str:
    get_run_logger().info("hello from the run")
    logging.getLogger("citadel.probe").warning("core line with key ctd_abc_SECRETSECRETSECRET")
    from prefect.runtime import flow_run
    return flow_run.id

print(probe(), file=sys.stdout)
"""


def test_json_lines_carry_the_flow_run_id_and_prefect_keeps_the_run_logs(prefect_api_url: str) -> None:
    # Prefect's logging as a worker's run process has it: none of the quieting the CLI's tests set here.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_LOGGING_")}
    env.update(CITADEL_LOG_FORMAT="json", PREFECT_API_URL=prefect_api_url, PREFECT_LOGGING_LEVEL="INFO", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", "import sys\n" + SCRIPT], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr
    flow_run_id = done.stdout.strip().splitlines()[-1]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    by_message = {record["message"]: record for record in records}
    assert by_message["hello from the run"]["flow_run_id"] == flow_run_id
    core = next(record for record in records if record["logger"] == "citadel.probe")
    assert core["flow_run_id"] == flow_run_id and "SECRETSECRET" not in done.stderr
    shipped = httpx.post(f"{prefect_api_url}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}}, timeout=30).json()
    assert "hello from the run" in [log["message"] for log in shipped]
