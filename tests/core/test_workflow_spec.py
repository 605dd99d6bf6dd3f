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


# Nesting and YAML aliases: refused when the text is read, before anything walks the values.

def _nested_json(levels: int) -> str:
    inner = '{"a": ' * levels + "1" + "}" * levels
    return json.dumps({"workflow_id": "deep", "steps": [{"step_id": "s", "type": "chunk", "parameters": {"p": "PLACE"}}]}).replace(
        '"PLACE"', inner)


def _nested_yaml(levels: int, flow: bool) -> str:
    head = "workflow_id: deep\nsteps:\n  - step_id: s\n    type: chunk\n    parameters:\n      p:"
    if flow:
        return f"{head} {'[' * levels}1{']' * levels}\n"
    lines = [head]
    for level in range(levels):
        lines.append("  " * (level + 4) + "a:")
    lines[-1] += " 1"
    return "\n".join(lines) + "\n"


def _alias_bomb(levels: int = 9) -> str:
    """Nine aliases of nine of the previous: a few hundred bytes that expand to 9**levels strings."""
    lines = ["workflow_id: bomb", "steps:", "  - {step_id: s, type: chunk, parameters: {text: x}}", "context:",
             '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [100, 500, 950, 5000])
def test_deeply_nested_json_is_a_one_line_load_error(levels: int) -> None:
    with pytest.raises(WorkflowLoadError, match="nests deeper than 64 levels") as caught:
        load_workflow(_nested_json(levels))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("flow", [True, False], ids=["flow", "block"])
@pytest.mark.parametrize("levels", [100, 950, 5000])
def test_deeply_nested_yaml_is_a_one_line_load_error(tmp_path: Path, levels: int, flow: bool) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(_nested_yaml(levels, flow))
    with pytest.raises(WorkflowLoadError, match="deep.yaml nests deeper than 64 levels") as caught:
        load_workflow(path)
    assert "\n" not in str(caught.value)


def test_nesting_within_the_bound_loads_and_the_bound_is_a_parameter(tmp_path: Path) -> None:
    assert load_workflow(_nested_json(50)).steps[0].parameters["p"]["a"]["a"]
    path = tmp_path / "deep.yaml"
    path.write_text(_nested_yaml(50, flow=False))
    assert load_workflow(path).workflow_id == "deep"
    assert load_workflow(_nested_json(100), max_depth=110).workflow_id == "deep"
    with pytest.raises(WorkflowLoadError, match="deeper than 10 levels"):
        load_workflow(_nested_json(8), max_depth=10)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"workflow_id": "w", "steps": [{"step_id": "s", "type": "chunk", "parameters": {
        "text": "[" * 500 + '{\\"' * 300 + "\\" * 7}}]})
    assert load_workflow(text).steps[0].parameters["text"].startswith("[[[")


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert path.stat().st_size < 1000
    with pytest.raises(WorkflowLoadError, match="expands its YAML aliases .* to more than 100000 nodes") as caught:
        load_workflow(path)
    assert "\n" not in str(caught.value) and isinstance(caught.value, ConfigurationError)


def test_aliases_that_repeat_a_little_load_and_count_toward_depth() -> None:
    shared = """
workflow_id: shared
x-defaults: &defaults {chunk_size: 200, overlap: 20}
steps:
  - {step_id: a, type: chunk, parameters: {<<: *defaults, text: one}}
  - {step_id: b, type: chunk, parameters: {<<: *defaults, text: two}}
"""
    data = yaml_data(shared)
    assert data["steps"][1]["parameters"] == {"chunk_size": 200, "overlap": 20, "text": "two"}
    # An alias repeats its node where it stands: 40 levels repeated 40 levels down is 80 deep.
    deep = (f"workflow_id: w\nanchor: &deep {'[' * 40}1{']' * 40}\n"
            f"steps:\n  - {{step_id: s, type: chunk, parameters: {{p: {'[' * 39}*deep{']' * 39}}}}}\n")
    with pytest.raises(WorkflowLoadError, match="counting what its YAML aliases repeat"):
        yaml_data(deep)


def yaml_data(text: str) -> dict[str, object]:
    from citadel.workflows.spec import load_workflow_data

    data = load_workflow_data(text)
    assert isinstance(data, dict)
    return data
