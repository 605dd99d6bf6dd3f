"""Every run Citadel creates carries its final name from its creation on, read back from the real
Prefect server before anything starts it: never Prefect's random ``reliable-orangutan``."""

from __future__ import annotations

import uuid

from prefect.client.orchestration import get_client

from orchestration.workflow_runs import start_workflow_here, submit_workflow
from tasks.run_names import deployment_run_name
from tests.orchestration.held import held_deployment, runs_of

CHUNK = {"step_id": "c", "type": "chunk", "parameters": {"text": "a few words to split"}}


async def test_a_run_through_a_deployment_has_its_name_before_any_worker_starts_it() -> None:
    deployment = await held_deployment("run-workflow")
    report = await submit_workflow({"workflow_id": "named-at-birth", "steps": [CHUNK]}, deployment=deployment)

    [run] = await runs_of(deployment)
    assert str(run.id) == report.flow_run_id
    assert run.name == report.name == "workflow-named-at-birth"
    assert run.state is not None and run.state.name == "Scheduled" and run.start_time is None, "no worker has it"


async def test_a_flow_step_names_its_sub_run_over_the_deployment_s_own_parameters() -> None:
    """A nightly-like deployment whose collection is its own: the sub-run is named after that collection,
    as the flow would rename it on a worker, and not after this process's default collection."""
    collection = f"nightly_{uuid.uuid4().hex[:8]}"
    deployment = await held_deployment("index-corpus", {"collection": collection})
    step = {"step_id": "sub", "type": "flow", "parameters": {
        "deployment": deployment, "parameters": {"source": "/nowhere"}, "timeout_seconds": 1}}

    report = await submit_workflow({"workflow_id": "composes", "steps": [step]}, local=True)

    assert report.name == "workflow-composes"
    assert report.state == "Failed" and "Scheduled" in (report.steps["sub"].error or ""), "nothing ran the sub-run"
    runs = await runs_of(deployment)
    assert runs and {run.name for run in runs} == {f"index-{collection}"}
    assert all(run.state is not None and run.state.name == "Scheduled" for run in runs)


async def test_a_run_of_this_process_is_created_under_its_name() -> None:
    """The HTTP API's runs on the embedded store: the run the server holds has its name from the create."""
    report, here = await start_workflow_here({"workflow_id": "runs-here", "steps": [CHUNK]})
    assert report.name == "workflow-runs-here"
    async with get_client() as client:
        assert (await client.read_flow_run(uuid.UUID(report.flow_run_id))).name == "workflow-runs-here"
    state = await here.task
    assert state.is_completed()


async def test_only_citadel_s_flows_and_deployments_that_exist_are_named() -> None:
    assert await deployment_run_name("someone-elses-flow/default", {"collection": "x"}) is None
    assert await deployment_run_name("index-corpus/no-such-deployment", {"collection": "x"}) is None
    held = await held_deployment("similarity-search", {"collection": "kept"})
    assert await deployment_run_name(held, {"query": "q"}) == "search-kept"
    assert await deployment_run_name(held, {"query": "q", "collection": "given"}) == "search-given"
