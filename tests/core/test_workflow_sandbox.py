"""The bounds of a sandboxed workflow run: whose inline sources it names, and what a flow step starts."""

from __future__ import annotations

import pytest

from citadel.errors import ConfigurationError
from citadel.workflows.sandbox import Sandbox, owned_source_name

INDEX_CORPUS = {"source": None, "collection": None, "source_name": "inline", "prune": None, "source_roots": None}
RUN_WORKFLOW = {"workflow": None, "context": None, "source_roots": None, "inline_owner": None}


def test_an_inline_name_is_the_owners_and_never_another_callers_or_a_path() -> None:
    assert owned_source_name("notes", "key:0123456789ab") == "key:0123456789ab@notes"
    assert owned_source_name("inline", "jwt:alice") == "jwt:alice@inline"
    names = {
        owned_source_name("b@c", "jwt:a"),  # a name holding '@' cannot shift the owner's end
        owned_source_name("c", "jwt:a@b"),
        owned_source_name("b:c", "jwt:a"),
        owned_source_name("c", "jwt:a:b"),
        owned_source_name("c", "jwt:a/b"),
        owned_source_name("c", "key:a"),
        owned_source_name("key:a@c", "jwt:x"),  # a caller naming another's owned name gets its own
    }
    assert len(names) == 7
    assert not any("/" in name or "\\" in name for name in names), "never a path, so never a file source's key"
    assert all(name.startswith(("jwt:", "key:")) for name in names)


def test_a_path_source_name_is_left_as_it_is() -> None:
    assert owned_source_name("/srv/sources/team", "key:0123456789ab") == "/srv/sources/team"
    assert Sandbox(("/srv/sources",), "key:k").source_name("/srv/sources/team") == "/srv/sources/team"


def test_no_sandbox_without_roots() -> None:
    assert Sandbox.of(None, "key:k") is None
    assert Sandbox.of([], "key:k") == Sandbox((), "key:k")


def test_a_flow_step_passes_the_sandbox_on_not_its_own() -> None:
    sandbox = Sandbox(("/srv/sources",), "key:k")
    given = {"source": [{"id": "a", "text": "x"}], "collection": "c", "prune": True}
    out = sandbox.flow_parameters("index-corpus/on-demand", given, INDEX_CORPUS)
    assert out == {**given, "source_roots": ["/srv/sources"], "source_name": "key:k@inline"}
    assert given == {"source": [{"id": "a", "text": "x"}], "collection": "c", "prune": True}, "the step's own are not changed"
    named = sandbox.flow_parameters("index-corpus/on-demand", {"source": "/srv/sources/a", "source_name": "crm"}, INDEX_CORPUS)
    assert named["source_name"] == "key:k@crm"
    nested = sandbox.flow_parameters("run-workflow/default", {"workflow": {"workflow_id": "w", "steps": []}}, RUN_WORKFLOW)
    assert nested["source_roots"] == ["/srv/sources"] and nested["inline_owner"] == "key:k"


@pytest.mark.parametrize("name", ["source_roots", "inline_owner"])
def test_a_flow_step_may_not_set_the_sandbox(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} is set by the service"):
        Sandbox(("/srv/sources",), "key:k").flow_parameters("run-workflow/default", {"workflow": {}, name: ["/"]}, RUN_WORKFLOW)


def test_a_flow_that_reads_a_source_without_taking_the_roots_is_refused() -> None:
    sandbox = Sandbox(("/srv/sources",), "key:k")
    with pytest.raises(ConfigurationError, match="takes a source but no source_roots"):
        sandbox.flow_parameters("index-sharded/default", {"source": "/etc"}, {"source": None, "shards": 2})
    with pytest.raises(ConfigurationError, match="takes a source but no source_roots"):
        sandbox.flow_parameters("custom/default", {"source": "/etc"}, {})  # a flow whose schema says nothing
    assert sandbox.flow_parameters("embed-texts/default", {"texts": ["a"]}, {"texts": None}) == {"texts": ["a"]}


def test_a_sandbox_of_collections_alone_binds_no_folder() -> None:
    sandbox = Sandbox.of(None, "key:k", ["team-a-*"])
    assert sandbox == Sandbox(None, "key:k", ("team-a-*",))
    assert sandbox.flow_parameters("embed-texts/default", {"texts": ["a"]}, {"texts": None}) == {"texts": ["a"]}
    assert Sandbox.of(["/srv"], None).reaches("anything"), "no collection patterns: every collection"


def test_the_collections_a_sandbox_reaches_are_its_callers() -> None:
    sandbox = Sandbox(("/srv/sources",), "key:k", ("team-a-*", "shared"))
    assert all(sandbox.reaches(name) for name in ("team-a-docs", "shared", "shared__v3", "team-a-x__v1"))
    assert not any(sandbox.reaches(name) for name in ("team-b-docs", "Team-A-docs", "SHARED", "shared2", "team-b-*", "teamb__v2"))
    with pytest.raises(ConfigurationError, match="'team-b-docs' is outside the collections") as caught:
        sandbox.check_collection("look", "team-b-docs")
    assert "exist" not in str(caught.value)
    assert not Sandbox((), None, ()).reaches("documents"), "an empty grant reaches nothing"


async def test_a_bound_registry_checks_the_collection_a_step_resolved_before_it_runs() -> None:
    from pydantic import BaseModel

    from citadel.settings import Settings
    from citadel.workflows import StepContext, StepRegistry

    class Params(BaseModel):
        collection: str | None = None

    class NoCollection(BaseModel):
        text: str = ""

    ran: list[str] = []

    async def touch(params: Params, ctx: StepContext) -> dict:
        """Touches the store."""
        ran.append(params.collection or "default")
        return {}

    async def chunk(params: NoCollection, ctx: StepContext) -> dict:
        return {}

    registry = StepRegistry()
    registry.register("touch", touch, params=Params, outputs=["x"], cacheable=True)
    registry.register("chunk", chunk, params=NoCollection)
    bound = Sandbox(None, None, ("team-a-*",)).bind(registry)
    assert registry.get("touch").run is touch, "the registry given is left as it was"
    assert bound.get("chunk").run is chunk and bound.get("touch").outputs == ("x",) and bound.get("touch").cacheable
    services = type("Services", (), {"settings": Settings(collection="documents")})()
    await bound.get("touch")({"collection": "team-a-docs"}, StepContext("w", "s", services=services))
    for given in ({"collection": "team-b-docs"}, {}, {"collection": ""}):  # {} and "": the default, 'documents'
        with pytest.raises(ConfigurationError, match="outside the collections"):
            await bound.get("touch")(given, StepContext("w", "s", services=services))
    assert ran == ["team-a-docs"]
    assert Sandbox(None, None, None).bind(registry) is registry


def test_a_flow_step_keeps_its_deployment_inside_the_collections() -> None:
    sandbox = Sandbox(("/srv/sources",), "key:k", ("team-a-*",))
    nested = sandbox.flow_parameters("run-workflow/default", {"workflow": {"workflow_id": "w", "steps": []}},
                                     {**RUN_WORKFLOW, "collection_grants": None})
    assert nested["collection_grants"] == ["team-a-*"]
    with pytest.raises(ConfigurationError, match="takes no collection_grants"):
        sandbox.flow_parameters("run-workflow/old", {"workflow": {"workflow_id": "w", "steps": []}}, RUN_WORKFLOW)
    given = {"source": [{"id": "a", "text": "x"}], "collection": "team-a-docs"}
    assert sandbox.flow_parameters("index-corpus/on-demand", given, INDEX_CORPUS)["collection"] == "team-a-docs"
    for collection in ("team-b-docs", None):  # None: the deployment's own default, not known to be granted
        parameters = {"source": [{"id": "a", "text": "x"}], **({"collection": collection} if collection else {})}
        with pytest.raises(ConfigurationError, match="outside the collections"):
            sandbox.flow_parameters("index-corpus/on-demand", parameters, INDEX_CORPUS)
    with pytest.raises(ConfigurationError, match="collection_grants is set by the service"):
        sandbox.flow_parameters("run-workflow/default", {"workflow": {}, "collection_grants": ["*"]}, RUN_WORKFLOW)


def test_the_collections_a_workflow_names() -> None:
    from citadel.workflows import named_collections

    def named(*steps: dict) -> tuple[set[str], bool]:
        found = named_collections({"workflow_id": "w", "steps": list(steps)}, "documents")
        return set(found.names), found.unknown

    assert named({"type": "chunk", "parameters": {"text": "x"}}) == (set(), False)
    assert named({"type": "index", "parameters": {"source": [], "collection": "a"}}, {"type": "search", "parameters": {"query": "q"}}) == (
        {"a", "documents"}, False)
    assert named({"type": "search", "parameters": {"query": "q", "collection": "${context.c}"}}) == (set(), True)
    assert named({"type": "word_count", "parameters": {"collection": "custom"}}) == ({"custom"}, False)
    inner = {"workflow_id": "n", "steps": [{"type": "index", "parameters": {"collection": "n"}}]}
    assert named({"type": "flow", "parameters": {"deployment": "run-workflow/x", "parameters": {"workflow": inner}}}) == ({"n"}, False)
    assert named({"type": "flow", "parameters": {"deployment": "index-corpus/x", "parameters": {"collection": "c"}}}) == ({"c"}, False)
    assert named({"type": "flow", "parameters": {"deployment": "index-corpus/x", "parameters": {}}}) == (set(), True)
    assert named_collections("a file on the worker", "documents").unknown
    assert named_collections({"steps": [{"type": "index", "parameters": {}}]}, "d").describe() == "d"
