"""The in-process runner: validation first, references resolved, retries and timeouts per step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from citadel.errors import ConfigurationError
from citadel.workflows import (
    StepContext,
    StepFailed,
    StepRegistry,
    UnresolvedReference,
    WorkflowDefinition,
    WorkflowInvalid,
    run_step,
    run_workflow,
)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = None
    fail_times: int = 0
    sleep: float = 0.0


def registry_with(attempts: dict[str, int]) -> StepRegistry:
    registry = StepRegistry()

    async def flaky(params: Params, ctx: StepContext) -> dict[str, Any]:
        attempts[ctx.step_id] = attempts.get(ctx.step_id, 0) + 1
        if params.sleep:
            await asyncio.sleep(params.sleep)
        if attempts[ctx.step_id] <= params.fail_times:
            raise ConnectionError(f"attempt {attempts[ctx.step_id]} failed")
        return {"value": params.value, "services": ctx.services, "context": ctx.context}

    async def misconfigured(params: Params, ctx: StepContext) -> None:
        attempts[ctx.step_id] = attempts.get(ctx.step_id, 0) + 1
        raise ConfigurationError("bad settings")

    registry.register("flaky", flaky, params=Params)
    registry.register("misconfigured", misconfigured, params=Params)
    return registry


def wf(*steps: dict[str, Any], context: dict[str, Any] | None = None) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"workflow_id": "w", "steps": list(steps), "context": context or {}})


async def test_outputs_flow_through_references_and_context() -> None:
    """Each step sees resolved parameters, the merged context and the caller's services."""
    attempts: dict[str, int] = {}
    defn = wf(
        {"step_id": "b", "type": "flaky", "parameters": {"value": "${steps.a.output.value} and ${context.extra}"}},
        {"step_id": "a", "type": "flaky", "parameters": {"value": "${context.items}"}},
        context={"items": [1, 2], "extra": "base"},
    )
    services = object()
    outputs = await run_workflow(defn, context={"extra": "override"}, services=services, registry=registry_with(attempts))
    assert outputs["a"]["value"] == [1, 2]
    assert outputs["b"]["value"] == "[1, 2] and override"
    assert outputs["b"]["services"] is services
    assert outputs["b"]["context"] == {"items": [1, 2], "extra": "override"}


async def test_retries_then_success_or_step_failed() -> None:
    """A failing step is tried retries + 1 times; the last failure names the step and the attempts."""
    attempts: dict[str, int] = {}
    registry = registry_with(attempts)
    flaky = {"step_id": "s", "type": "flaky", "retries": 2, "parameters": {"fail_times": 2, "value": 1}}
    ok = await run_workflow(wf(flaky), registry=registry)
    assert ok["s"]["value"] == 1 and attempts["s"] == 3
    with pytest.raises(StepFailed, match="step 't' failed: attempt 2 failed after 2 attempts") as caught:
        await run_workflow(wf({"step_id": "t", "type": "flaky", "retries": 1, "parameters": {"fail_times": 5}}), registry=registry)
    assert caught.value.step_id == "t" and isinstance(caught.value.__cause__, ConnectionError)
    with pytest.raises(ConfigurationError, match="bad settings"):  # configuration errors are never retried
        await run_workflow(wf({"step_id": "m", "type": "misconfigured", "retries": 3}), registry=registry)
    assert attempts["m"] == 1


async def test_timeout_limits_each_attempt() -> None:
    """An attempt longer than timeout_seconds fails (and is retried like any other failure)."""
    attempts: dict[str, int] = {}
    defn = wf({"step_id": "slow", "type": "flaky", "timeout_seconds": 0.05, "retries": 1, "parameters": {"sleep": 5}})
    with pytest.raises(StepFailed, match="step 'slow' failed: timed out after 0.05s after 2 attempts"):
        await run_workflow(defn, registry=registry_with(attempts))
    assert attempts["slow"] == 2


async def test_invalid_workflows_do_not_start_and_bad_values_fail_at_run_time() -> None:
    """Validation runs before any step; a referenced value of the wrong type fails its step's check."""
    attempts: dict[str, int] = {}
    registry = registry_with(attempts)
    with pytest.raises(WorkflowInvalid) as caught:
        bad = wf({"step_id": "a", "type": "flaky", "parameters": {"nope": 1}}, {"step_id": "b", "type": "flaky", "depends_on": ["c"]})
        await run_workflow(bad, registry=registry)
    assert len(caught.value.problems) == 2 and attempts == {}
    defn = wf(
        {"step_id": "a", "type": "flaky", "parameters": {"value": "text"}},
        {"step_id": "b", "type": "flaky", "parameters": {"fail_times": "${steps.a.output.value}"}},
    )
    with pytest.raises(WorkflowInvalid) as caught:
        await run_workflow(defn, registry=registry)
    assert [p.location for p in caught.value.problems] == ["steps[1].parameters.fail_times"]
    with pytest.raises(UnresolvedReference, match="no output of step 'a'"):
        await run_step(defn, defn.steps[1], {}, registry=registry)
