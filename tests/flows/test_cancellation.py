"""Cancelling a workflow run of this process: whenever the request comes, the run ends Cancelled,
recorded by its own engine, and what it was doing is stopped."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from citadel.workflows import StepContext, default_registry
from flows.cancellation import cancel_request, run_unless_cancelled
from orchestration.workflow_runs import start_workflow_here, stop_workflow_here, workflow_status

STARTED: set[str] = set()
STOPPED: set[str] = set()


class WaitParams(BaseModel):
    key: str


async def wait_long(params: WaitParams, ctx: StepContext) -> dict:
    """A test step that marks its start and then waits far longer than any test."""
    STARTED.add(params.key)
    try:
        await asyncio.sleep(600)
    finally:
        STOPPED.add(params.key)
    return {}


@pytest.fixture(autouse=True)
def _wait_step():
    default_registry.register("wait-long", wait_long, params=WaitParams, replace=True)
    yield
    default_registry.unregister("wait-long")


def _workflow(key: str) -> dict:
    return {"workflow_id": f"cancel-{key[:8]}", "steps": [{"step_id": "wait", "type": "wait-long", "parameters": {"key": key}}]}


async def test_without_a_request_the_work_runs_and_with_one_set_it_never_starts() -> None:
    async def work() -> int:
        return 7

    assert await run_unless_cancelled(work()) == 7
    with cancel_request() as requested:
        requested.set()
        state = await run_unless_cancelled(work())
    assert state.is_cancelled() and state.message == "cancelled on request"  # type: ignore[attr-defined]


async def test_a_run_cancelled_before_its_engine_starts_ends_cancelled_without_running(data_dir: Path) -> None:
    key = uuid.uuid4().hex
    report, run = await start_workflow_here(_workflow(key))
    stopped = await stop_workflow_here(report.flow_run_id, run)  # before the engine's task has run at all
    assert stopped.state == "Cancelled", stopped
    assert run.task.done() and key not in STARTED


async def test_a_run_cancelled_while_a_step_runs_stops_the_step_and_ends_cancelled(data_dir: Path) -> None:
    key = uuid.uuid4().hex
    report, run = await start_workflow_here(_workflow(key))
    async with asyncio.timeout(120):
        while key not in STARTED:
            await asyncio.sleep(0.05)
    stopped = await stop_workflow_here(report.flow_run_id, run)
    assert stopped.state == "Cancelled", stopped
    assert key in STOPPED, "the step's work was cancelled"
    assert (await workflow_status(report.flow_run_id)).state == "Cancelled", "no later write undid the end"


async def test_a_run_that_already_ended_is_left_as_it_ended(data_dir: Path) -> None:
    report, run = await start_workflow_here(
        {"workflow_id": "quick", "steps": [{"step_id": "c", "type": "chunk", "parameters": {"text": "a few words"}}]}
    )
    await run.task
    assert (await stop_workflow_here(report.flow_run_id, run)).state == "Completed"
