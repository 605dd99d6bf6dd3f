"""The source-root sandbox over HTTP: a workflow reads no file outside CITADEL_API_SOURCE_ROOTS
through symlinks, globs, '..' or a deployment a flow step starts, and names (and so prunes) no
source but its own, nor another caller's inline records."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel.apikeys import ApiKeys
from citadel.registry import DocumentRecord, Registry
from tests.api.conftest import Api, start_api
from tests.api.test_endpoints import wait_final

SECRET = "Zanzibar-kumquat launch code 7741"


def submit(api: Api, steps: list[dict], key: str = "workflows"):
    with api.client(headers=api.headers(key)) as client:
        return client.post("/api/v1/orchestration/workflow", json={"workflow_id": f"hostile-{uuid.uuid4().hex[:8]}", "steps": steps})


def search(api: Api, collection: str, query: str) -> list[dict]:
    with api.client(headers=api.headers("reader")) as client:
        response = client.post("/api/v1/search", json={"query": query, "collection": collection, "limit": 20})
    if response.status_code == 404:  # nothing was ever written to it
        return []
    assert response.status_code == 200, response.text
    return response.json()["hits"]


@pytest.fixture
def planted(api: Api) -> Path:
    """A team folder inside the roots with ``link -> outside`` and ``evil.txt -> outside/s.txt``."""
    sources = Path(api.env["CITADEL_API_SOURCE_ROOTS"])
    outside = sources.parent / f"outside-{uuid.uuid4().hex[:6]}"
    outside.mkdir()
    (outside / "s.txt").write_text(SECRET)
    team = sources / f"team-{uuid.uuid4().hex[:6]}"
    team.mkdir()
    (team / "notes.txt").write_text("Ordinary meeting notes of the team.")
    (team / "link").symlink_to(outside)
    (team / "evil.txt").symlink_to(outside / "s.txt")
    return team


def test_symlinks_out_of_the_roots_are_never_indexed(api: Api, planted: Path) -> None:
    team = planted
    sources = {"star": f"{team}/*/*.txt", "folder": str(team), "globstar": f"{team}/**/*.txt", "charclass": f"{team}/[e]vil.txt",
               "root": api.env["CITADEL_API_SOURCE_ROOTS"]}
    tag = uuid.uuid4().hex[:6]
    steps = [{"step_id": name, "type": "index", "parameters": {"source": source, "collection": f"sbx_{name}_{tag}"}}
             for name, source in sources.items()]
    response = submit(api, steps)
    assert response.status_code == 200, response.text
    final = wait_final(api, response.json()["task_id"])
    assert final["status"] == "Completed", final
    for name in sources:
        assert all(SECRET not in hit["text"] for hit in search(api, f"sbx_{name}_{tag}", SECRET)), f"{name}: the secret was indexed"
        output = final["steps"][name]["output"]
        said = " ".join(output["warnings"])
        assert "lead outside the folders this service may index" in said, (name, output)
        assert "s.txt" not in said.replace("evil.txt", ""), "the target outside is never named"
    assert final["steps"]["folder"]["output"]["added"] == 1  # notes.txt; the walk skipped evil.txt
    assert final["steps"]["charclass"]["output"]["added"] == 0


def seed_document(api: Api, collection: str, source: str, doc_id: str) -> None:
    """A document another team indexed with the CLI, under its own source outside the roots."""

    async def seed() -> None:
        registry = Registry(api.settings.registry_url)
        await registry.init()
        try:
            model, _ = await registry.collection(collection) or ("", 0)
            await registry.commit_documents(collection, model, [DocumentRecord(doc_id, source, "hash", origin=doc_id)])
        finally:
            await registry.aclose()

    asyncio.run(seed())


def documents_of(api: Api, collection: str, ids: list[str]) -> set[str]:
    async def read() -> set[str]:
        registry = Registry(api.settings.registry_url)
        await registry.init()
        try:
            return set(await registry.get_documents(collection, ids))
        finally:
            await registry.aclose()

    return asyncio.run(read())


def test_a_workflow_may_not_prune_another_source(api: Api) -> None:
    collection = f"teamb_{uuid.uuid4().hex[:8]}"
    first = submit(api, [{"step_id": "index", "type": "index", "parameters": {
        "source": [{"id": "own", "text": "A note of the caller's own."}], "collection": collection, "source_name": "caller-notes"}}])
    assert first.status_code == 200 and wait_final(api, first.json()["task_id"])["status"] == "Completed"
    team_b = str(Path(api.env["CITADEL_API_SOURCE_ROOTS"]).parent / "teamB")
    seed_document(api, collection, team_b, f"{team_b}/plan.txt")

    planted = [{"id": "planted", "text": "planted by another team"}]
    for name in (team_b, f"{api.env['CITADEL_API_SOURCE_ROOTS']}/../teamB", "teamB/../../x", "${context.victim}"):
        refused = submit(api, [{"step_id": "index", "type": "index", "parameters": {
            "source": planted, "collection": collection, "source_name": name, "prune": True}}])
        assert refused.status_code == 403, (name, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "workflow_refused"
        assert [problem["location"] for problem in error["details"]] == ["steps[0].parameters.source_name"], error

    own = submit(api, [{"step_id": "index", "type": "index", "parameters": {
        "source": planted, "collection": collection, "source_name": "caller-notes", "prune": True}}])
    final = wait_final(api, own.json()["task_id"])
    assert final["status"] == "Completed", final
    assert final["steps"]["index"]["output"]["deleted"] == 1  # its own 'own' note, nothing of team B's
    assert documents_of(api, collection, [f"{team_b}/plan.txt", "planted", "own"]) == {f"{team_b}/plan.txt", "planted"}



@pytest.fixture(scope="module")
def deploying_api(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Iterator[Api]:
    """An API whose admins may start index-corpus and run-workflow deployments from a flow step."""
    api = start_api("deploying", tmp_path_factory.mktemp("api-deploying"), prefect_api_url,
                    CITADEL_API_DEPLOYMENTS="index-corpus/on-demand,run-workflow/default")
    yield api
    api.process.stop()


def test_a_flow_step_may_not_lead_its_deployment_out_of_the_roots(deploying_api: Api) -> None:
    api = deploying_api
    nested = {"workflow_id": "inner", "steps": [{"step_id": "i", "type": "index", "parameters": {"source": "/etc"}}]}
    attempts = {
        "source_roots": ("run-workflow/default", {"workflow": {"workflow_id": "inner", "steps": []}, "source_roots": ["/"]}),
        "inline_owner": ("run-workflow/default", {"workflow": {"workflow_id": "inner", "steps": []}, "inline_owner": "key:aaaaaaaaaaaa"}),
        "source": ("index-corpus/on-demand", {"source": "/etc"}),
        "source_name": ("index-corpus/on-demand", {"source": [{"id": "x", "text": "x"}], "source_name": "/etc", "prune": True}),
        "workflow.steps[0].parameters.source": ("run-workflow/default", {"workflow": nested}),
        "workflow": ("run-workflow/default", {"workflow": "/etc/passwd"}),
    }
    for place, (deployment, parameters) in attempts.items():
        refused = submit(api, [{"step_id": "f", "type": "flow", "parameters": {"deployment": deployment, "parameters": parameters}}],
                         key="admin")
        assert refused.status_code == 403, (place, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "workflow_refused"
        assert [problem["location"] for problem in error["details"]] == [f"steps[0].parameters.parameters.{place}"], error


def add_key(api: Api, name: str, scopes: list[str]) -> str:
    """Another key, as an operator creates one while the service runs."""

    async def create() -> str:
        registry = Registry(api.settings.registry_url)
        await registry.init()
        try:
            return (await ApiKeys(registry).create(name, scopes, collections="*", sources=[api.env["CITADEL_API_SOURCE_ROOTS"]])).key
        finally:
            await registry.aclose()

    return asyncio.run(create())


def test_two_callers_inline_records_under_one_name_are_each_their_own(api: Api) -> None:
    other = f"other-{api.name}"
    if other not in api.keys:
        api.keys[other] = add_key(api, f"test-{other}", ["workflows"])
    collection = f"shared_{uuid.uuid4().hex[:8]}"

    def index(key: str, doc_id: str, **named: str) -> dict:
        response = submit(api, [{"step_id": "index", "type": "index", "parameters": {
            "source": [{"id": doc_id, "text": f"the note {doc_id}"}], "collection": collection, "prune": True, **named}}], key=key)
        assert response.status_code == 200, response.text
        final = wait_final(api, response.json()["task_id"])
        assert final["status"] == "Completed", final
        return final["steps"]["index"]["output"]

    for named in ({"source_name": "shared"}, {}):  # a name both give, and the default 'inline'
        tag = named.get("source_name", "inline")
        assert index("workflows", f"{tag}-first", **named)["added"] == 1
        second = index(other, f"{tag}-second", **named)
        assert second["deleted"] == 0, ("the other key's prune deleted the first key's record", second["source"])
        assert index("workflows", f"{tag}-third", **named)["deleted"] == 1, "its own earlier record, and only that"
        assert documents_of(api, collection, [f"{tag}-first", f"{tag}-second", f"{tag}-third"]) == {f"{tag}-second", f"{tag}-third"}
