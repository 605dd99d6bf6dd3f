"""Flow-run metrics read from a real Prefect server: terminal states counted once, as counters."""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.states import Completed, Failed, Running

from orchestration.prefect_metrics import PrefectFigures


@flow(name="metrics-probe")
def probe() -> None:
    """Never run: its runs are made and moved through states by the test."""


def values(families: list, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for family in families for s in family.samples if s.name == name}


async def finish_runs(states: list) -> None:
    async with get_client() as client:
        for state in states:
            run = await client.create_flow_run(probe, state=Running())
            await client.set_flow_run_state(run.id, state, force=True)


async def test_runs_that_end_are_counted_once_and_pools_reported(prefect_api_url: str) -> None:
    figures = PrefectFigures(prefect_api_url, cache_s=0)
    pool = f"metrics-pool-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    try:
        before = await figures.families()
        await finish_runs([Completed(), Completed(), Failed()])
        after = await figures.families()
        again = await figures.families()
    finally:
        await figures.aclose()

    finished_before = values(before, "citadel_prefect_flow_runs_finished_total")
    finished = values(after, "citadel_prefect_flow_runs_finished_total")
    assert values(after, "citadel_prefect_up") == {(): 1}
    assert finished[("metrics-probe/adhoc", "Completed")] == finished_before.get(("metrics-probe/adhoc", "Completed"), 0) + 2
    assert finished[("metrics-probe/adhoc", "Failed")] == finished_before.get(("metrics-probe/adhoc", "Failed"), 0) + 1
    assert values(again, "citadel_prefect_flow_runs_finished_total") == finished  # read again: nothing counted twice
    assert values(after, "citadel_prefect_work_pool_ready")[(pool,)] == 0  # no worker has polled it
    assert values(after, "citadel_prefect_workers_online")[(pool,)] == 0


async def test_an_unreachable_prefect_is_a_zero_not_an_error() -> None:
    figures = PrefectFigures("http://127.0.0.1:9/api", timeout_s=1, cache_s=0)
    try:
        assert values(await figures.families(), "citadel_prefect_up") == {(): 0}
    finally:
        await figures.aclose()
