"""The flows' parameters as the deployment's Run form shows them: a readable title, an example and a
description (the flow's ``Args:``) for each, and a plain input for an optional one.

An optional parameter's JSON schema would be ``anyOf: [X, null]`` with a null default, which
Prefect's form shows as a type picker ("Property is type None") and, with null its value, refuses
to submit. Here the form sees X alone with a default of X that means "not set" (an empty name, no
embedder fields, 0 shards, prune "auto"), which the flow reads as None; Python callers still pass
None. A null sent to a deployment is refused by its schema check: leave the parameter out instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from citadel.settings import EmbedderConfig, SearchMode
from citadel.workflows import WorkflowDefinition


def form(title: str, *examples: Any, unset: Any = ...) -> Any:
    """A parameter's title and examples in its JSON schema (Prefect titles it by its Python name),
    and for an optional one the value the form fills in for "not set" as its default."""
    extra: dict[str, Any] = {"title": title}
    if examples:
        extra["examples"] = list(examples)
    if unset is not ...:
        extra["default"] = unset
    return Field(json_schema_extra=extra)


def read_unset(unset: Any) -> BeforeValidator:
    """The form's "not set" value (an empty name, no fields, 0) read as None, as the flow's default."""

    def read(value: Any) -> Any:
        return None if type(value) is type(unset) and value == unset else value

    return BeforeValidator(read)


PRUNING = {"auto": None, "always": True, "never": False}


def _pruning(value: Any) -> Any:
    return PRUNING.get(value, value) if isinstance(value, str) else value


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
STRINGS_SCHEMA: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
STRING = plain({"type": "string"})
COUNT = plain({"type": "integer", "minimum": 0})
SECONDS = plain({"type": "number", "minimum": 0})


Collection = Annotated[str | None, read_unset(""), STRING, form("Collection", "documents", unset="")]
Embedder = Annotated[
    EmbedderConfig | None, read_unset({}), plain(model_form(EmbedderConfig)),
    form("Embedder", {"kind": "ollama", "model": "nomic-embed-text"}, unset={}),
]
Full = Annotated[bool, form("Re-process every document")]
Shard = Annotated[int | None, COUNT, form("Shard (from 0; with a number of shards)", 1, unset=0)]
Shards = Annotated[int | None, read_unset(0), COUNT, form("Number of shards (0: the whole source)", 2, unset=0)]
Folders = Annotated[
    list[str] | None, read_unset(""),
    plain({"anyOf": [{**STRINGS_SCHEMA, "title": "Only these"}, {"type": "string", "maxLength": 0, "title": "Unrestricted"}]}),
    form("Allowed folders and prefixes (set by the service)", unset=""),
]

IndexSource = Annotated[
    str | list[dict[str, Any]],
    plain({"anyOf": [
        {"type": "string", "title": "A folder, glob, file or s3:// prefix"},
        {"type": "array", "title": "Inline records", "items": {"type": "object", "additionalProperties": True}},
    ]}),
    form("Source", "docs", "s3://reports/2026/"),
]
SourceName = Annotated[str, form("Name of inline records", "crm-export")]
Prune = Annotated[
    bool | None, BeforeValidator(_pruning),
    plain({"anyOf": [
        {"type": "string", "enum": list(PRUNING), "title": "auto (folders and prefixes: always; records: never)"},
        {"type": "boolean", "title": "Yes or no"},
    ]}),
    form("Delete what the source no longer holds", unset="auto"),
]
BlueGreen = Annotated[bool, form("Build a new version and switch to it")]

Query = Annotated[str, form("Query", "how do I rotate an API key?")]
Limit = Annotated[int, Field(ge=1), form("Number of hits", 10)]
Threshold = Annotated[float | None, read_unset(0), plain({"type": "number"}), form("Minimum score (0: none)", 0.3, unset=0)]
Filters = Annotated[dict[str, Any] | None, read_unset({}), OBJECT, form("Metadata filters", {"lang": "en"}, unset={})]
ByDocument = Annotated[bool, form("One hit per document")]
Mode = Annotated[
    SearchMode | None, read_unset(""), plain({"type": "string", "enum": ["", "hybrid", "dense", "sparse"]}),
    form("Search mode (empty: the configured one)", "hybrid", unset=""),
]

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
Context = Annotated[dict[str, Any] | None, read_unset({}), OBJECT, form("Context", {"collection": "documents"}, unset={})]
InlineOwner = Annotated[str | None, read_unset(""), STRING, form("Owner of inline records (set by the service)", unset="")]
CollectionGrants = Annotated[
    list[str] | None, read_unset(""),
    plain({"anyOf": [{**STRINGS_SCHEMA, "title": "Only these"}, {"type": "string", "maxLength": 0, "title": "Every collection"}]}),
    form("Collections the caller may reach (set by the service)", ["team-a-*"], unset=""),
]

Texts = Annotated[list[str], form("Texts", ["first text", "second text"])]
ShardedSource = Annotated[str, form("Source", "/srv/corpus", "s3://reports/2026/")]
ShardCount = Annotated[int, Field(ge=1), form("Number of shards", 2)]
Deployment = Annotated[str, form("Indexing deployment", "index-corpus/on-demand")]
TimeoutS = Annotated[float | None, read_unset(0), SECONDS, form("Timeout in seconds (0: none)", 3600, unset=0)]
