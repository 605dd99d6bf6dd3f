"""A workflow submitted over HTTP runs on the server, so what it may name is bounded, and what is
refused does not run at all."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.api.conftest import Api


def submit(api: Api, steps: list[dict], key: str = "workflows"):
    with api.client(headers=api.headers(key)) as client:
        return client.post("/api/v1/orchestration/workflow", json={"workflow_id": f"wf-{uuid.uuid4().hex[:8]}", "steps": steps})


def run_count(api: Api) -> int:
    with api.client(headers=api.headers()) as client:
        return len(client.get("/api/v1/orchestration/workflows", params={"limit": 200}).json()["workflows"])


def index_step(source: object, **extra: object) -> dict:
    return {"step_id": "index", "type": "index", "parameters": {"source": source, "collection": "policy", **extra}}


@pytest.fixture
def sources(embedded_api: Api) -> str:
    return embedded_api.env["CITADEL_API_SOURCE_ROOTS"]


def refusals(response) -> dict[str, str]:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"]["code"] == "workflow_refused"
    return {problem["location"]: problem["message"] for problem in body["error"]["details"]}


def test_paths_outside_the_source_roots_are_refused_and_nothing_runs(embedded_api: Api, sources: str) -> None:
    api = embedded_api
    link = os.path.join(sources, f"escape-{uuid.uuid4().hex[:6]}")
    os.symlink("/etc", link)
    before = run_count(api)
    cases = ["/etc", f"{sources}/../../etc", link, f"{sources}/*/../../etc/*.conf", "${context.folder}"]
    for source in cases:
        found = refusals(submit(api, [index_step(source)]))
        assert list(found) == ["steps[0].parameters.source"], (source, found)
    assert "outside the folders" in refusals(submit(api, [index_step(link)]))["steps[0].parameters.source"]
    assert run_count(api) == before


def test_a_folder_inside_the_roots_is_indexed(embedded_api: Api, sources: str) -> None:
    folder = os.path.join(sources, f"docs-{uuid.uuid4().hex[:6]}")
    os.makedirs(folder)
    with open(os.path.join(folder, "a.md"), "w") as handle:
        handle.write("# Allowed\n\nA document inside an allowed source root.")
    response = submit(embedded_api, [index_step(folder, collection=f"roots_{uuid.uuid4().hex[:6]}")])
    assert response.status_code == 200, response.text
    from tests.api.test_endpoints import wait_final

    final = wait_final(embedded_api, response.json()["task_id"])
    assert final["status"] == "Completed" and final["steps"]["index"]["output"]["added"] == 1


def test_an_embedder_override_may_not_name_a_server_or_another_kind(embedded_api: Api) -> None:
    api = embedded_api
    before = run_count(api)
    steps = [
        {"step_id": "a", "type": "embedding", "parameters": {"text": "x", "embedder": {"kind": "ollama", "urls": ["http://169.254.169.254"]}}},
        {"step_id": "b", "type": "search", "parameters": {"query": "x", "embedder": {"model": "text-embedding-3-large"}}},
        {"step_id": "c", "type": "embedding", "parameters": {"text": "x", "model": "mxbai-embed-large"}},
    ]
    found = refusals(submit(api, steps))
    assert "may not name embedding servers" in found["steps[0].parameters.embedder.urls"]
    assert "embeds with 'wordllama' only" in found["steps[0].parameters.embedder.kind"]
    assert "not served here" in found["steps[1].parameters.embedder.model"]
    assert "not served here" in found["steps[2].parameters.model"]
    assert run_count(api) == before


def test_a_flow_step_needs_the_allowlist_and_the_admin_scope(embedded_api: Api) -> None:
    api = embedded_api
    before = run_count(api)
    step = {"step_id": "f", "type": "flow", "parameters": {"deployment": "index-corpus/nightly"}}
    as_user = refusals(submit(api, [step]))
    assert "needs the admin scope" in as_user["steps[0].type"]
    assert "not on the allowlist" in as_user["steps[0].parameters.deployment"]
    as_admin = refusals(submit(api, [step], key="admin"))
    assert list(as_admin) == ["steps[0].parameters.deployment"]
    assert run_count(api) == before


def test_the_number_of_steps_is_bounded(embedded_api: Api) -> None:
    steps = [{"step_id": f"s{i}", "type": "chunk", "parameters": {"text": "x"}} for i in range(51)]
    assert "CITADEL_API_MAX_WORKFLOW_STEPS" in refusals(submit(embedded_api, steps))["steps"]


def test_a_flow_step_passes_its_deployment_only_what_an_index_step_may_name(tmp_path) -> None:
    from api.workflow_policy import workflow_refusals
    from citadel.apisettings import ApiSettings
    from citadel.auth import Identity
    from citadel.settings import Settings

    roots = tmp_path / "sources"
    roots.mkdir()
    api = ApiSettings(api_source_roots=[str(roots)], api_deployments=["index-corpus/x", "run-workflow/x"])
    admin = Identity("key:aaaaaaaaaaaa", frozenset({"admin"}), "key")

    def refused(deployment: str, parameters: object) -> dict[str, str]:
        workflow = {"workflow_id": "w", "steps": [{"step_id": "f", "type": "flow", "parameters": {
            "deployment": deployment, "parameters": parameters}}]}
        return {r["location"]: r["message"] for r in workflow_refusals(workflow, admin, api, Settings(), ["m"])}

    at = "steps[0].parameters.parameters"
    assert list(refused("run-workflow/x", {"workflow": {"workflow_id": "n", "steps": []}, "source_roots": ["/"]})) == [f"{at}.source_roots"]
    assert list(refused("run-workflow/x", {"workflow": {}, "inline_owner": "key:bbbbbbbbbbbb"})) == [f"{at}.inline_owner"]
    assert "outside the folders" in refused("index-corpus/x", {"source": "/etc"})[f"{at}.source"]
    assert "outside the folders" in refused("index-corpus/x", {"source": [], "source_name": "/etc", "prune": True})[f"{at}.source_name"]
    assert "literally" in refused("index-corpus/x", {"source": "${context.x}"})[f"{at}.source"]
    assert "literally" in refused("index-corpus/x", "${steps.a.output.hits}")["steps[0].parameters.parameters"]
    nested = {"workflow_id": "n", "steps": [{"step_id": "i", "type": "index", "parameters": {"source": "/etc"}}]}
    assert list(refused("run-workflow/x", {"workflow": nested})) == [f"{at}.workflow.steps[0].parameters.source"]
    assert "read on the server" in refused("run-workflow/x", {"workflow": "/etc/passwd"})[f"{at}.workflow"]
    assert refused("index-corpus/x", {"source": str(roots), "source_name": "crm", "prune": True}) == {}
    assert refused("run-workflow/x", {"workflow": {"workflow_id": "n", "steps": [
        {"step_id": "i", "type": "index", "parameters": {"source": [], "source_name": "crm"}}]}}) == {}


def test_object_storage_is_refused_unless_its_bucket_and_prefix_are_allowed() -> None:
    from pydantic import ValidationError

    from api.workflow_policy import workflow_refusals
    from citadel.apisettings import ApiSettings
    from citadel.auth import Identity
    from citadel.settings import Settings

    caller = Identity("key:aaaaaaaaaaaa", frozenset({"workflows"}), "key")

    def refused(api: ApiSettings, source: str) -> dict[str, str]:
        workflow = {"workflow_id": "w", "steps": [index_step(source)]}
        return {r["location"]: r["message"] for r in workflow_refusals(workflow, caller, api, Settings(), ["m"])}

    at = "steps[0].parameters.source"
    assert "CITADEL_API_SOURCE_BUCKETS" in refused(ApiSettings(), "s3://docs/handbook")[at], "off by default"
    api = ApiSettings(api_source_buckets=["s3://docs/handbook", "s3://public"])
    assert refused(api, "s3://docs/handbook") == {} and refused(api, "s3://docs/handbook/2024/") == {}
    assert refused(api, "s3://public/anything") == {}
    for outside in ("s3://docs", "s3://docs/handbook-old", "s3://docs/other", "s3://private/handbook"):
        assert "not under a bucket and prefix" in refused(api, outside)[at], outside
    assert "empty, '.' or '..' folder" in refused(api, "s3://docs/handbook/../secret")[at]
    with pytest.raises(ValidationError, match="CITADEL_API_SOURCE_BUCKETS"):
        ApiSettings(api_source_buckets=["/srv/docs"])
