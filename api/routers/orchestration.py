"""Workflows over HTTP: submitted, watched, cancelled and listed through the workflow-run module.

With a Qdrant server and a Prefect API, runs go to the deployment's workers. On the embedded
store, which admits one process, they run inside this one, recorded on Prefect all the same.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from api.auditing import audit
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import WorkflowList, WorkflowStatus, WorkflowSubmitted, unicode_problems
from api.security import require
from api.state import ServiceState, State
from api.workflow_policy import (
    caller_sandbox,
    collection_grants,
    may_see,
    sandbox_entries,
    workflow_collections,
    workflow_refusals,
)
from citadel.auth import Identity
from citadel.errors import ConfigurationError
from orchestration.workflow_runs import (
    RunHidden,
    RunOrigin,
    Visible,
    cancel_workflow,
    check_definition,
    recent_workflows,
    start_workflow_here,
    stop_workflow_here,
    submit_workflow,
    workflow_status,
)

log = logging.getLogger("citadel.api")

router = APIRouter(prefix="/orchestration", tags=["orchestration"], responses={
    **ERROR_RESPONSES, 404: {"description": "No such workflow run"}})

REQUIRE_WORKFLOWS = require("workflows")
WorkflowsCaller = Annotated[Identity, Depends(REQUIRE_WORKFLOWS)]
"""The caller, with the workflows scope."""
WORKFLOW_BODY = Body(
    description="A workflow definition as `citadel workflow run` takes it: workflow_id, steps, optional context.",
    examples=[{"workflow_id": "embed-one", "steps": [{"step_id": "embed", "type": "embedding", "parameters": {"text": "hello"}}]}],
)


def _run_id(task_id: str) -> str:
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        raise ApiError(404, f"no workflow run {task_id!r}: task ids are Prefect flow run ids (UUIDs)") from None


def _runs_here(state: ServiceState) -> bool:
    return state.embedded_store or not state.prefect_api_url


def _visible_to(identity: Identity) -> Visible | None:
    """Which runs the caller may see and cancel (None: every run, for an admin or a key that reaches every collection)."""
    if identity.allows("admin") or identity.reaches_every_collection:
        return None

    def visible(origin: RunOrigin) -> bool:
        return may_see(identity, origin.owners)

    return visible


def _no_such_run(request: Request, state: ServiceState, action: str, task_id: str, exc: ConfigurationError) -> ApiError:
    """The answer for a run that does not exist, and for one the caller may not see (audited as refused)."""
    if isinstance(exc, RunHidden):
        audit(request, state, action, target=task_id, outcome="refused", detail="a run this key may not see")
    return ApiError(404, f"no workflow run {task_id}")


# The body is read as plain JSON so that every problem of a definition comes back in one 400 with
# its location; the schema below documents its shape.
WORKFLOW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow_id", "steps"],
    "properties": {
        "workflow_id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "maxLength": 255},
        "description": {"type": "string"},
        "steps": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["step_id", "type"],
            "properties": {
                "step_id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "type": {"type": "string", "enum": ["chunk", "embedding", "search", "index", "flow"]},
                "parameters": {"type": "object"},
                "depends_on": {"type": "array", "items": {"type": "string"}},
                "retries": {"type": "integer", "minimum": 0},
                "timeout_seconds": {"type": "number", "minimum": 0},
            },
        }},
        "context": {"type": "object"},
    },
}


@router.post("/workflow", response_model=WorkflowSubmitted, summary="Check a workflow in full, then start it",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": WORKFLOW_SCHEMA}}}})
async def create_workflow(
    request: Request, state: State, identity: WorkflowsCaller, workflow: dict[str, Any] = WORKFLOW_BODY
) -> WorkflowSubmitted:
    not_text = unicode_problems(workflow)
    if not_text:  # before anything encodes the definition (the run's parameters, the registry)
        raise ApiError(422, "the request does not match the schema", code="invalid_request", details=not_text)
    refusals = workflow_refusals(workflow, identity, state.api, state.settings, state.embedding.models)
    collections = workflow_collections(workflow, state.settings)
    if refusals:
        audit(request, state, "workflow.refused", target=collections, outcome="refused",
              detail=f"workflow {str(workflow.get('workflow_id'))!r}; " + "; ".join(r["location"] for r in refusals))
        raise ApiError(403, f"the workflow asks for what this service does not allow ({len(refusals)} problem(s))",
                       code="workflow_refused", details=refusals)
    context = workflow.get("context") if isinstance(workflow.get("context"), dict) else None
    check_definition(workflow, context, state.settings)  # WorkflowInvalid: 400 with every problem
    # The run is sandboxed by the service and by who asked, never by anything in the request: its
    # index and flow steps list and open only files inside the caller's roots (its source grants
    # inside the service's; an empty list: none), its steps use only the caller's collections, here
    # or on a worker, and it files inline records under the caller's own names.
    roots = sandbox_entries(caller_sandbox(identity, state.api))
    owner, grants = identity.owner, collection_grants(identity)
    await state.prefect_ready()
    if _runs_here(state):
        report, run = await start_workflow_here(workflow, source_roots=roots, inline_owner=owner, collection_grants=grants)
        run_id = report.flow_run_id
        state.runs_here[run_id] = run
        run.task.add_done_callback(lambda _task: state.runs_here.pop(run_id, None))
        runs_in = "api"
    else:
        report = await submit_workflow(
            workflow, deployment=state.api.api_workflow_deployment, source_roots=roots, inline_owner=owner, collection_grants=grants
        )
        runs_in = "workers"
    log.info("workflow %s submitted as flow run %s by %s", report.workflow_id, report.flow_run_id, identity.subject)
    audit(request, state, "workflow.submitted", target=report.flow_run_id,
          detail=f"workflow {report.workflow_id!r}; collections {collections}")
    return WorkflowSubmitted(
        task_id=report.flow_run_id, name=report.name, status=report.state or "Scheduled", runs_in=runs_in,
        status_url=str(request.url_for("workflow_status_route", task_id=report.flow_run_id).path),
    )


@router.get("/workflow/{task_id}/status", response_model=WorkflowStatus, name="workflow_status_route",
            summary="A run's state and every step's (a run the key may not see is answered as one that does not exist)")
async def status(task_id: str, request: Request, state: State, identity: WorkflowsCaller) -> WorkflowStatus:
    await state.prefect_ready()
    try:
        return WorkflowStatus.of(await workflow_status(_run_id(task_id), _visible_to(identity)))
    except ConfigurationError as exc:
        raise _no_such_run(request, state, "workflow.status", task_id, exc) from None


@router.post("/workflow/{task_id}/cancel", response_model=WorkflowStatus,
             summary="Cancel a run that has not finished (a run the key may not see is answered as one that does not exist)")
async def cancel(task_id: str, request: Request, state: State, identity: WorkflowsCaller) -> WorkflowStatus:
    await state.prefect_ready()
    run_id = _run_id(task_id)
    visible = _visible_to(identity)
    try:
        here = state.runs_here.get(run_id)
        if here is not None:  # a run of this process stops here, once the caller may see it: no worker watches it
            await workflow_status(run_id, visible)
            report = await stop_workflow_here(run_id, here)
        else:
            report = await cancel_workflow(run_id, visible)
    except ConfigurationError as exc:
        raise _no_such_run(request, state, "workflow.cancel", task_id, exc) from None
    audit(request, state, "workflow.cancelled", target=run_id, detail=f"ended {report.state}" if report.state else "")
    return WorkflowStatus.of(report)


@router.get("/workflows", response_model=WorkflowList, summary="The newest workflow runs the key may see")
async def workflows(state: State, identity: WorkflowsCaller, limit: int = Query(20, ge=1, le=200)) -> WorkflowList:
    await state.prefect_ready()
    reports = await recent_workflows(limit, _visible_to(identity))
    return WorkflowList(workflows=[WorkflowStatus.of(report) for report in reports])
