"""Workflow steps as Prefect tasks, and the ``flow`` step type, which runs a deployment as a sub-run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from citadel.errors import ConfigurationError
from citadel.settings import Settings
from citadel.workflows import StepContext, WorkflowDefinition, default_registry, run_step
from citadel.workflows.builtin import FLOW_OUTPUTS, FlowParams
from citadel.workflows.errors import StepFailed
from tasks.limits import embedding_slot
from tasks.resources import get_resources


async def run_flow_step(params: FlowParams, ctx: StepContext) -> dict[str, Any]:
    """Run a deployment as a sub-run of this workflow and wait for it: composition of workflows."""
    try:
        flow_run = await run_deployment(
            params.deployment, parameters=params.parameters, timeout=params.timeout_seconds, poll_interval=1
        )
    except ObjectNotFound:
        raise ConfigurationError(
            f"deployment {params.deployment!r} does not exist on this Prefect server; "
            "deploy it first (prefect deploy --all, or citadel serve)"
        ) from None
    state = flow_run.state
    if state is None or not state.is_completed():
        raise RuntimeError(
            f"deployment {params.deployment} run {flow_run.id} ended {state.name if state else 'unknown'}: "
            f"{state.message if state else ''}"
        )
    return {"flow_run_id": str(flow_run.id), "state": state.name, "deployment": params.deployment}


default_registry.register(
    "flow", run_flow_step, params=FlowParams, outputs=FLOW_OUTPUTS,
    description="Run a Prefect deployment as a sub-run and wait for it.", replace=True,
)


async def retry_unless_invalid(task: Any, task_run: Any, state: Any) -> bool:
    """A step's own ``retries`` cover any failure except bad parameters or configuration.

    The core raises those as they are and wraps every other failure in :class:`StepFailed`.
    """
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, StepFailed)


@task(name="workflow-step", cache_policy=NO_CACHE, retry_condition_fn=retry_unless_invalid)
async def workflow_step(
    settings: Settings, definition: WorkflowDefinition, step_id: str, outputs: dict[str, Any], context: dict[str, Any]
) -> Any:
    """Run one step with its upstream ``outputs``; Prefect owns its retries and timeout."""
    once = definition.model_copy(
        update={
            "steps": [
                s.model_copy(update={"retries": 0, "timeout_seconds": None}) if s.step_id == step_id else s
                for s in definition.steps
            ]
        }
    )
    step = next(s for s in once.steps if s.step_id == step_id)
    return await run_step(
        once, step, outputs, context=context, services=get_resources(settings), embedding_guard=embedding_slot
    )
