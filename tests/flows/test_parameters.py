"""The deployments' Run form: every parameter with a readable title, a description and (where a
person types one) an example; no optional one offered as "type None"; the workflow as its fields;
and what Citadel itself sends a run passes the schema check Prefect's server applies."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate

from citadel.workflows import load_workflow_data
from flows.embed_texts import embed_texts
from flows.index_corpus import index_corpus
from flows.index_sharded import index_sharded
from flows.run_workflow import run_workflow
from flows.similarity_search import similarity_search
from orchestration.workflow_runs import _parameters

ROOT = Path(__file__).resolve().parents[2]
FLOWS = [index_corpus, index_sharded, run_workflow, similarity_search, embed_texts]
SET_BY_THE_SERVICE = {"source_roots", "inline_owner"}
# Switches and counts whose title says it all; every other parameter shows an example.
NO_EXAMPLE = {"full", "prune", "blue_green", "by_document"}


def _schema(flow: Any) -> dict[str, Any]:
    return parameter_schema(flow).model_dump()


def _nulls(schema: Any) -> list[str]:
    """Where a schema offers null as a type."""
    if isinstance(schema, list):
        return [found for item in schema for found in _nulls(item)]
    if not isinstance(schema, dict):
        return []
    own = ["here"] if schema.get("type") == "null" else []
    return own + [f"{key}.{found}" for key, value in schema.items() for found in _nulls(value)]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_every_parameter_has_a_title_a_description_and_an_example(flow: Any) -> None:
    for name, prop in _schema(flow)["properties"].items():
        assert prop["title"] != name and prop["title"][0].isupper(), (name, prop["title"])
        assert len(prop.get("description") or "") > 15, name
        if name not in SET_BY_THE_SERVICE | NO_EXAMPLE:
            assert prop.get("examples"), name


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_no_parameter_is_offered_as_type_none(flow: Any) -> None:
    schema = _schema(flow)
    assert _nulls(schema) == []
    assert not schema.get("definitions")  # models are inlined: the form shows their fields
    assert "$ref" not in json.dumps(schema)


def test_the_workflow_parameter_shows_its_steps_fields() -> None:
    workflow = _schema(run_workflow)["properties"]["workflow"]
    definition = next(branch for branch in workflow["anyOf"] if branch.get("type") == "object")
    step = definition["properties"]["steps"]["items"]
    assert {"step_id", "type", "parameters", "depends_on", "retries", "timeout_seconds", "cache"} <= set(step["properties"])
    assert step["properties"]["cache"]["type"] == "object"  # a nested model, shown as its fields


@pytest.mark.parametrize("example", ["index_and_search.yaml", "word_count.yaml"])
def test_a_workflow_citadel_submits_passes_the_deployment_s_schema_check(example: str) -> None:
    """What the CLI and the API send (unset fields left out) is what the server's check accepts;
    the same definition with its unset fields as null would be refused."""
    data = load_workflow_data(str(ROOT / "examples" / "workflows" / example), max_depth=32)
    parameters = _parameters(data, {"collection": "docs"}, None, None)
    schema = _schema(run_workflow)
    assert validate(parameters, schema, raise_on_error=False) == []
    with_nulls = {**parameters, "workflow": {**parameters["workflow"], "description": None}}
    assert validate(with_nulls, schema, raise_on_error=False)


def test_the_examples_in_the_form_are_valid_runs() -> None:
    for flow in FLOWS:
        schema = _schema(flow)
        for name, prop in schema["properties"].items():
            for example in prop.get("examples", []):
                assert validate({name: example}, schema, raise_on_error=False, ignore_required=True) == [], (flow.name, name)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_what_the_form_fills_in_passes_the_check_and_reads_as_the_flow_s_defaults(flow: Any) -> None:
    """The Run form submits every default it shows: each passes the server's schema check, and the
    flow reads each optional one as None (its Python default), so a form run is a default run."""
    schema = _schema(flow)
    filled = {name: prop["default"] for name, prop in schema["properties"].items() if "default" in prop}
    assert validate(filled, schema, raise_on_error=False, ignore_required=True) == []
    required = {"source": "docs", "query": "q", "texts": ["t"], "workflow": {"workflow_id": "w", "steps": []}}
    validated = flow.validate_parameters({**{k: v for k, v in required.items() if k in schema["properties"]}, **filled})
    defaults = {name: param.default for name, param in inspect.signature(flow.fn).parameters.items()}
    for name in filled.keys() - {"shard"}:  # shard 0 is a real shard; without shards the flow ignores it
        assert validated[name] == defaults[name], (name, validated[name], defaults[name])


def test_prune_reads_auto_always_never_and_booleans() -> None:
    for given, read in (("auto", None), ("always", True), ("never", False), (True, True), (False, False), (None, None)):
        assert index_corpus.validate_parameters({"source": "docs", "prune": given})["prune"] is read
    # A real value stays itself: a shard of 0 with shards, a threshold, a collection.
    assert index_corpus.validate_parameters({"source": "d", "shard": 0, "shards": 2})["shard"] == 0
    assert similarity_search.validate_parameters({"query": "q", "score_threshold": 0.3})["score_threshold"] == 0.3
