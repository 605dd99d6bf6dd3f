"""Run a validated workflow in this process, one step after another in dependency order.

The reference executor of the core (tests, CLI, scripts): resolves references, checks parameters,
honours per-step retries and timeouts. The orchestration layer runs the same steps as tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import ValidationError

from citadel.errors import ConfigurationError
from citadel.workflows.errors import StepFailed, WorkflowError, WorkflowInvalid
from citadel.workflows.graph import topological_order
from citadel.workflows.references import resolve
from citadel.workflows.spec import StepSpec, WorkflowDefinition
from citadel.workflows.steps import StepContext, StepRegistry, default_registry
from citadel.workflows.validation import check_workflow, problems_from_validation

# Failures that another attempt cannot fix.
_PERMANENT = (ConfigurationError, ValidationError, WorkflowError, TypeError)


async def run_step(
    defn: WorkflowDefinition,
    step: StepSpec,
    outputs: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    services: Any = None,
    registry: StepRegistry | None = None,
    embedding_guard: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
) -> Any:
    """Resolve ``step``'s parameters against ``outputs`` and the context, then run it.

    Retries ``step.retries`` times (not for configuration errors) and limits each attempt to
    ``step.timeout_seconds``; a final failure is a :class:`StepFailed` naming the step.
    """
    registry = registry if registry is not None else default_registry
    merged = {**defn.context, **(context or {})}
    step_type = registry.get(step.type)
    parameters = resolve(step.parameters, outputs, merged)
    index = next((i for i, spec in enumerate(defn.steps) if spec is step), None)
    if index is None:
        index = defn.steps.index(step)
    try:
        params = step_type.parse(parameters)
    except ValidationError as exc:
        problems = problems_from_validation(exc, parameters, "steps", index, "parameters")
        raise WorkflowInvalid(problems, defn.workflow_id) from None
    ctx = StepContext(defn.workflow_id, step.step_id, merged, services, embedding_guard)
    attempt = 0
    while True:
        attempt += 1
        limit = asyncio.timeout(step.timeout_seconds)
        try:
            async with limit:
                return await step_type.run(params, ctx)
        except _PERMANENT:
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure may pass on another attempt
            error = TimeoutError(f"timed out after {step.timeout_seconds}s") if limit.expired() else exc
        if attempt > step.retries:
            attempts = f" after {attempt} attempts" if attempt > 1 else ""
            raise StepFailed(step.step_id, f"{error}{attempts}") from error


async def run_workflow(
    defn: WorkflowDefinition,
    *,
    context: Mapping[str, Any] | None = None,
    services: Any = None,
    registry: StepRegistry | None = None,
) -> dict[str, Any]:
    """Validate ``defn`` and run every step in :func:`topological_order`; outputs by step id.

    ``context`` is laid over the definition's own context; ``services`` reaches every step
    (a :class:`citadel.resources.Resources` lets the built-in steps share backends).
    """
    check_workflow(defn, registry, context=context)
    outputs: dict[str, Any] = {}
    for step_id in topological_order(defn):
        step = defn.step(step_id)
        outputs[step_id] = await run_step(
            defn, step, outputs, context=context, services=services, registry=registry
        )
    return outputs
