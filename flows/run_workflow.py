"""Run a declarative workflow: every step a Prefect task run, independent steps concurrently.

Each step starts as soon as its upstream steps completed, with their outputs, and is submitted
with their states as ``wait_for`` so the Prefect UI draws the graph. A failed step's dependants
do not run (Prefect marks them NotReady); the other branches finish. The run fails at the end
if any step failed, after every step that could run has run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from prefect import Task, flow, get_run_logger
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run

from citadel.models import StepReport, WorkflowReport
from citadel.resources import Resources, open_resources
from citadel.words import plural
from citadel.workflows import (
    INDEX_OUTPUTS,
    IndexParams,
    Sandbox,
    StepContext,
    StepFailed,
    StepRegistry,
    StepSpec,
    check_workflow,
    default_registry,
    load_step_modules,
    load_workflow_data,
    upstream,
)
from flows.cancellation import run_unless_cancelled
from flows.index_corpus import index_corpus
from flows.parameters import CollectionGrants, Context, Folders, InlineOwner, Workflow
from tasks.passing import as_is
from tasks.reporting import report_workflow, run_tags, tag_flow_run
from tasks.run_names import flow_run_namer
from tasks.runsettings import run_settings
from tasks.workflow import orchestrated_steps, step_cache_key, workflow_step


async def run_index_subflow(params: IndexParams, ctx: StepContext, source_roots: list[str] | None = None) -> dict[str, Any]:
    """The ``index`` step as a sub-run of ``index-corpus``: its tasks show under the workflow's
    run, and the registry links the index run to that flow run. The flow takes the embedder's
    concurrency slot itself. ``source_roots`` sandboxes it (the HTTP API's runs)."""
    settings = ctx.services.settings if isinstance(ctx.services, Resources) else await run_settings()
    return await index_corpus(
        params.source,
        collection=params.collection or settings.collection,
        embedder=params.embedder,
        full=params.full,
        source_name=params.source_name,
        prune=params.prune,
        blue_green=params.blue_green,
        source_roots=source_roots,
    )


def workflow_steps(
    source_roots: list[str] | None = None, inline_owner: str | None = None, collection_grants: list[str] | None = None
) -> StepRegistry:
    """The step types a run uses: the core's (with the step modules loaded), the orchestration
    layer's ``flow``, and ``index`` as a sub-run of index-corpus. A sandboxed run (``source_roots``,
    ``collection_grants``) binds its bounds into them, where no step parameter reaches them:
    ``index`` reads inside the roots and files inline records under ``inline_owner``'s names, every
    step that takes a collection fails before it touches the store when the one it resolved is not
    granted, and ``flow`` passes the bounds on."""
    sandbox = Sandbox.of(source_roots, inline_owner, collection_grants)

    async def run_index(params: IndexParams, ctx: StepContext) -> dict[str, Any]:
        if sandbox is not None:
            params = params.model_copy(update={"source_name": sandbox.source_name(params.source_name)})
        return await run_index_subflow(params, ctx, source_roots)

    registry = orchestrated_steps(default_registry, sandbox)
    registry.register(
        "index", run_index, params=IndexParams, outputs=INDEX_OUTPUTS, replace=True,
        description="Index documents into a collection, incrementally, as a sub-run of index-corpus.",
    )
    return sandbox.bind(registry) if sandbox is not None else registry


def _data(workflow: dict[str, Any] | str) -> Any:
    """A definition given as data, or read from JSON/YAML text or a file."""
    return workflow if isinstance(workflow, dict) else load_workflow_data(workflow)


# The report (states, timings, outputs) is persisted as JSON, never pickle, so that
# `citadel workflow status` can show the outputs of a run executed by a worker.
@flow(name="run-workflow", flow_run_name=flow_run_namer("run-workflow"), persist_result=True, result_serializer="json")
async def run_workflow(
    workflow: Workflow,
    context: Context = None,
    source_roots: Folders = None,
    inline_owner: InlineOwner = None,
    collection_grants: CollectionGrants = None,
) -> dict[str, Any]:
    """Validate a workflow and run it; returns every step's state, time and output (or error), as
    JSON. A run started in a process with a cancel request (:mod:`flows.cancellation`) ends
    Cancelled when it is set.

    Args:
        workflow: The workflow: a definition (steps, their types, parameters and dependencies), or
            its JSON or YAML text, or the path of a file that holds it.
        context: Values the steps' ${context.NAME} references read, over the workflow's own.
        source_roots: The sandbox of a run started over HTTP: its index and flow steps read and name
            only paths inside these folders and s3:// prefixes (an empty list: none). Set by the
            service, never by a workflow.
        inline_owner: The caller whose names inline records go under (see docs/design.md). Set by
            the service, never by a workflow.
        collection_grants: The collections (names and globs) the caller of a run started over HTTP
            may reach: a step whose collection, once its references are resolved, is not among
            them fails before it reads or writes anything. Set by the service, never by a workflow.
    """
    return await run_unless_cancelled(_run_workflow(workflow, context, source_roots, inline_owner, collection_grants))


async def _run_workflow(
    workflow: dict[str, Any] | str,
    context: dict[str, Any] | None,
    source_roots: list[str] | None,
    inline_owner: str | None,
    collection_grants: list[str] | None,
) -> dict[str, Any]:
    logger = get_run_logger()
    settings = await run_settings()
    load_step_modules(settings.step_modules)
    registry = workflow_steps(source_roots, inline_owner, collection_grants)
    sandbox = Sandbox.of(source_roots, inline_owner, collection_grants)  # the steps' cache keys honour it too
    definition = check_workflow(_data(workflow), registry, context=context)  # an invalid workflow never starts
    await tag_flow_run([f"workflow:{definition.workflow_id}", *run_tags(settings)])
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
        outputs = {dep: result for dep, (state, result) in zip(sorted(deps[step_id]), upstream_results, strict=True)}
        wait_for = [state for state, _ in upstream_results]
        # With return_state, the async task's call gives a coroutine of the step's final State.
        state: State[Any] = await _step_task(step)(
            settings, as_is(definition), step_id, as_is(outputs), merged, as_is(registry), as_is(sandbox),
            wait_for=wait_for, return_state=True,
        )
        finished = time.time()
        report[step_id], result = await _step_entry(state)
        report[step_id].update(started=started, finished=finished, duration_s=round(finished - started, 3))
        # Every final state goes downstream as wait_for: anything but Completed keeps the dependants from running.
        states[step_id].set_result((state, result))

    async with open_resources(settings):
        await asyncio.gather(*(run(step.step_id) for step in definition.steps))
    ordered = {step.step_id: report[step.step_id] for step in definition.steps}
    await report_workflow(_report(definition.workflow_id, ordered))
    _log_or_raise(logger, definition.workflow_id, ordered)
    return {"workflow_id": definition.workflow_id, "steps": ordered}


def _step_task(step: StepSpec) -> Task[..., Any]:
    """The workflow-step task with the step's name, retries and timeout; a step with ``cache``
    reuses its persisted JSON output for the same inputs, model and code."""
    options: dict[str, Any] = {}
    if step.cache is not None:
        options = dict(
            cache_policy=CacheKeyFnPolicy(cache_key_fn=step_cache_key),
            cache_expiration=dt.timedelta(seconds=step.cache.expiration),
            persist_result=True,
            result_serializer="json",
        )
    return workflow_step.with_options(
        task_run_name=step.step_id, retries=step.retries, timeout_seconds=step.timeout_seconds,
        retry_delay_seconds=[1.0, 2.0, 4.0, 8.0][: max(step.retries, 1)], **options,
    )


async def _step_entry(state: State[Any]) -> tuple[dict[str, Any], Any]:
    """A final step state's report entry, and its result (None unless it completed)."""
    if state.is_completed():
        result = await state.aresult()
        return {"state": "Completed", "output": result, "cached": state.name == "Cached"}, result
    skipped = state.name == "NotReady"
    return {
        "state": "Skipped" if skipped else state.name,
        "error": state.message if not skipped else f"upstream failed: {state.message}",
    }, None


def _log_or_raise(logger: logging.Logger | logging.LoggerAdapter[Any], workflow_id: str, ordered: dict[str, dict[str, Any]]) -> None:
    """Log the run's outcome; a run with a failed step fails, naming every failure and what was skipped."""
    failed = [sid for sid, entry in ordered.items() if entry["state"] not in ("Completed", "Skipped")]
    skipped = [sid for sid, entry in ordered.items() if entry["state"] == "Skipped"]
    done = len(ordered) - len(failed) - len(skipped)
    outcome = f"workflow {workflow_id}: {plural(done, 'step')} of {len(ordered)} completed"
    if failed:
        outcome += f", failed: {', '.join(failed)}"
    if skipped:
        outcome += f", skipped: {', '.join(skipped)}"
    logger.info(outcome)
    if failed:
        reasons = "; ".join(f"{sid}: {ordered[sid].get('error')}" for sid in failed)
        raise StepFailed(failed[0], f"{plural(len(failed), 'step')} failed ({reasons}); skipped: {', '.join(skipped) or 'none'}")


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def _report(workflow_id: str, steps: dict[str, dict[str, Any]]) -> WorkflowReport:
    """The flow's own record of its steps as the public report (for its artifact)."""
    return WorkflowReport(
        flow_run_id=str(flow_run.id or ""),
        workflow_id=workflow_id,
        steps={
            step_id: StepReport(
                state=entry["state"], start=_when(entry["started"]), end=_when(entry["finished"]),
                duration_s=entry["duration_s"], error=entry.get("error"), output=entry.get("output"),
                cached=entry.get("cached", False),
            )
            for step_id, entry in steps.items()
        },
    )
