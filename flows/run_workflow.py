"""Run a declarative workflow: every step a Prefect task run, independent steps concurrently.

Each step starts as soon as its upstream steps completed, with their outputs, and is submitted
with their states as ``wait_for`` so the Prefect UI draws the graph. A failed step's dependants
do not run (Prefect marks them NotReady); the other branches finish. The run fails at the end
if any step failed, after every step that could run has run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from prefect.states import State
from prefect.utilities.annotations import quote

from citadel.settings import settings_for
from citadel.workflows import (
    WorkflowDefinition,
    check_workflow,
    load_step_modules,
    load_workflow,
    upstream,
    workflow_from_data,
)
from citadel.workflows.errors import StepFailed
from citadel.workflows.spec import load_workflow_data
from tasks.resources import open_resources
from tasks.workflow import workflow_step

OUTPUT_PREVIEW = 300


def _definition(workflow: dict[str, Any] | str) -> WorkflowDefinition:
    return workflow_from_data(workflow) if isinstance(workflow, dict) else load_workflow(workflow)


def _data(workflow: dict[str, Any] | str) -> Any:
    return workflow if isinstance(workflow, dict) else load_workflow_data(workflow)


def summarize(output: Any) -> Any:
    """A short description of a step's output for reports: keys, sizes and small values."""
    if isinstance(output, dict):
        return {key: summarize(value) for key, value in list(output.items())[:20]}
    if isinstance(output, list):
        return f"list of {len(output)}" if len(output) > 5 or any(isinstance(v, (list, dict)) for v in output) else output
    if isinstance(output, str) and len(output) > OUTPUT_PREVIEW:
        return output[:OUTPUT_PREVIEW] + "..."
    return output


# The report (states, timings, output summaries) is persisted as JSON, never pickle, so that
# `citadel workflow status` can show the outputs of a run executed by a worker.
@flow(name="run-workflow", persist_result=True, result_serializer="json")
async def run_workflow(workflow: dict[str, Any] | str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``workflow`` (a definition, or JSON/YAML text or a file path) and run it."""
    logger = get_run_logger()
    settings = settings_for()
    load_step_modules(settings.step_modules)
    definition = check_workflow(_data(workflow), context=context)  # an invalid workflow never starts, every problem said
    merged = {**definition.context, **(context or {})}
    deps = upstream(definition)
    states: dict[str, asyncio.Future[tuple[State, Any]]] = {}
    report: dict[str, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()
    for step in definition.steps:
        states[step.step_id] = loop.create_future()

    async def run(step_id: str) -> None:
        step = next(s for s in definition.steps if s.step_id == step_id)
        upstream_results = [await states[dep] for dep in sorted(deps[step_id])]
        started = time.time()
        outputs = {dep: result for dep, (state, result) in zip(sorted(deps[step_id]), upstream_results)}
        wait_for = [state for state, _ in upstream_results]
        task = workflow_step.with_options(
            task_run_name=step_id, retries=step.retries, timeout_seconds=step.timeout_seconds,
            retry_delay_seconds=[1, 2, 4, 8][: max(step.retries, 1)],
        )
        state = await task(settings, quote(definition), step_id, quote(outputs), merged, wait_for=wait_for, return_state=True)
        finished = time.time()
        if state.is_completed():
            result = await state.aresult()
            report[step_id] = {"state": "Completed", "output": summarize(result)}
        else:
            result = None
            skipped = state.name == "NotReady"
            report[step_id] = {
                "state": "Skipped" if skipped else state.name,
                "error": state.message if not skipped else f"upstream failed: {state.message}",
            }
        report[step_id].update(started=started, finished=finished, duration_s=round(finished - started, 3))
        # Every final state goes downstream as wait_for: anything but Completed keeps the dependants from running.
        states[step_id].set_result((state, result))

    async with open_resources(settings):
        await asyncio.gather(*(run(step.step_id) for step in definition.steps))
    ordered = {step.step_id: report[step.step_id] for step in definition.steps}
    failed = [sid for sid, entry in ordered.items() if entry["state"] not in ("Completed", "Skipped")]
    skipped = [sid for sid, entry in ordered.items() if entry["state"] == "Skipped"]
    logger.info("workflow %s: %d steps, failed %s, skipped %s", definition.workflow_id, len(ordered), failed, skipped)
    if failed:
        reasons = "; ".join(f"{sid}: {ordered[sid].get('error')}" for sid in failed)
        raise StepFailed(failed[0], f"{len(failed)} step(s) failed ({reasons}); skipped: {', '.join(skipped) or 'none'}")
    return {"workflow_id": definition.workflow_id, "steps": ordered}


FINAL = ("Completed", "Failed", "Crashed", "Cancelled", "Skipped", "TimedOut", "Cached")


async def wait_for_workflow(flow_run_id: str, timeout_s: float = 3600, settle_s: float = 10) -> dict[str, Any]:
    """Poll until the run is final and its steps' states have reached the server (they arrive as events)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await workflow_status(flow_run_id)
        if status["state"] in FINAL or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    settle = time.monotonic() + settle_s
    while time.monotonic() < settle and not all(s["state"] in FINAL for s in status["steps"].values()):
        await asyncio.sleep(0.25)
        status = await workflow_status(flow_run_id)
    return status


async def workflow_status(flow_run_id: str) -> dict[str, Any]:
    """A workflow run's overall state and, per step, its state, start, end and error, read from Prefect."""
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])), sort=TaskRunSort.EXPECTED_START_TIME_ASC
        )
    definition = None
    workflow = (flow_run.parameters or {}).get("workflow")
    if workflow is not None:
        try:
            definition = _definition(workflow)
        except Exception:  # noqa: BLE001 - a status must still be readable for a bad definition
            definition = None
    report: dict[str, Any] = {}
    if flow_run.state is not None and flow_run.state.is_completed():
        try:
            result = await flow_run.state.aresult(raise_on_failure=False)
            report = result.get("steps", {}) if isinstance(result, dict) else {}
        except Exception:  # noqa: BLE001 - results stored where this process cannot read them
            report = {}
    by_name = {run.name: run for run in task_runs}
    step_ids = [s.step_id for s in definition.steps] if definition else list(by_name)
    steps = {}
    for step_id in step_ids:
        run = by_name.get(step_id)
        state = run.state if run else None
        name = state.name if state else "Pending"
        steps[step_id] = {
            "state": "Skipped" if name == "NotReady" else name,
            "start": run.start_time.isoformat() if run and run.start_time else None,
            "end": run.end_time.isoformat() if run and run.end_time else None,
            "error": state.message if state and (state.is_failed() or state.is_crashed() or name == "NotReady") else None,
        }
        if "output" in report.get(step_id, {}):
            steps[step_id]["output"] = report[step_id]["output"]
    return {
        "flow_run_id": str(flow_run.id),
        "name": flow_run.name,
        "workflow_id": definition.workflow_id if definition else None,
        "state": flow_run.state.name if flow_run.state else None,
        "start": flow_run.start_time.isoformat() if flow_run.start_time else None,
        "end": flow_run.end_time.isoformat() if flow_run.end_time else None,
        "steps": steps,
    }
