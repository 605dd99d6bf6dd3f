"""run-workflow: concurrency of independent steps, failures, skips, retries and timeouts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from citadel.workflows import StepContext, WorkflowInvalid, default_registry
from flows.run_workflow import run_workflow
from orchestration.workflow_runs import wait_for_workflow


class SleepParams(BaseModel):
    seconds: float = 0.0
    fail_times: int = 0
    key: str = ""


ATTEMPTS: dict[str, int] = {}


async def sleepy(params: SleepParams, ctx: StepContext) -> dict:
    """A test step: sleeps, and fails with a transient error the first ``fail_times`` times."""
    ATTEMPTS[params.key] = ATTEMPTS.get(params.key, 0) + 1
    await asyncio.sleep(params.seconds)
    if ATTEMPTS[params.key] <= params.fail_times:
        raise ConnectionError(f"transient failure {ATTEMPTS[params.key]}")
    return {"slept": params.seconds, "attempts": ATTEMPTS[params.key]}


@pytest.fixture(autouse=True)
def _sleepy_step():
    default_registry.register("sleepy", sleepy, params=SleepParams, replace=True)
    yield
    default_registry.unregister("sleepy")


async def test_independent_steps_overlap_and_outputs_flow_downstream(data_dir: Path) -> None:
    workflow = {
        "workflow_id": "overlap",
        "steps": [
            {"step_id": "left", "type": "sleepy", "parameters": {"seconds": 0.5, "key": "left"}},
            {"step_id": "right", "type": "sleepy", "parameters": {"seconds": 0.5, "key": "right"}},
            {"step_id": "join", "type": "chunk", "depends_on": ["left", "right"],
             "parameters": {"text": "slept ${steps.left.output.slept} and ${steps.right.output.slept}"}},
        ],
    }
    result = await run_workflow(workflow)
    steps = result["steps"]
    assert steps["join"]["output"]["texts"] == ["slept 0.5 and 0.5"]
    left, right = steps["left"], steps["right"]
    assert left["started"] < right["finished"] and right["started"] < left["finished"], "branches ran concurrently"
    assert steps["join"]["started"] >= max(left["finished"], right["finished"])


async def test_failed_step_skips_dependants_and_others_finish(data_dir: Path) -> None:
    ATTEMPTS.clear()
    workflow = {
        "workflow_id": "failing",
        "steps": [
            {"step_id": "bad", "type": "sleepy", "parameters": {"fail_times": 99, "key": "bad"}},
            {"step_id": "child", "type": "sleepy", "depends_on": ["bad"], "parameters": {"key": "child"}},
            {"step_id": "grandchild", "type": "sleepy", "depends_on": ["child"], "parameters": {"key": "grandchild"}},
            {"step_id": "independent", "type": "sleepy", "parameters": {"seconds": 0.2, "key": "independent"}},
        ],
    }
    state = await run_workflow(workflow, return_state=True)
    assert state.is_failed() and "bad" in state.message
    assert "child" not in ATTEMPTS and "grandchild" not in ATTEMPTS
    status = await wait_for_workflow(str(state.state_details.flow_run_id))
    assert {k: v["state"] for k, v in status["steps"].items()} == {
        "bad": "Failed", "child": "Skipped", "grandchild": "Skipped", "independent": "Completed",
    }
    assert "transient failure" in status["steps"]["bad"]["error"]


async def test_step_retries_and_timeout_are_honoured(data_dir: Path) -> None:
    ATTEMPTS.clear()
    workflow = {
        "workflow_id": "retries",
        "steps": [
            {"step_id": "flaky", "type": "sleepy", "retries": 2, "parameters": {"fail_times": 2, "key": "flaky"}},
            {"step_id": "slow", "type": "sleepy", "timeout_seconds": 0.5, "parameters": {"seconds": 5, "key": "slow"}},
        ],
    }
    state = await run_workflow(workflow, return_state=True)
    assert ATTEMPTS["flaky"] == 3
    status = await wait_for_workflow(str(state.state_details.flow_run_id))
    assert status["steps"]["flaky"]["state"] == "Completed"
    assert status["steps"]["slow"]["state"] in ("TimedOut", "Failed")


async def test_an_invalid_workflow_never_starts(data_dir: Path) -> None:
    ATTEMPTS.clear()
    workflow = {
        "workflow_id": "invalid",
        "steps": [
            {"step_id": "a", "type": "sleepy", "parameters": {"key": "a"}},
            {"step_id": "b", "type": "sleepy", "depends_on": ["missing"], "parameters": {"key": "b"}},
        ],
    }
    with pytest.raises(WorkflowInvalid, match="missing"):
        await run_workflow(workflow)
    assert ATTEMPTS == {}


async def test_bad_parameters_at_run_time_are_not_retried(data_dir: Path) -> None:
    """A reference that resolves to the wrong type fails the step before its code runs."""
    workflow = {
        "workflow_id": "bad-params",
        "steps": [
            {"step_id": "a", "type": "sleepy", "parameters": {"key": "a"}},
            {"step_id": "b", "type": "sleepy", "retries": 3, "parameters": {"seconds": "${steps.a.output}", "key": "b"}},
        ],
    }
    ATTEMPTS.clear()
    state = await run_workflow(workflow, return_state=True)
    assert state.is_failed()
    assert "b" not in ATTEMPTS


async def test_embedding_steps_hold_a_slot_of_the_backend_limit(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workflow steps that embed queue for the shared backend's concurrency limit like any run."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tests.support.embedding_server import EmbeddingServer

    with EmbeddingServer() as server:
        monkeypatch.setenv("CITADEL_EMBEDDER", "ollama")
        monkeypatch.setenv("CITADEL_EMBEDDING_MODEL", "all-minilm")
        monkeypatch.setenv("CITADEL_OLLAMA_URLS", server.url)
        server.delay(0.6)  # every request: long enough to see the slot taken
        workflow = {
            "workflow_id": "slots",
            "steps": [
                {"step_id": "one", "type": "embedding", "parameters": {"texts": ["first text"]}},
                {"step_id": "two", "type": "embedding", "parameters": {"texts": ["second text"]}},
            ],
        }
        run = asyncio.create_task(run_workflow(workflow))
        busiest = 0
        async with get_client() as client:
            while not run.done():
                try:
                    limit = await client.read_global_concurrency_limit_by_name("citadel-embedder-ollama")
                    busiest = max(busiest, limit.active_slots)
                except ObjectNotFound:
                    pass
                await asyncio.sleep(0.05)
            result = await run
            after = await client.read_global_concurrency_limit_by_name("citadel-embedder-ollama")
    assert {s["state"] for s in result["steps"].values()} == {"Completed"}
    assert limit.limit == 1, "one slot per Ollama server"
    assert busiest == 1, "a step held the only slot while it embedded, and the other waited"
    assert after.active_slots == 0, "slots are given back"


async def test_a_cached_step_is_reused_across_runs_for_the_same_inputs_and_model(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ATTEMPTS.clear()
    default_registry.register("sleepy", sleepy, params=SleepParams, replace=True, cacheable=True)
    key = f"cached-{uuid.uuid4().hex[:8]}"

    def workflow(seconds: float) -> dict:
        return {"workflow_id": "cached", "steps": [
            {"step_id": "slow", "type": "sleepy", "cache": {"expiration": "1h", "key": ["seconds", "key"]},
             "parameters": {"seconds": seconds, "key": key}},
            {"step_id": "after", "type": "chunk", "parameters": {"text": "slept ${steps.slow.output.slept}"}},
        ]}

    first = await run_workflow(workflow(0.1))
    again = await run_workflow(workflow(0.1))
    assert ATTEMPTS[key] == 1, "the second run reused the first one's output"
    assert (first["steps"]["slow"]["cached"], again["steps"]["slow"]["cached"]) == (False, True)
    assert again["steps"]["slow"]["output"] == first["steps"]["slow"]["output"]
    assert again["steps"]["after"]["output"]["texts"] == ["slept 0.1"]

    await run_workflow(workflow(0.2))
    monkeypatch.setenv("CITADEL_EMBEDDING_DIMENSIONS", "64")
    await run_workflow(workflow(0.1))
    assert ATTEMPTS[key] == 3, "other parameters, or another model, compute it again"


async def test_an_index_step_runs_as_a_sub_run_that_the_registry_links(data_dir: Path, collection_name: str) -> None:
    from prefect.client.orchestration import get_client

    from citadel.registry import Registry
    from citadel.settings import Settings

    workflow = {"workflow_id": "linked", "steps": [
        {"step_id": "index", "type": "index", "parameters": {
            "source": [{"id": "a", "text": "zebras juggle"}], "collection": collection_name}},
    ]}
    state = await run_workflow(workflow, return_state=True)
    output = (await state.aresult())["steps"]["index"]["output"]
    assert output["added"] == 1 and output["flow_run_id"]
    async with get_client() as client:
        child = await client.read_flow_run(uuid.UUID(output["flow_run_id"]))
        parent_task = await client.read_task_run(child.parent_task_run_id)
    assert child.name == f"index-{collection_name}" and parent_task.flow_run_id == state.state_details.flow_run_id
    registry = Registry(Settings().registry_url)
    await registry.init()
    (run,) = [r for r in await registry.recent_runs(1000) if r.collection == collection_name]
    await registry.aclose()
    assert run.flow_run_id == output["flow_run_id"], "the registry names the flow run that indexed"


async def test_recent_runs_are_listed_and_a_finished_run_is_not_cancelled(data_dir: Path) -> None:
    from orchestration.workflow_runs import cancel_workflow, recent_workflows

    workflow_id = f"listed-{uuid.uuid4().hex[:6]}"
    state = await run_workflow({"workflow_id": workflow_id, "steps": [
        {"step_id": "c", "type": "chunk", "parameters": {"text": "a few words"}},
    ]}, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    recent = await recent_workflows(limit=50)
    assert [(r.workflow_id, r.state) for r in recent if r.flow_run_id == run_id] == [(workflow_id, "Completed")]
    assert (await cancel_workflow(run_id)).state == "Completed", "a final run stays as it ended"


async def test_a_run_not_started_yet_is_cancelled(data_dir: Path) -> None:
    from prefect.client.orchestration import get_client

    from orchestration.workflow_runs import cancel_workflow

    async with get_client() as client:
        flow_run = await client.create_flow_run(run_workflow, parameters={"workflow": {"workflow_id": "never"}})
    report = await cancel_workflow(str(flow_run.id))
    assert report.state in ("Cancelling", "Cancelled")


async def _stored(collection: str, ids: list[str]) -> dict:
    from citadel.registry import Registry
    from citadel.settings import Settings

    registry = Registry(Settings().registry_url)
    await registry.init()
    try:
        return await registry.get_documents(collection, ids)
    finally:
        await registry.aclose()


async def test_a_sandboxed_index_step_files_inline_records_under_its_callers_name(
    data_dir: Path, collection_name: str, tmp_path: Path
) -> None:
    def index(doc_id: str) -> dict:
        return {"workflow_id": "owned", "steps": [{"step_id": "index", "type": "index", "parameters": {
            "source": [{"id": doc_id, "text": f"a note of {doc_id}"}], "collection": collection_name, "prune": True}}]}

    roots = [str(tmp_path)]
    first = await (await run_workflow(index("a"), source_roots=roots, inline_owner="key:aaaaaaaaaaaa", return_state=True)).aresult()
    second = await (await run_workflow(index("b"), source_roots=roots, inline_owner="jwt:bob", return_state=True)).aresult()
    assert first["steps"]["index"]["output"]["added"] == 1
    assert second["steps"]["index"]["output"]["deleted"] == 0, "the other caller's 'inline' is not this one's"
    stored = await _stored(collection_name, ["a", "b"])
    assert {doc_id: doc.source for doc_id, doc in stored.items()} == {"a": "key:aaaaaaaaaaaa@inline", "b": "jwt:bob@inline"}


async def test_a_sandboxed_flow_step_starts_its_deployment_inside_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from prefect.states import Completed

    import tasks.workflow
    from citadel.errors import ConfigurationError
    from flows.run_workflow import workflow_steps

    started: list[dict] = []

    async def schema(deployment: str) -> dict:
        return {"source": None, "collection": None, "source_name": "inline", "prune": None, "source_roots": None}

    async def start(deployment: str, parameters: dict, **_: object) -> SimpleNamespace:
        started.append(parameters)
        return SimpleNamespace(id=uuid.uuid4(), state=Completed())

    monkeypatch.setattr(tasks.workflow, "deployment_parameters", schema)
    monkeypatch.setattr(tasks.workflow, "arun_deployment", start)
    flow = workflow_steps(["/srv/sources"], "key:aaaaaaaaaaaa").get("flow")
    ctx = StepContext("w", "f")
    await flow({"deployment": "index-corpus/x", "parameters": {"source": [{"id": "a", "text": "x"}], "prune": True}}, ctx)
    assert started == [{"source": [{"id": "a", "text": "x"}], "prune": True, "source_roots": ["/srv/sources"],
                        "source_name": "key:aaaaaaaaaaaa@inline"}]
    with pytest.raises(ConfigurationError, match="source_roots is set by the service"):
        await flow({"deployment": "index-corpus/x", "parameters": {"source": "/", "source_roots": ["/"]}}, ctx)
    assert len(started) == 1, "nothing started"
    await workflow_steps().get("flow")({"deployment": "index-corpus/x", "parameters": {"source": "/data"}}, ctx)
    assert started[-1] == {"source": "/data"}, "outside a sandbox (the CLI) a flow step's parameters pass as they are"


async def test_a_flow_step_starts_one_sub_run_per_attempt(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each attempt of a `flow` step creates its sub-run under a key of its own: a create the client
    retries (its answer lost) is the same run, and the step's retry after a failed sub-run a new one."""
    from types import SimpleNamespace

    from prefect.states import Completed, Failed

    import tasks.workflow

    keys: list[str | None] = []

    async def start(deployment: str, parameters: dict, **options: object) -> SimpleNamespace:
        keys.append(options.get("idempotency_key"))  # type: ignore[arg-type]
        return SimpleNamespace(id=uuid.uuid4(), state=Failed() if len(keys) == 1 else Completed())

    monkeypatch.setattr(tasks.workflow, "arun_deployment", start)
    workflow = {"workflow_id": "sub-runs", "steps": [
        {"step_id": "child", "type": "flow", "retries": 1, "parameters": {"deployment": "index-corpus/x", "parameters": {}}}]}
    result = await run_workflow(workflow)
    assert result["steps"]["child"]["state"] == "Completed"
    assert len(keys) == 2 and all(keys) and keys[0] != keys[1]
    assert all(str(key).endswith("-index-corpus/x") for key in keys)
