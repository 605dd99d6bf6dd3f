"""Submit, watch, cancel and list workflow runs: the one place the CLI and the HTTP API call.

Where runs go is Prefect's own setting: with a Prefect API configured (the environment, a
``.env`` file or the active profile, as ``prefect config set PREFECT_API_URL=...`` writes it) a
workflow runs through its deployment, on the workers; without one, in this process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.flow_engine import run_flow_async
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.states import Cancelling

from citadel.errors import ConfigurationError
from citadel.models import StepReport, WorkflowReport
from citadel.settings import Settings
from citadel.workflows import WorkflowDefinition, WorkflowInvalid, check_workflow, load_step_modules, load_workflow, workflow_from_data
from flows.cancellation import cancel_request
from flows.run_workflow import run_workflow, workflow_steps
from tasks.run_names import deployment_run_name, final_run_name

DEFAULT_DEPLOYMENT = "run-workflow/default"
OWNER_TAG = "citadel-owner:"
"""The tag a run submitted by a known caller carries, followed by the caller's subject."""
SCAN_LIMIT = 2000
"""The most runs a filtered listing reads to find the ones a caller may see."""
FINAL = frozenset({"Completed", "Failed", "Crashed", "Cancelled", "Skipped", "TimedOut", "Cached"})


def prefect_api_url() -> str | None:
    """The Prefect API of this process, from Prefect's settings; None runs flows on a local server."""
    return PREFECT_API_URL.value() or None


def run_url(flow_run_id: str) -> str | None:
    """The run's page in the Prefect UI; None without a Prefect API (a temporary local server
    that ends with this process has no page to come back to)."""
    ui = PREFECT_UI_URL.value() if prefect_api_url() else None
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else None


async def submit_workflow(
    workflow: dict[str, Any],
    *,
    context: dict[str, Any] | None = None,
    deployment: str = DEFAULT_DEPLOYMENT,
    local: bool = False,
    source_roots: Sequence[str] | None = None,
    inline_owner: str | None = None,
    collection_grants: Sequence[str] | None = None,
) -> WorkflowReport:
    """Start a validated workflow: through ``deployment`` when a Prefect API is configured (the
    report comes back at once, Scheduled), else (or with ``local``) in this process to its end.
    ``source_roots`` sandboxes its ``index`` and ``flow`` steps, on the worker as here, with
    inline records under names of the caller ``inline_owner``, who owns the run (its
    :data:`OWNER_TAG`); ``collection_grants`` bounds the collections its steps may use."""
    report, here = await start_workflow(
        workflow, context=context, deployment=deployment, local=local, source_roots=source_roots, inline_owner=inline_owner,
        collection_grants=collection_grants,
    )
    return report if here is None else await follow_workflow(report.flow_run_id, here)


async def start_workflow(
    workflow: dict[str, Any],
    *,
    context: dict[str, Any] | None = None,
    deployment: str = DEFAULT_DEPLOYMENT,
    local: bool = False,
    source_roots: Sequence[str] | None = None,
    inline_owner: str | None = None,
    collection_grants: Sequence[str] | None = None,
) -> tuple[WorkflowReport, RunHere | None]:
    """Create a workflow run under its final name and start it, returning at once (Scheduled):
    through ``deployment`` when a Prefect API is configured (no :class:`RunHere`), else (or with
    ``local``) in this process, in the background, so a caller can show the run while it goes."""
    if local or not prefect_api_url():
        return await start_workflow_here(
            workflow, context=context, source_roots=source_roots, inline_owner=inline_owner, collection_grants=collection_grants
        )
    parameters = _parameters(workflow, context, source_roots, inline_owner, collection_grants)
    try:
        flow_run = await arun_deployment(
            deployment, parameters=parameters, timeout=0, flow_run_name=await deployment_run_name(deployment, parameters),
            tags=owner_tags(parameters),
        )
    except ObjectNotFound:
        raise ConfigurationError(
            f"deployment {deployment!r} not found on {prefect_api_url()}; "
            "run `prefect deploy --all` (or `citadel serve`), or use --local"
        ) from None
    report = WorkflowReport(
        flow_run_id=str(flow_run.id), name=flow_run.name, workflow_id=workflow.get("workflow_id"), state="Scheduled"
    )
    return report, None


def check_definition(workflow: dict[str, Any], context: dict[str, Any] | None, settings: Settings) -> WorkflowDefinition:
    """The definition when a run would accept it, else :class:`WorkflowInvalid` with every problem:
    checked before anything is submitted, with the step types a run has."""
    load_step_modules(settings.step_modules)
    return check_workflow(workflow, workflow_steps(), context=context)


def _parameters(
    workflow: dict[str, Any],
    context: dict[str, Any] | None,
    source_roots: Sequence[str] | None,
    inline_owner: str | None,
    collection_grants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The run-workflow flow's parameters; the roots and the owner only when the run is sandboxed
    (an empty list is a sandbox with no folder: no path may be read), the collection patterns
    only when they bound it (an empty list: no collection)."""
    parameters: dict[str, Any] = {"workflow": _as_the_form_has_it(workflow)}
    if context:
        parameters["context"] = context
    if source_roots is not None:
        parameters["source_roots"] = [str(root) for root in source_roots]
        if inline_owner is not None:
            parameters["inline_owner"] = inline_owner
    if collection_grants is not None:
        parameters["collection_grants"] = [str(pattern) for pattern in collection_grants]
    return parameters


def owner_tags(parameters: dict[str, Any]) -> list[str]:
    """The tag that records who submitted a run (:data:`OWNER_TAG` and the caller's subject), when
    the service names one; set when the run is created, as the run's ``inline_owner``."""
    owner = parameters.get("inline_owner")
    return [f"{OWNER_TAG}{owner}"] if isinstance(owner, str) and owner else []


def _as_the_form_has_it(workflow: dict[str, Any]) -> dict[str, Any]:
    """The definition without its unset (None) fields: the deployment's schema, the Run form's,
    has no null for an optional field (its default is what leaving it out means)."""
    try:
        return workflow_from_data(workflow).model_dump(mode="json", exclude_none=True)
    except WorkflowInvalid:  # goes as it is: the run reports its problems
        return workflow


class RunHidden(ConfigurationError):
    """A run the caller may not see: said as a run that does not exist."""


@dataclass(frozen=True)
class RunOrigin:
    """Who submitted a run (its :data:`OWNER_TAG` and its ``inline_owner``, both set by the service)
    and the workflow it was given, as a visibility check reads them."""

    owners: frozenset[str]
    workflow: Any


Visible = Callable[[RunOrigin], bool]
"""Whether a caller may see (and so cancel) a run."""


def run_origin(flow_run: FlowRun) -> RunOrigin:
    """What a visibility check reads of ``flow_run``: its owners and its workflow."""
    parameters = flow_run.parameters or {}
    owners = {tag.removeprefix(OWNER_TAG) for tag in flow_run.tags or [] if tag.startswith(OWNER_TAG)}
    owner = parameters.get("inline_owner")
    if isinstance(owner, str) and owner:
        owners.add(owner)
    return RunOrigin(frozenset(owners), parameters.get("workflow"))


@dataclass(frozen=True)
class RunHere:
    """A workflow run executing in this process: the engine's task and the run's cancel request."""

    task: asyncio.Task[Any]
    cancel_request: asyncio.Event


async def start_workflow_here(
    workflow: dict[str, Any],
    *,
    context: dict[str, Any] | None = None,
    source_roots: Sequence[str] | None = None,
    inline_owner: str | None = None,
    collection_grants: Sequence[str] | None = None,
) -> tuple[WorkflowReport, RunHere]:
    """Record a workflow run on the Prefect API and run it in this process, in the background: the
    report (Scheduled, with the run's id) comes back at once. A long-lived process that holds the
    embedded store (the HTTP API) runs what it accepts this way, sandboxed by ``source_roots``,
    ``inline_owner`` and ``collection_grants``; :func:`stop_workflow_here` cancels it."""
    parameters = _parameters(workflow, context, source_roots, inline_owner, collection_grants)
    async with get_client() as client:
        flow_run = await client.create_flow_run(
            run_workflow, parameters=parameters, name=final_run_name(run_workflow.name, parameters), tags=owner_tags(parameters)
        )
    with cancel_request() as requested:  # the engine's task carries the request into the flow
        task = asyncio.create_task(run_flow_async(run_workflow, flow_run=flow_run, parameters=parameters, return_type="state"))  # type: ignore[arg-type]
    report = WorkflowReport(
        flow_run_id=str(flow_run.id), name=flow_run.name, workflow_id=workflow.get("workflow_id"), state="Scheduled"
    )
    return report, RunHere(task, requested)


def _definition(workflow: Any) -> WorkflowDefinition | None:
    """The definition a run was given, or None when it cannot be read (a status must still show)."""
    try:
        return workflow_from_data(workflow) if isinstance(workflow, dict) else load_workflow(workflow)
    except Exception:  # noqa: BLE001 - an invalid or unreadable definition still has a run to report
        return None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def _outputs(flow_run: FlowRun) -> dict[str, Any]:
    """The steps of a completed run's persisted result (JSON), where this process can read it."""
    if flow_run.state is None or not flow_run.state.is_completed():
        return {}
    try:
        result = await flow_run.state.aresult(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result stored where this process cannot read it
        return {}
    return result.get("steps", {}) if isinstance(result, dict) else {}


async def workflow_status(flow_run_id: str, visible: Visible | None = None) -> WorkflowReport:
    """A workflow run's state and, per step, its state, start, end, error and output, from Prefect;
    a run ``visible`` does not show is :class:`RunHidden`, said as a run that does not exist."""
    try:
        run_id = uuid.UUID(flow_run_id)
    except ValueError:
        raise ConfigurationError(f"{flow_run_id!r} is not a flow run id") from None
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ConfigurationError(f"no flow run {flow_run_id} on this Prefect server") from None
        if visible is not None and not visible(run_origin(flow_run)):
            raise RunHidden(f"no flow run {flow_run_id} on this Prefect server")
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])), sort=TaskRunSort.EXPECTED_START_TIME_ASC
        )
    definition = _definition((flow_run.parameters or {}).get("workflow"))
    outputs = await _outputs(flow_run)
    by_step = {run.name: run for run in task_runs}  # task runs are named after their step
    step_ids = [s.step_id for s in definition.steps] if definition else list(by_step)
    steps: dict[str, StepReport] = {}
    for step_id in step_ids:
        run = by_step.get(step_id)
        state = run.state if run else None
        name = state.name if state else "Pending"
        recorded = outputs.get(step_id, {})
        steps[step_id] = StepReport(
            state="Skipped" if name == "NotReady" else name,
            start=_iso(run.start_time) if run else None,
            end=_iso(run.end_time) if run else None,
            duration_s=recorded.get("duration_s"),
            error=state.message if state and (state.is_failed() or state.is_crashed() or name == "NotReady") else None,
            output=recorded.get("output"),
            cached=bool(recorded.get("cached")) or name == "Cached",
        )
    return WorkflowReport(
        flow_run_id=str(flow_run.id),
        name=flow_run.name,
        workflow_id=definition.workflow_id if definition else None,
        state=flow_run.state.name if flow_run.state else None,
        start=_iso(flow_run.start_time),
        end=_iso(flow_run.end_time),
        steps=steps,
    )


async def wait_for_workflow(
    flow_run_id: str,
    timeout_s: float = 3600,
    settle_s: float = 10,
    on_report: Callable[[WorkflowReport], None] | None = None,
) -> WorkflowReport:
    """Poll until the run is final and its steps' states have reached the server (they arrive as
    events, a moment after the flow run's own state); ``on_report`` sees every reading, so a
    caller can show the steps' states as they change."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await workflow_status(flow_run_id)
        if on_report is not None:
            on_report(report)
        if report.state in FINAL or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    settle = time.monotonic() + settle_s
    while time.monotonic() < settle and not all(step.state in FINAL for step in report.steps.values()):
        await asyncio.sleep(0.25)
        report = await workflow_status(flow_run_id)
        if on_report is not None:
            on_report(report)
    return report


async def follow_workflow(
    flow_run_id: str, here: RunHere | None = None, on_report: Callable[[WorkflowReport], None] | None = None
) -> WorkflowReport:
    """Wait for a run to end (see :func:`wait_for_workflow`); a run of this process (``here``)
    whose engine fails outside Prefect's states ends the wait with its error, not a timeout."""
    waiting = asyncio.ensure_future(wait_for_workflow(flow_run_id, on_report=on_report))
    if here is None:
        return await waiting
    await asyncio.wait({waiting, here.task}, return_when=asyncio.FIRST_COMPLETED)
    if here.task.done() and not here.task.cancelled() and here.task.exception() is not None:
        waiting.cancel()
        raise here.task.exception()  # type: ignore[misc]
    report = await waiting
    await here.task
    return report


async def cancel_workflow(flow_run_id: str, visible: Visible | None = None) -> WorkflowReport:
    """Ask the run's worker to stop it (Cancelling); a run already final is left as it is, and a
    run ``visible`` does not show is not touched (:class:`RunHidden`)."""
    report = await workflow_status(flow_run_id, visible)
    if report.state not in FINAL:
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(flow_run_id), Cancelling(message="cancelled on request"))
        report = await workflow_status(flow_run_id)
    return report


async def stop_workflow_here(flow_run_id: str, run: RunHere, timeout_s: float = 30) -> WorkflowReport:
    """Cancel a run this process started (no worker watches it) and wait up to ``timeout_s`` for
    it to stop: the run stops its work and its engine records Cancelled (see
    :mod:`flows.cancellation`); a run already ended is left as it ended."""
    run.cancel_request.set()
    await asyncio.wait({run.task}, timeout=timeout_s)
    return await workflow_status(flow_run_id)


async def _newest_runs(limit: int, visible: Visible | None) -> list[FlowRun]:
    """Up to ``limit`` of the newest run-workflow runs ``visible`` shows, read a page at a time
    (at most :data:`SCAN_LIMIT` runs looked at)."""
    page = limit if visible is None else min(max(limit * 4, 50), 200)
    found: list[FlowRun] = []
    async with get_client() as client:
        for offset in range(0, SCAN_LIMIT, page):
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["run-workflow"])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=page, offset=offset,
            )
            found += [run for run in runs if visible is None or visible(run_origin(run))]
            if len(found) >= limit or len(runs) < page:
                break
    return found[:limit]


async def recent_workflows(limit: int = 20, visible: Visible | None = None) -> list[WorkflowReport]:
    """The newest workflow runs ``visible`` shows (every one without it), newest first, with their
    state (steps are read per run)."""
    runs = await _newest_runs(limit, visible)
    return [
        WorkflowReport(
            flow_run_id=str(run.id),
            name=run.name,
            workflow_id=getattr(_definition((run.parameters or {}).get("workflow")), "workflow_id", None),
            state=run.state.name if run.state else None,
            start=_iso(run.start_time),
            end=_iso(run.end_time),
        )
        for run in runs
    ]
