"""Workflow steps as Prefect tasks (with their cache key), and the ``flow`` step type, which runs a
deployment as a sub-run."""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import task_run
from prefect.utilities.annotations import BaseAnnotation

from citadel.errors import ConfigurationError
from citadel.resources import get_resources
from citadel.settings import Settings
from citadel.workflows import (
    FLOW_OUTPUTS,
    FlowParams,
    Sandbox,
    StepContext,
    StepFailed,
    StepRegistry,
    WorkflowDefinition,
    resolve,
    run_step,
    takes_collection,
)
from tasks.limits import embedding_slot
from tasks.run_names import deployment_run_name


def _missing(deployment: str) -> ConfigurationError:
    return ConfigurationError(
        f"deployment {deployment!r} does not exist on this Prefect server; deploy it first (prefect deploy --all, or citadel serve)"
    )


async def deployment_parameters(deployment: str) -> dict[str, Any]:
    """The parameters the flow of ``deployment`` takes, with their defaults, from its schema on Prefect."""
    async with get_client() as client:
        try:
            found = await client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise _missing(deployment) from None
    properties = (found.parameter_openapi_schema or {}).get("properties") or {}
    return {name: spec.get("default") if isinstance(spec, dict) else None for name, spec in properties.items()}


async def run_flow_step(params: FlowParams, ctx: StepContext, sandbox: Sandbox | None = None) -> dict[str, Any]:
    """Run a deployment as a sub-run of this workflow and wait for it: composition of workflows.

    A sandboxed run passes its bounds on (see :meth:`Sandbox.flow_parameters`), whatever the step says."""
    parameters = params.parameters
    if sandbox is not None:
        parameters = sandbox.flow_parameters(params.deployment, parameters, await deployment_parameters(params.deployment))
    name = await deployment_run_name(params.deployment, parameters)
    try:
        flow_run = await arun_deployment(
            params.deployment, parameters=parameters, timeout=params.timeout_seconds, poll_interval=1,
            idempotency_key=_attempt_key(params.deployment), flow_run_name=name,
        )
    except ObjectNotFound:
        raise _missing(params.deployment) from None
    state = flow_run.state
    if state is None or not state.is_completed():
        raise RuntimeError(
            f"deployment {params.deployment} run {flow_run.id} ended {state.name if state else 'unknown'}: "
            f"{state.message if state else ''}"
        )
    return {"flow_run_id": str(flow_run.id), "state": state.name, "deployment": params.deployment}


def _attempt_key(deployment: str) -> str | None:
    """One sub-run per attempt of the step's task run: the Prefect client retries a create whose
    answer was lost (under load), and without a key each retry started the deployment again. A
    retry of the step (a new attempt) starts a new sub-run. None outside a task run."""
    task_id = task_run.get_id()
    return f"{task_id}-{task_run.get_run_count()}-{deployment}" if task_id else None


def orchestrated_steps(base: StepRegistry, sandbox: Sandbox | None = None) -> StepRegistry:
    """``base``'s step types, with the runners only the orchestration layer has (``flow``), its
    deployments started inside ``sandbox`` when the run has one.

    A copy per run, so that the core's registry keeps its Prefect-free runners and step modules
    loaded later still count.
    """

    async def run_flow(params: FlowParams, ctx: StepContext) -> dict[str, Any]:
        return await run_flow_step(params, ctx, sandbox)

    registry = base.copy()
    registry.register(
        "flow", run_flow, params=FlowParams, outputs=FLOW_OUTPUTS,
        description="Run a Prefect deployment as a sub-run and wait for it.", replace=True,
    )
    return registry


def step_cache_key(task_ctx: Any, inputs: dict[str, Any]) -> str | None:
    """The cache key of a cached step: its type, the parameters its cache names (after references
    are resolved), the collection it uses (whatever its cache names: one collection's hits are
    never another's), the embedder's kind, model and size, and the source of the step type's code.

    None (the step runs, and its sandbox refuses it) when a sandboxed run's step would use a
    collection outside the run's: a cached output is never read past the sandbox."""
    values = {name: value.unwrap() if isinstance(value, BaseAnnotation) else value for name, value in inputs.items()}
    definition, step_id, registry = values["definition"], values["step_id"], values["registry"]
    settings: Settings = values["settings"]
    sandbox: Sandbox | None = values.get("sandbox")
    step = definition.step(step_id)
    parameters = resolve(step.parameters, values["outputs"], {**definition.context, **(values["context"] or {})})
    step_type = registry.get(step.type)
    collection = None
    if takes_collection(step_type.params):
        given = parameters.get("collection")
        collection = given if isinstance(given, str) and given else settings.collection
        if sandbox is not None and not sandbox.reaches(collection):
            return None
    if step.cache is not None and step.cache.key is not None:
        parameters = {name: parameters.get(name) for name in step.cache.key}
    try:
        code = inspect.getsource(step_type.run)
    except (OSError, TypeError):  # no source to read: the function's qualified name stands for it
        code = f"{step_type.run.__module__}.{step_type.run.__qualname__}"
    identity = {
        "type": step.type,
        "parameters": parameters,
        "embedder": [settings.embedder, settings.embedding_model, settings.embedding_dimensions],
        "code": hashlib.sha256(code.encode()).hexdigest(),
    }
    if collection is not None:
        identity["collection"] = collection
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


async def retry_unless_invalid(task: Any, task_run: Any, state: Any) -> bool:
    """A step's own ``retries`` cover any failure except bad parameters or configuration.

    The core raises those as they are and wraps every other failure in :class:`StepFailed`.
    """
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, StepFailed)


@task(name="workflow-step", cache_policy=NO_CACHE, retry_condition_fn=retry_unless_invalid)
async def workflow_step(
    settings: Settings,
    definition: WorkflowDefinition,
    step_id: str,
    outputs: dict[str, Any],
    context: dict[str, Any],
    registry: StepRegistry,
    sandbox: Sandbox | None = None,
) -> Any:
    """Run one step with its upstream ``outputs``; Prefect owns its retries, timeout and cache.
    ``sandbox`` is the run's (its steps in ``registry`` enforce it; the cache key reads it too)."""
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
        once, step, outputs, context=context, services=get_resources(settings), registry=registry,
        embedding_guard=embedding_slot,
    )
