"""A run started for a caller who reaches only some collections keeps to them whatever its steps
resolve at run time, a cached output included; and a run the caller may not see is neither shown
nor cancelled."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from citadel.workflows import StepContext, default_registry
from flows.run_workflow import run_workflow

PEEKS: list[str] = []


class PeekParams(BaseModel):
    collection: str | None = None
    key: str = ""


async def peek(params: PeekParams, ctx: StepContext) -> dict:
    """A test step that reads a collection: records the read."""
    PEEKS.append(f"{params.collection}:{params.key}")
    return {"seen": params.collection}


@pytest.fixture(autouse=True)
def _peek_step():
    default_registry.register("peek", peek, params=PeekParams, outputs=["seen"], cacheable=True, replace=True)
    PEEKS.clear()
    yield
    default_registry.unregister("peek")


async def _collection_known(collection: str) -> bool:
    from citadel.registry import Registry
    from citadel.settings import Settings

    registry = Registry(Settings().registry_url)
    await registry.init()
    try:
        runs = await registry.recent_runs(1000)
        return await registry.collection(collection) is not None or any(run.collection == collection for run in runs)
    finally:
        await registry.aclose()


async def test_a_collection_a_reference_resolves_outside_the_grant_fails_its_step_before_the_store(
    data_dir: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    mine, theirs = f"mine_{tag}", f"theirs_{tag}"
    records = [{"id": "a", "text": "a note"}]
    workflow = {"workflow_id": "tenant", "context": {"target": theirs}, "steps": [
        {"step_id": "own", "type": "index", "parameters": {"source": records, "collection": mine}},
        {"step_id": "into", "type": "index", "parameters": {"source": records, "collection": "${context.target}"}},
        {"step_id": "look", "type": "search", "parameters": {"query": "note", "collection": "${context.target}"}},
        {"step_id": "version", "type": "search", "parameters": {"query": "note", "collection": f"{theirs}__v1"}},
        {"step_id": "default", "type": "search", "parameters": {"query": "note"}},  # 'documents', not granted
    ]}
    state = await run_workflow(workflow, source_roots=[str(tmp_path)], inline_owner="key:aaaaaaaaaaaa",
                               collection_grants=["mine_*"], return_state=True)
    assert state.is_failed()
    from orchestration.workflow_runs import wait_for_workflow

    report = await wait_for_workflow(str(state.state_details.flow_run_id))
    assert report.steps["own"].state == "Completed" and await _collection_known(mine)
    for step, collection in (("into", theirs), ("look", theirs), ("version", f"{theirs}__v1"), ("default", "documents")):
        assert report.steps[step].state == "Failed", step
        assert f"collection {collection!r} is outside the collections" in report.steps[step].error, report.steps[step].error
    assert not await _collection_known(theirs), "nothing was written to the other collection"


async def test_a_cached_output_is_never_read_past_the_grant(data_dir: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    theirs = f"theirs_{tag}"

    def workflow(collection: str) -> dict:
        return {"workflow_id": "cached-peek", "context": {"target": theirs}, "steps": [
            {"step_id": "peek", "type": "peek", "cache": {"expiration": "1h", "key": ["key"]},
             "parameters": {"collection": collection, "key": tag}}]}

    first = await run_workflow(workflow(theirs))
    again = await run_workflow(workflow(theirs))
    assert (first["steps"]["peek"]["cached"], again["steps"]["peek"]["cached"]) == (False, True)
    assert PEEKS == [f"{theirs}:{tag}"]
    state = await run_workflow(workflow("${context.target}"), source_roots=[], collection_grants=["mine_*"], return_state=True)
    assert state.is_failed() and "outside the collections" in state.message
    assert PEEKS == [f"{theirs}:{tag}"], "not run, and not served from the cache"
    own = await run_workflow(workflow(f"mine_{tag}"), source_roots=[], collection_grants=["mine_*"])
    assert own["steps"]["peek"]["cached"] is False, "a cache key naming no collection still keeps one collection's output its own"
    assert own["steps"]["peek"]["output"] == {"seen": f"mine_{tag}"}


async def test_a_run_the_caller_may_not_see_is_neither_shown_nor_cancelled(data_dir: Path) -> None:
    from prefect.client.orchestration import get_client

    from orchestration.workflow_runs import (
        OWNER_TAG,
        RunHidden,
        RunOrigin,
        cancel_workflow,
        recent_workflows,
        workflow_status,
    )

    tag = uuid.uuid4().hex[:8]
    async with get_client() as client:
        runs = [
            await client.create_flow_run(run_workflow, tags=[f"{OWNER_TAG}key:{owner}{tag}"], parameters={
                "workflow": {"workflow_id": f"{owner}-{tag}", "steps": [{"step_id": "c", "type": "chunk", "parameters": {"text": "x"}}]},
                "inline_owner": f"key:{owner}{tag}"})
            for owner in ("a", "b", "a", "b", "b")
        ]
    mine, theirs = str(runs[0].id), str(runs[1].id)

    def visible(origin: RunOrigin) -> bool:
        return f"key:a{tag}" in origin.owners

    assert (await workflow_status(mine, visible)).workflow_id == f"a-{tag}"
    with pytest.raises(RunHidden, match=f"no flow run {theirs} on this Prefect server"):
        await workflow_status(theirs, visible)
    with pytest.raises(RunHidden):
        await cancel_workflow(theirs, visible)
    assert (await workflow_status(theirs)).state not in ("Cancelling", "Cancelled"), "not cancelled"
    listed = await recent_workflows(limit=2, visible=visible)
    assert [report.workflow_id for report in listed] == [f"a-{tag}", f"a-{tag}"]
    assert len(await recent_workflows(limit=1, visible=visible)) == 1
    for run in runs:
        await cancel_workflow(str(run.id))
