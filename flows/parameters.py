"""The flows' parameters as the deployment's Run form shows them: a readable title, an example and a
description (the flow's ``Args:``) for each, and a plain input for an optional one.

An optional parameter's JSON schema would be ``anyOf: [X, null]``, which Prefect's form shows as a
type picker ("Property is type None"); here it is X alone (the form can leave it out, which is
what None means), while the flow still accepts None from Python. Citadel's own callers leave a
None parameter out of a run they create, so a deployment's schema check never sees one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from citadel.settings import EmbedderConfig, SearchMode
from citadel.workflows import WorkflowDefinition


def form(title: str, *examples: Any) -> Any:
    """A parameter's title and examples in its JSON schema (Prefect titles it by its Python name)."""
    extra: dict[str, Any] = {"title": title}
    if examples:
        extra["examples"] = list(examples)
    return Field(json_schema_extra=extra)


def without_null(schema: Any) -> Any:
    """``schema`` with every ``anyOf`` branch of type null dropped (a lone branch taking its place)."""
    if isinstance(schema, list):
        return [without_null(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result = {key: without_null(value) for key, value in schema.items()}
    branches = [branch for branch in result.pop("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1:
        result = {**branches[0], **result}
    elif branches:
        result["anyOf"] = branches
    if result.get("default", ...) is None:
        del result["default"]
    return result


def _inlined(schema: Any, definitions: Mapping[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    if "$ref" in schema:
        return _inlined(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    return {key: _inlined(value, definitions) for key, value in schema.items() if key != "$defs"}


def model_form(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its definitions inlined and no null branches: the form shows its
    fields (a ``$ref`` inside one parameter would point at definitions the form does not have)."""
    schema = model.model_json_schema()
    return dict(without_null(_inlined(schema, schema.get("$defs", {}))))


def plain(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(schema)


OBJECT = plain({"type": "object", "additionalProperties": True})
STRINGS = plain({"type": "array", "items": {"type": "string"}})


Collection = Annotated[str | None, plain({"type": "string"}), form("Collection", "documents")]
Embedder = Annotated[
    EmbedderConfig | None, plain(model_form(EmbedderConfig)), form("Embedder", {"kind": "ollama", "model": "nomic-embed-text"})
]
Full = Annotated[bool, form("Re-process every document")]
Shard = Annotated[int | None, plain({"type": "integer", "minimum": 0}), form("Shard (from 0)", 0)]
Shards = Annotated[int | None, plain({"type": "integer", "minimum": 1}), form("Number of shards", 2)]
Folders = Annotated[list[str] | None, STRINGS, form("Allowed folders and prefixes (set by the service)")]

IndexSource = Annotated[
    str | list[dict[str, Any]],
    plain({"anyOf": [
        {"type": "string", "title": "A folder, glob, file or s3:// prefix"},
        {"type": "array", "title": "Inline records", "items": {"type": "object", "additionalProperties": True}},
    ]}),
    form("Source", "docs", "s3://reports/2026/"),
]
SourceName = Annotated[str, form("Name of inline records", "crm-export")]
Prune = Annotated[bool | None, plain({"type": "boolean"}), form("Delete what the source no longer holds")]
BlueGreen = Annotated[bool, form("Build a new version and switch to it")]

Query = Annotated[str, form("Query", "how do I rotate an API key?")]
Limit = Annotated[int, Field(ge=1), form("Number of hits", 10)]
Threshold = Annotated[float | None, plain({"type": "number"}), form("Minimum score", 0.3)]
Filters = Annotated[dict[str, Any] | None, OBJECT, form("Metadata filters", {"lang": "en"})]
ByDocument = Annotated[bool, form("One hit per document")]
Mode = Annotated[SearchMode | None, plain({"type": "string", "enum": ["hybrid", "dense", "sparse"]}), form("Search mode", "hybrid")]

Workflow = Annotated[
    dict[str, Any] | str,
    plain({"anyOf": [
        {**model_form(WorkflowDefinition), "title": "A workflow definition"},
        {"type": "string", "title": "JSON or YAML text, or a file on the worker"},
    ]}),
    form("Workflow", {"workflow_id": "chunk-and-embed", "steps": [
        {"step_id": "chunk", "type": "chunk", "parameters": {"text": "Some text to split."}},
        {"step_id": "embed", "type": "embedding", "parameters": {"texts": "${steps.chunk.output.texts}"}},
    ]}),
]
Context = Annotated[dict[str, Any] | None, OBJECT, form("Context", {"collection": "documents"})]
InlineOwner = Annotated[str | None, plain({"type": "string"}), form("Owner of inline records (set by the service)")]

Texts = Annotated[list[str], form("Texts", ["first text", "second text"])]
ShardedSource = Annotated[str, form("Source", "/srv/corpus", "s3://reports/2026/")]
ShardCount = Annotated[int, Field(ge=1), form("Number of shards", 2)]
Deployment = Annotated[str, form("Indexing deployment", "index-corpus/on-demand")]
TimeoutS = Annotated[float | None, plain({"type": "number", "exclusiveMinimum": 0}), form("Timeout (seconds)", 3600)]


def present(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` without the ones that are None: a run created with them passes the
    deployment's schema check (None is the default of each optional parameter anyway)."""
    return {key: value for key, value in parameters.items() if value is not None}
