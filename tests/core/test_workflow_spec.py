"""Workflow definitions: the schema, and loading from JSON or YAML text and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citadel.errors import ConfigurationError
from citadel.workflows import StepSpec, WorkflowDefinition, WorkflowInvalid, WorkflowLoadError, load_workflow
from citadel.workflows.spec import workflow_from_data

SEED_BODY = {
    "workflow_id": "ingest-and-search",
    "steps": [
        {"step_id": "chunk", "type": "chunk", "parameters": {"text": "${context.text}", "chunk_size": 200}},
        {"step_id": "embed", "type": "embedding", "parameters": {"texts": "${steps.chunk.output.texts}"}},
    ],
    "context": {"text": "Hello world."},
}

YAML_TEXT = """
workflow_id: nightly.index-v2
description: Index the docs, then check a query finds them.
context:
  query: cache eviction
steps:
  - step_id: index
    type: index
    parameters:
      source: ./docs
      collection: docs
    retries: 2
    timeout_seconds: 600
  - step_id: probe
    type: search
    depends_on: [index]
    parameters:
      query: ${context.query}
      collection: docs
      limit: 3
"""


def test_seed_api_body_loads_with_defaults() -> None:
    """The body of POST /api/v1/orchestration/workflow is a definition; new fields have defaults."""
    defn = workflow_from_data(SEED_BODY)
    assert defn.workflow_id == "ingest-and-search"
    assert defn.step_ids == ["chunk", "embed"]
    embed = defn.step("embed")
    assert (embed.depends_on, embed.retries, embed.timeout_seconds) == ([], 0, None)
    assert defn.context == {"text": "Hello world."}
    assert defn.description is None
    assert WorkflowDefinition.model_validate({"workflow_id": "w", "steps": [{"step_id": "a", "type": "t"}]}).context == {}
    with pytest.raises(KeyError, match="no step 'nope'.*chunk, embed"):
        defn.step("nope")


def test_load_json_text_and_yaml_text() -> None:
    """JSON and YAML text give the same kind of definition, with every field read."""
    from_json = load_workflow(json.dumps(SEED_BODY))
    assert from_json == workflow_from_data(SEED_BODY)
    from_yaml = load_workflow(YAML_TEXT)
    assert from_yaml.workflow_id == "nightly.index-v2"
    assert from_yaml.description.startswith("Index the docs")
    index, probe = from_yaml.steps
    assert (index.retries, index.timeout_seconds) == (2, 600.0)
    assert probe.depends_on == ["index"]
    assert probe.parameters == {"query": "${context.query}", "collection": "docs", "limit": 3}


def test_load_files_by_suffix_and_path_types(tmp_path: Path) -> None:
    """.json, .yaml and .yml files load from a str or a Path; a suffix-less file is guessed."""
    json_file = tmp_path / "flow.json"
    json_file.write_text(json.dumps(SEED_BODY))
    yaml_file = tmp_path / "flow.yaml"
    yaml_file.write_text(YAML_TEXT)
    yml_file = tmp_path / "flow.yml"
    yml_file.write_text(YAML_TEXT)
    bare = tmp_path / "workflow"
    bare.write_text(json.dumps(SEED_BODY))
    assert load_workflow(json_file).workflow_id == "ingest-and-search"
    assert load_workflow(str(json_file)).workflow_id == "ingest-and-search"
    assert load_workflow(yaml_file) == load_workflow(str(yml_file)) == load_workflow(YAML_TEXT)
    assert load_workflow(bare).workflow_id == "ingest-and-search"


def test_load_errors_are_clear(tmp_path: Path) -> None:
    """A missing file, broken JSON or YAML, empty text and a non-mapping each say what is wrong."""
    with pytest.raises(WorkflowLoadError, match="does not exist"):
        load_workflow(str(tmp_path / "missing.yaml"))
    with pytest.raises(WorkflowLoadError, match="does not exist"):
        load_workflow(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"workflow_id": ')
    with pytest.raises(WorkflowLoadError, match="broken.json is not valid JSON"):
        load_workflow(broken)
    with pytest.raises(WorkflowLoadError, match="not valid YAML"):
        load_workflow("workflow_id: [unclosed\nsteps: x")
    with pytest.raises(WorkflowLoadError, match="empty"):
        load_workflow("   \n ")
    with pytest.raises(WorkflowInvalid, match="must be a mapping, got list"):
        load_workflow("- a\n- b\n")
    assert issubclass(WorkflowLoadError, ConfigurationError) and issubclass(WorkflowInvalid, ConfigurationError)


def test_schema_problems_are_all_reported_with_locations() -> None:
    """Bad ids, an empty step list, negative retries, a zero timeout and unknown fields, at once."""
    with pytest.raises(WorkflowInvalid) as caught:
        workflow_from_data(
            {
                "workflow_id": "bad id!",
                "steps": [
                    {"step_id": "ok", "type": "chunk", "retries": -1},
                    {"step_id": "sp ace", "type": "chunk", "timeout_seconds": 0, "depends-on": ["ok"]},
                ],
            }
        )
    locations = {p.location for p in caught.value.problems}
    assert locations == {
        "workflow_id",
        "steps[0].retries",
        "steps[1].step_id",
        "steps[1].timeout_seconds",
        "steps[1].depends-on",
    }
    message = str(caught.value)
    assert message.splitlines()[0] == "workflow 'bad id!' is invalid (5 problems):"
    assert "  - steps[1].depends-on: unknown field 'depends-on'" in message
    with pytest.raises(WorkflowInvalid) as caught:
        workflow_from_data({"workflow_id": "w", "steps": []})
    assert [p.location for p in caught.value.problems] == ["steps"]
    with pytest.raises(WorkflowInvalid) as caught:
        workflow_from_data({"workflow_id": "w", "steps": [{"type": "chunk"}]})
    assert [(p.location, p.message) for p in caught.value.problems] == [("steps[0].step_id", "required but missing")]


def test_ids_allow_letters_digits_dot_dash_underscore() -> None:
    """The id charset is [A-Za-z0-9_.-]; anything else (or empty) is refused."""
    assert StepSpec(step_id="Ab_9.x-y", type="t").step_id == "Ab_9.x-y"
    for bad in ("", "a b", "a/b", "é", "a${b}"):
        with pytest.raises(ValueError):
            StepSpec(step_id=bad, type="t")
    with pytest.raises(ValueError):
        StepSpec(step_id="a", type="")
