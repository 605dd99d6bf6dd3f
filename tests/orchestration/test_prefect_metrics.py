"""Prefect's flow-run figures, read from a real Prefect server: each deployment is its own series,
named ``flow/deployment`` (several flows have a deployment called ``default``), and runs without a
deployment are their flow's ``flow/adhoc``."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from orchestration.prefect_metrics import PrefectFigures

pytestmark = pytest.mark.service


def finished(families: list[Any]) -> dict[tuple[str, str], float]:
    (family,) = [f for f in families if f.name == "citadel_prefect_flow_runs_finished"]
    return {(s.labels["deployment"], s.labels["state"]): s.value for s in family.samples if s.name.endswith("_total")}


async def read(figures: PrefectFigures) -> dict[tuple[str, str], float]:
    await figures.families()  # a first scrape seeds the counters from Prefect's counts
    return finished(await figures.families())


async def read_once(api_url: str) -> dict[tuple[str, str], float]:
    """What a process that starts now exports."""
    figures = PrefectFigures(api_url, cache_s=0)
    try:
        return await read(figures)
    finally:
        await figures.aclose()


def fail(client: httpx.Client, run_id: str) -> None:
    answer = client.post(f"flow_runs/{run_id}/set_state", json={"state": {"type": "FAILED", "name": "Failed"}, "force": True})
    assert answer.status_code in (200, 201) and answer.json()["status"] == "ACCEPT", answer.text


async def test_deployments_of_the_same_name_are_told_apart_by_their_flow(prefect_api_url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=prefect_api_url.rstrip("/") + "/", timeout=30) as client:
        flows = {name: client.post("flows/", json={"name": f"{name}-{suffix}"}).json()["id"] for name in ("sharded", "embed")}
        deployments = {name: client.post("deployments/", json={"name": "default", "flow_id": flow_id}).json()["id"]
                       for name, flow_id in flows.items()}
        before = await read_once(prefect_api_url)
        assert before[f"sharded-{suffix}/default", "Failed"] == before[f"embed-{suffix}/default", "Failed"] == 0

        figures = PrefectFigures(prefect_api_url, cache_s=0)
        await read(figures)
        for name, times in (("sharded", 1), ("embed", 2)):
            for _ in range(times):
                fail(client, client.post(f"deployments/{deployments[name]}/create_flow_run", json={}).json()["id"])
        adhoc = client.post("flow_runs/", json={"flow_id": flows["sharded"], "state": {"type": "RUNNING", "name": "Running"}}).json()
        fail(client, adhoc["id"])

        counted = await read(figures)  # runs counted as they end
        await figures.aclose()
        seeded = await read_once(prefect_api_url)  # and by a process that starts now
    for figures_read in (counted, seeded):
        mine = {key: value for key, value in figures_read.items() if key[0].endswith(tuple(f"-{suffix}/{d}" for d in ("default", "adhoc")))}
        assert {key: value for key, value in mine.items() if value} == {
            (f"sharded-{suffix}/default", "Failed"): 1, (f"embed-{suffix}/default", "Failed"): 2, (f"sharded-{suffix}/adhoc", "Failed"): 1,
        }
        assert "default" not in {deployment for deployment, _ in figures_read}
