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
