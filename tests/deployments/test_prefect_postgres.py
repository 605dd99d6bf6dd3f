"""A Prefect server on Postgres (the production database), with a worker and a REST-triggered run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from citadel.testing.prefect_server import BIN, PrefectServer, create_prefect_database

DATABASE = "citadel_prefect_test"


def test_prefect_server_on_postgres_runs_a_triggered_flow(postgres_url: str, tmp_path: Path) -> None:
    database_url = asyncio.run(create_prefect_database(postgres_url, DATABASE))
    env = {"CITADEL_DATA_DIR": str(tmp_path / "data"), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with PrefectServer(tmp_path / "prefect", database_url=database_url, env=env) as server:
        server.run([str(BIN / "citadel"), "setup"])
        server.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "embed-texts/default"])
        server.start_worker("citadel", "pg-worker")
        deployment = server.deployment_id("embed-texts/default")
        started = time.perf_counter()
        run = server.api("POST", f"/deployments/{deployment}/create_flow_run", json={"parameters": {"texts": ["on postgres"]}})
        final = server.wait_for_flow_run(run["id"])
        assert final["state"]["type"] == "COMPLETED", server.log_text()
        assert time.perf_counter() - started < 300

        # `citadel serve`: every deployment served from one process, no work pool involved.
        server.spawn("serve", [str(BIN / "citadel"), "serve"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                served = server.deployment_id("run-workflow/default")
                break
            except Exception:  # noqa: BLE001 - not registered yet
                time.sleep(1)
        else:
            raise AssertionError(f"citadel serve registered nothing:\n{server.log_text()}")
        workflow = {"workflow_id": "served", "steps": [{"step_id": "c", "type": "chunk", "parameters": {"text": "a. b."}}]}
        run = server.api("POST", f"/deployments/{served}/create_flow_run", json={"parameters": {"workflow": workflow}})
        final = server.wait_for_flow_run(run["id"])
        assert final["state"]["type"] == "COMPLETED", server.log_text()
        nightly = server.api("GET", "/deployments/name/index-corpus/nightly")
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]

    async def tables() -> set[str]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row["tablename"] for row in rows}
        finally:
            await conn.close()

    assert {"flow_run", "deployment", "task_run"} <= asyncio.run(tables())
