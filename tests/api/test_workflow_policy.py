"""A workflow submitted over HTTP runs on the server, so what it may name is bounded, and what is
refused does not run at all."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from citadel.apisettings import ApiSettings
from citadel.auth import Identity
from citadel.grants import Grants
from citadel.settings import Settings
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

    caller = Identity("key:aaaaaaaaaaaa", frozenset({"workflows"}), "key", Grants(("*",), ("*",)))

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


TEAM_A = Grants(("team-a-*", "teama"), ())


def policy(workflow: dict, identity: Identity, api: ApiSettings | None = None, collection: str = "documents") -> dict[str, str]:
    from api.workflow_policy import workflow_refusals

    found = workflow_refusals(workflow, identity, api or ApiSettings(), Settings(collection=collection), ["m"])
    return {r["location"]: r["message"] for r in found}


def caller(grants: Grants, *scopes: str) -> Identity:
    return Identity("key:aaaaaaaaaaaa", frozenset(scopes or {"workflows"}), "key", grants)


def steps(*listed: dict, context: dict | None = None) -> dict:
    return {"workflow_id": "w", "steps": list(listed), **({"context": context} if context else {})}


def inline(collection: str | None, kind: str = "index") -> dict:
    parameters: dict = {"source": [{"id": "a", "text": "x"}]} if kind == "index" else {"query": "x"}
    if collection is not None:
        parameters["collection"] = collection
    return {"step_id": "s", "type": kind, "parameters": parameters}


@pytest.mark.parametrize("kind", ["index", "search"])
def test_a_step_uses_only_a_collection_the_key_reaches(kind: str) -> None:
    at = "steps[0].parameters.collection"
    team_a = caller(TEAM_A)
    for allowed in ("team-a-docs", "teama", "teama__v2", "team-a-docs__v1"):
        assert policy(steps(inline(allowed, kind)), team_a) == {}, allowed
    for outside in ("team-b-docs", "teamb", "teamb__v2", "Team-A-docs", "TEAMA", "teama2", "team-a"):
        message = policy(steps(inline(outside, kind)), team_a)[at]
        assert message == f"collection {outside!r} is outside the collections this key may reach", outside
    for pattern in ("team-b-*", "team-a-*", "*", "team-?-docs"):  # a grant's glob is never a name
        assert "invalid collection name" in policy(steps(inline(pattern, kind)), team_a)[at], pattern
    assert all("exist" not in message for message in policy(steps(inline("team-b-docs", kind)), team_a).values())


def test_the_default_collection_counts_when_a_step_names_none() -> None:
    at = "steps[0].parameters.collection"
    for given in (None, ""):
        for kind in ("index", "search"):
            message = policy(steps(inline(given, kind)), caller(TEAM_A))[at]
            assert message == ("the service's default collection 'documents' (no collection given) "
                               "is outside the collections this key may reach")
            assert policy(steps(inline(given, kind)), caller(TEAM_A), collection="team-a-main") == {}
    assert policy(steps({"step_id": "c", "type": "chunk", "parameters": {"text": "x"}}), caller(Grants())) == {}, "no collection used"
    assert "outside the collections" in policy(steps(inline(None)), caller(Grants()))[at], "no grant reaches nothing"


def test_a_collection_given_as_a_reference_is_refused_unless_the_key_reaches_every_collection() -> None:
    at = "steps[0].parameters.collection"
    for reference in ("${context.c}", "${steps.make.output.texts.0}", "team-a-${context.c}"):
        workflow = steps(inline(reference), context={"c": "team-a-docs"})
        assert "must be given literally" in policy(workflow, caller(TEAM_A))[at], reference
        assert policy(workflow, caller(Grants(("*",), ()))) == {}, "every collection: a reference may resolve to any"
        assert policy(workflow, caller(Grants(), "admin")) == {}


def test_a_custom_step_s_collection_and_a_nested_workflow_s_are_checked_too(tmp_path: Path) -> None:
    custom = {"step_id": "w", "type": "word_count", "parameters": {"text": "x", "collection": "teamb"}}
    assert "outside the collections" in policy(steps(custom), caller(TEAM_A))["steps[0].parameters.collection"]
    nested = {"workflow_id": "n", "steps": [inline("teamb")]}
    flow = {"step_id": "f", "type": "flow", "parameters": {"deployment": "run-workflow/x", "parameters": {"workflow": nested}}}
    api = ApiSettings(api_deployments=["run-workflow/x", "index-corpus/x"])
    found = policy(steps(flow), caller(TEAM_A), api)
    assert "needs the admin scope" in found["steps[0].type"]
    assert "outside the collections" in found["steps[0].parameters.parameters.workflow.steps[0].parameters.collection"]
    corpus = {"step_id": "f", "type": "flow", "parameters": {"deployment": "index-corpus/x", "parameters": {"collection": "teamb"}}}
    assert "outside the collections" in policy(steps(corpus), caller(TEAM_A))["steps[0].parameters.parameters.collection"]


@pytest.fixture
def teams(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The service's root with team A's and team B's folders, and in A's a link into B's."""
    root = tmp_path / "sources"
    a, b = root / "teama", root / "teamb"
    a.mkdir(parents=True)
    b.mkdir()
    (b / "plan.md").write_text("B's plan")
    (a / "into-b").symlink_to(b)
    (a / "plan.md").symlink_to(b / "plan.md")
    return root, a, b


def test_a_path_stays_inside_the_key_s_own_folders(teams: tuple[Path, Path, Path]) -> None:
    root, a, b = teams
    api = ApiSettings(api_source_roots=[str(root)])
    team_a = caller(Grants(("teama",), (str(a),)))
    at = "steps[0].parameters.source"
    for source in (str(a), f"{a}/*.md", f"{a}/**/*.txt"):
        assert policy(steps(index_step(source, collection="teama")), team_a, api) == {}, source
    for source in (str(b), f"{a}/../teamb", str(a / "into-b"), f"{a}/into-b/*.md", str(a / "plan.md"), f"{b}/*.md",
                   str(root), "/etc", f"{a}/*/../../teamb"):
        message = policy(steps(index_step(source, collection="teama")), team_a, api).get(at)
        assert message and ("outside the folders this key may index" in message or "'..'" in message), (source, message)
    name_at = "steps[0].parameters.source_name"
    for name in (str(b), f"{a}/../teamb", str(a / "into-b")):
        workflow = steps(index_step([{"id": "x", "text": "x"}], collection="teama", source_name=name, prune=True))
        assert "outside the folders this key may index" in policy(workflow, team_a, api)[name_at], name
    assert policy(steps(index_step([], collection="teama", source_name=str(a), prune=True)), team_a, api) == {}
    no_folder = caller(Grants(("teama",), ()))
    assert "off for this key" in policy(steps(index_step(str(a), collection="teama")), no_folder, api)[at]
    assert policy(steps(index_step(str(b), collection="teama")), caller(Grants(), "admin"), api) == {}, "an admin: the service's roots"
    outside_root = caller(Grants(("teama",), (str(root.parent),)))  # a grant above the service's roots reaches none of it
    assert "off for this key" in policy(steps(index_step(str(a), collection="teama")), outside_root, api)[at]


def test_the_run_gets_the_key_s_folders_and_collections_not_the_service_s(teams: tuple[Path, Path, Path]) -> None:
    from api.workflow_policy import caller_sandbox, collection_grants, sandbox_entries

    root, a, _ = teams
    api = ApiSettings(api_source_roots=[str(root)], api_source_buckets=["s3://docs/teams/"])
    team_a = caller(Grants(("teama", "team-a-*"), (str(a), "s3://docs/teams/a/", "s3://other/")))
    assert sandbox_entries(caller_sandbox(team_a, api)) == [str(a.resolve()), "s3://docs/teams/a/"]
    assert collection_grants(team_a) == ["teama", "team-a-*"]
    assert collection_grants(caller(Grants(("*",), ()))) is None and collection_grants(caller(Grants(), "admin")) is None
    assert sandbox_entries(caller_sandbox(caller(Grants(), "admin"), api)) == [str(root.resolve()), "s3://docs/teams/"]


def test_who_may_see_a_run() -> None:
    """Its owner (a key across its rotations), an admin, a key that reaches every collection; never
    another team's key for sharing the run's collections."""
    from api.workflow_policy import may_see

    team_a = caller(TEAM_A)
    assert may_see(team_a, frozenset({team_a.owner})), "its own run"
    assert not may_see(team_a, frozenset({"key:bbbbbbbbbbbb"})), "another key's, whatever its collections"
    assert may_see(caller(Grants(("*",), ())), frozenset({"key:bbbbbbbbbbbb"}))
    assert may_see(caller(Grants(), "admin"), frozenset())
