"""Workflow runs over HTTP with narrow keys: each sees, lists and cancels only its own runs (a key
that shares a team's collections sees none of the team's runs: a report holds sources, queries and
hits), and another's run is answered exactly as a run that does not exist; a rotated key keeps its runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from citadel.apikeys import ApiKeys
from citadel.registry import Registry
from tests.api.conftest import Api
from tests.api.hostile.test_tenants import add_key as add_key_and_id
from tests.api.hostile.test_tenants import call
from tests.api.test_endpoints import wait_final


def add_key(api: Api, name: str, scopes: list[str], **grants: Any) -> str:
    """A key an operator makes while the service runs: its value."""
    return add_key_and_id(api, name, scopes, **grants)[0]


def submit(api: Api, key: str, steps: list[dict]) -> str:
    answer = call(api, key, "POST", "/api/v1/orchestration/workflow", json={"workflow_id": f"vis-{uuid.uuid4().hex[:8]}", "steps": steps})
    assert answer.status_code == 200, answer.text
    return answer.json()["task_id"]


def listed(api: Api, key: str, limit: int = 200) -> set[str]:
    answer = call(api, key, "GET", "/api/v1/orchestration/workflows", params={"limit": limit})
    assert answer.status_code == 200, answer.text
    return {run["task_id"] for run in answer.json()["workflows"]}


def without_request(answer: httpx.Response, run_id: str) -> str:
    return str({key: value for key, value in answer.json().items() if key != "request_id"}).replace(run_id, "RUN")


def audit_lines(api: Api, since: str) -> list[dict]:
    deadline = time.monotonic() + 20
    while True:  # written beside the answers
        answer = call(api, api.keys["admin"], "GET", "/api/v1/admin/audit", params={"limit": "10000", "since": since})
        assert answer.status_code == 200, answer.text
        lines = answer.json()["entries"]
        if any(line["action"] == "workflow.cancel" for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.3)


@pytest.fixture
def teams(api: Api) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    root = Path(api.env["CITADEL_API_SOURCE_ROOTS"])
    keys = {}
    for team in ("a", "b"):
        (root / f"vis{team}{tag}").mkdir()
        keys[team] = add_key(api, f"vis-{team}-{tag}", ["workflows"], collections=[f"vis{team}{tag}-*"],
                             sources=[str(root / f"vis{team}{tag}")])
    keys["both"] = add_key(api, f"vis-both-{tag}", ["workflows"], collections=[f"visa{tag}-*", f"visb{tag}-*"], sources=[])
    return {"tag": tag, **keys}


def test_a_key_sees_and_cancels_only_its_own_runs(api: Api, teams: dict[str, Any]) -> None:
    tag, a, b, both = teams["tag"], teams["a"], teams["b"], teams["both"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
    records = [{"id": "n", "text": "a note of team B"}]
    b_run = submit(api, b, [{"step_id": "i", "type": "index", "parameters": {"source": records, "collection": f"visb{tag}-docs"}}])
    b_chunk = submit(api, b, [{"step_id": "c", "type": "chunk", "parameters": {"text": "names no collection"}}])
    a_run = submit(api, a, [{"step_id": "s", "type": "search", "parameters": {"query": "note", "collection": f"visa{tag}-docs"}}])
    for run in (b_run, b_chunk, a_run):
        wait_final(api, run)

    never = str(uuid.uuid4())
    for method, path in (("GET", "status"), ("POST", "cancel")):
        missing = call(api, a, method, f"/api/v1/orchestration/workflow/{never}/{path}")
        hidden = call(api, a, method, f"/api/v1/orchestration/workflow/{b_run}/{path}")
        assert missing.status_code == hidden.status_code == 404, (path, hidden.text)
        assert without_request(hidden, b_run) == without_request(missing, never), path
    assert call(api, b, "GET", f"/api/v1/orchestration/workflow/{b_run}/status").json()["status"] == "Completed"

    assert a_run in listed(api, a) and not {b_run, b_chunk} & listed(api, a)
    assert {b_run, b_chunk} <= listed(api, b) and a_run not in listed(api, b)
    assert not {b_run, b_chunk, a_run} & listed(api, both), "reaching a team's collections shows none of its runs"
    assert call(api, both, "GET", f"/api/v1/orchestration/workflow/{b_run}/status").status_code == 404
    assert {b_run, b_chunk, a_run} <= listed(api, api.keys["admin"]) and {b_run, a_run} <= listed(api, api.keys["workflows"])
    assert listed(api, a, limit=1) == {a_run}, "the newest run it may see, past the newer ones it may not"

    lines = audit_lines(api, since)
    submitted = {line["target"]: line for line in lines if line["action"] == "workflow.submitted"}
    assert f"visb{tag}-docs" in submitted[b_run]["detail"] and "none" in submitted[b_chunk]["detail"]
    refused = [(line["action"], line["target"]) for line in lines if line["outcome"] == "refused"]
    assert ("workflow.status", b_run) in refused and ("workflow.cancel", b_run) in refused
    assert ("workflow.status", never) not in refused, "a run that does not exist is no refusal"


def test_cancel_of_another_key_s_run_in_flight_changes_nothing(api: Api, teams: dict[str, Any]) -> None:
    a, b = teams["a"], teams["b"]
    texts = [f"text {i} of team B, long enough to take a moment to embed" for i in range(4000)]
    b_run = submit(api, b, [{"step_id": "e", "type": "embedding", "parameters": {"texts": texts}}])
    assert call(api, a, "POST", f"/api/v1/orchestration/workflow/{b_run}/cancel").status_code == 404
    final = wait_final(api, b_run)
    assert final["status"] == "Completed" and final["steps"]["e"]["state"] == "Completed", final


def test_a_refused_workflow_is_audited(api: Api, teams: dict[str, Any]) -> None:
    tag, a = teams["tag"], teams["a"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
    answer = call(api, a, "POST", "/api/v1/orchestration/workflow", json={"workflow_id": "vis-refused", "steps": [
        {"step_id": "s", "type": "search", "parameters": {"query": "x", "collection": f"visb{tag}-docs"}}]})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "workflow_refused"
    deadline = time.monotonic() + 20
    while True:
        answer = call(api, api.keys["admin"], "GET", "/api/v1/admin/audit", params={"limit": "10000", "since": since})
        found = [line for line in answer.json()["entries"] if line["action"] == "workflow.refused" and line["target"] == f"visb{tag}-docs"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found and found[0]["outcome"] == "refused" and "steps[0].parameters.collection" in found[0]["detail"]


def test_a_rotated_key_keeps_its_runs(api: Api, teams: dict[str, Any]) -> None:
    tag, b = teams["tag"], teams["b"]
    run = submit(api, b, [{"step_id": "i", "type": "index", "parameters": {
        "source": [{"id": "r", "text": "a note before the rotation"}], "collection": f"visb{tag}-docs"}}])
    wait_final(api, run)

    async def rotate() -> str:
        registry = Registry(api.settings.registry_url)
        await registry.init()
        try:
            keys = ApiKeys(registry)
            (old,) = [key for key in await keys.list() if key.name == f"vis-b-{tag}"]
            return (await keys.rotate(old.key_id, 0))[0].key
        finally:
            await registry.aclose()

    new = asyncio.run(rotate())
    assert call(api, b, "GET", f"/api/v1/orchestration/workflow/{run}/status").status_code == 401
    assert call(api, new, "GET", f"/api/v1/orchestration/workflow/{run}/status").json()["status"] == "Completed"
    assert run in listed(api, new)
